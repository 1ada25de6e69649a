"""Norms of layer 0's input-weight columns (gradient features, then per-tensor inputs) of the session's rules, and how
far their gradient-feature columns moved from the default's.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session25/column_norms.py
"""
from learned_optim.pretrained import load_weights

S = "benchmarks/results/mlp_family_screen/session25"
start = load_weights("l2l-mlp-family-plus").theta["cells.0.w_ih"]
for name in ("depth-count-e20", "depth-ctrl-e20", "depth-ctrl-e40"):
    w = load_weights(f"{S}/{name}.safetensors").theta["cells.0.w_ih"]
    norms = ", ".join(f"{float(w[:, i].norm()):.3f}" for i in range(w.shape[1]))
    print(f"{name}: column norms {norms}; shared columns moved {float((w[:, :start.shape[1]] - start).norm()):.3f}")
