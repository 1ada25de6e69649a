"""A candidate's deep_wide cells (session6/grid.py's JSON lines) against the shipped default on the same 20 evaluation
seeds (levers_plus30.json's family-plus-30, the bytes of l2l-mlp-family-plus): final loss / tuned Adam's per cell and
horizon, and issue 5's three counts over the cells given.

    python benchmarks/results/mlp_family_screen/session25/compare_default.py CELLS.jsonl [CELLS.jsonl ...]
"""
import json
import sys

report = json.load(open("benchmarks/results/levers_plus30.json"))["cells"]
mine = {}
for path in sys.argv[1:]:
    for line in open(path):
        row = json.loads(line)
        mine[row["cell"]] = row["result"]
counts = {"candidate": [0, 0, 0.0], "default": [0, 0, 0.0]}
print("| cell | candidate 100 / 200 | default 100 / 200 | Adam 1e-3 100 / 200 |")
print("|---|---|---|---|")
for cell in report:
    if cell not in mine:
        continue
    block, parts = report[cell], {"candidate": [], "default": [], "adam": []}
    for h in ("100", "200"):
        tuned = block["tuned Adam"][h]["final_loss"]["mean"]
        adam = block["Adam 1e-3"][h]["final_loss"]["mean"] / tuned
        for name, value in (("candidate", mine[cell][h]["final_loss"]["mean"] / tuned),
                            ("default", block["family-plus-30"][h]["final_loss"]["mean"] / tuned)):
            parts[name].append(value)
            counts[name][0] += value <= 1.0
            counts[name][1] += value < adam
            counts[name][2] = max(counts[name][2], value)
        parts["adam"].append(adam)
    print(f"| {cell} | " + " | ".join(" / ".join(f"{v:.2f}" for v in parts[k]) for k in ("candidate", "default", "adam"))
          + " |")
n = 2 * sum(cell in mine for cell in report)
for name, (tuned, adam, worst) in counts.items():
    print(f"{name}: at or below tuned Adam in {tuned} of {n} cell-horizons, below Adam at 1e-3 in {adam} of {n}, "
          f"worst ratio {worst:.2f}")
