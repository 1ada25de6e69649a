"""A rule with the per-tensor input added and switched off: the same update function, a wider first layer.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session15/widen.py WEIGHTS OUT

WEIGHTS: a rule without `tensor_rms_input`; OUT: the same rule with it, its first cell's input weights given one
more column of zeros (the per-tensor inputs come after the gradient features, see features.py), so the new input
has no effect until meta-training moves that column. `metatrain --init-from OUT --tensor-rms-input` then starts at
exactly WEIGHTS' update function.
"""
import dataclasses
import sys
from pathlib import Path

import torch

from learned_optim.pretrained import load_weights, save_weights

source, out = load_weights(sys.argv[1]), sys.argv[2]
if source.config.tensor_rms_input or source.config.net_scale_input:
    sys.exit(f"{source.name} already has per-tensor inputs")
config = dataclasses.replace(source.config, tensor_rms_input=True)
theta = dict(source.theta)
w = theta["cells.0.w_ih"]
theta["cells.0.w_ih"] = torch.cat([w, torch.zeros(w.shape[0], 1, dtype=w.dtype)], dim=1)
save_weights(out, theta, config, card={"name": Path(out).stem,
                                       "description": f"{source.name} with tensor_rms_input added at zero weight",
                                       "widened_from": {"name": source.name, "sha256": source.sha256}})
print(f"{out}: cells.0.w_ih {tuple(w.shape)} -> {tuple(theta['cells.0.w_ih'].shape)}")
