"""Weight-space interpolation between two rules of one architecture (WiSE-FT style): theta = (1 - a) A + a B.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session15/interpolate.py A B ALPHA OUT

A and B: weight files (shipped names or paths) whose architectures are identical; ALPHA in [0, 1] (0 gives A's
tensors, 1 gives B's); OUT: the NAME.safetensors to write, with a card naming both sources and their sha256.
Meaningful when B was meta-trained starting from A (`metatrain --init-from A`), so both lie in one basin.
"""
import sys
from pathlib import Path

from learned_optim.pretrained import load_weights, save_weights

a, b = load_weights(sys.argv[1]), load_weights(sys.argv[2])
alpha, out = float(sys.argv[3]), sys.argv[4]
if a.config != b.config:
    mine, theirs = a.config.to_dict(), b.config.to_dict()
    sys.exit(f"architectures differ: { {k: (v, theirs[k]) for k, v in mine.items() if theirs[k] != v} }")
if not 0.0 <= alpha <= 1.0:
    sys.exit(f"ALPHA must lie in [0, 1], got {alpha}")
theta = {k: (1.0 - alpha) * a.theta[k].double() + alpha * b.theta[k].double() for k in a.theta}
save_weights(out, theta, a.config, card={
    "name": Path(out).stem,
    "description": f"(1 - {alpha}) x {a.name} + {alpha} x {b.name}",
    "interpolation": {"a": a.name, "a_sha256": a.sha256, "b": b.name, "b_sha256": b.sha256, "alpha": alpha}})
print(f"{out}: alpha {alpha}")
