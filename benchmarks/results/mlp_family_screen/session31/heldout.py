"""Rules against the default on one-hidden-layer nets that are neither grid cells nor the base net (session 28's
held-out nets), on seeds outside the evaluation range: mean final training loss at 100 / 200 steps, each rule's as a
ratio to the default's, and Adam at 1e-3's, over 20 seeds (session 28's ``held_out``).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session31/heldout.py WEIGHTS[,WEIGHTS...] NET [NET ...]

NET: UNITS-ACTIVATION-BATCH, e.g. 32-relu-256. Run from the repository root, one thread.
"""
import sys
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, load_weights

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "session28"))  # ahead of this file's own folder
from heldout import held_out  # noqa: E402  (session 28's heldout.py)

torch.set_num_threads(1)
default = load_weights("l2l-mlp-family-plus")
factories = {"default": lambda p: LearnedOptimizer(p, weights=default)}
for path in sys.argv[1].split(","):
    factories[path.rsplit("/", 1)[-1]] = (lambda rule: lambda p: LearnedOptimizer(p, weights=rule))(load_weights(path))
factories["Adam 1e-3"] = lambda p: torch.optim.Adam(p, lr=1e-3)
held_out(factories, sys.argv[2:])
