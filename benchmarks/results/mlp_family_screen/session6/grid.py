"""A candidate rule on deep_wide cells, as benchmarks.levers runs a lever (the same 20 evaluation seeds, 100 and 200
steps), read against the committed levers_default.json (tuned Adam, Adam at 1e-3 and the default, same seeds).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session6/grid.py WEIGHTS CELLS OUT.jsonl

CELLS: comma-separated deep_wide cells (e.g. 1x20,5x300). One JSON line per cell goes to OUT.jsonl (appended), one
line of ratios to stdout. Run from the repository root, one thread per process.
"""
import argparse
import json
import sys
import time

import torch

from benchmarks import deep_wide, levers

torch.set_num_threads(1)
weights, cells, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
levers.LEVERS["candidate"] = (weights, dict(weights=weights))
args = argparse.Namespace(eval_seeds=20, data_root="../shared/data", device="cpu")
committed = json.load(open("benchmarks/results/levers_default.json"))["cells"]
for name in cells:
    (cell,) = deep_wide.parse_cells(name)
    start = time.time()
    result = levers.run_lever(cell, "candidate", args, (100, 200))
    with open(out, "a") as f:
        f.write(json.dumps({"cell": name, "weights": weights, "result": result, "seconds": time.time() - start}) + "\n")
    parts = []
    for h in ("100", "200"):
        mine = result[h]["final_loss"]["mean"]
        block = committed[name]
        tuned, default = block["tuned Adam"][h]["final_loss"]["mean"], block["mlp-family"][h]["final_loss"]["mean"]
        parts.append(f"{h}: {mine:.3f} / tuned Adam {tuned:.3f} = {mine / tuned:.2f} (default {default / tuned:.2f})")
    print(f"{name}: " + "; ".join(parts) + f"; {time.time() - start:.0f} s", flush=True)
