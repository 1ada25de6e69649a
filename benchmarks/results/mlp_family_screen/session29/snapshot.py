"""Write the rule a meta-training checkpoint holds now (its ``theta``, not its best) as a weight file, with the
architecture its recipe names (the checkpoint records it; session 29's runs had the default's), to evaluate a run
before it ends.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session29/snapshot.py CKPT OUT.safetensors
"""
import json
import sys

from safetensors import safe_open

from learned_optim.nets import NetConfig
from learned_optim.pretrained import save_weights

ckpt, out = sys.argv[1:3]
with safe_open(ckpt, "pt") as f:
    theta = {k[len("theta."):]: f.get_tensor(k) for k in f.keys() if k.startswith("theta.")}
    progress = json.loads(f.metadata()["progress"])
save_weights(out, theta, NetConfig.from_dict(progress["config"]["net"]),
             {"name": out, "description": f"snapshot of {ckpt} after epoch {progress.get('epochs_done')}"})
print(out, "after epoch", progress.get("epochs_done"))
