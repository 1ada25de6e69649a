"""python -m learned_optim.metatrain on a screening family that is not in the package: one-hidden-layer MNIST nets,
sigmoid and ReLU side by side (1x24 and 1x16 sigmoid, 1x24 and 1x32 ReLU; no deep_wide cell), registered here as
"one-layer-pair" before the meta-trainer reads its arguments.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session25/metatrain_pair.py [metatrain arguments]
"""
import sys

from learned_optim import metatrain
from learned_optim.tasks import mixture

mixture.FAMILIES["one-layer-pair"] = tuple(
    ("mnist_mlp", {"hidden": [units], "activation": activation, "batch_size": batch})
    for units, activation, batch in ((24, "sigmoid", 128), (24, "relu", 128), (16, "sigmoid", 128), (32, "relu", 256))
)
sys.exit(metatrain.main(sys.argv[1:]))
