"""The cells a candidate ran under session6/grid.py (its OUT.jsonl), as final loss ÷ tuned Adam's at 100 / 200 steps
beside the shipped default's (`family-plus-30` in benchmarks/results/levers_plus30.json, the same 20 evaluation
seeds) and Adam at 1e-3's; a count of the cells at or below tuned Adam.

    python benchmarks/results/mlp_family_screen/session29/grid_table.py OUT.jsonl [WEIGHTS]
"""
import json
import sys

committed = json.load(open("benchmarks/results/levers_plus30.json"))["cells"]
rows = [json.loads(line) for line in open(sys.argv[1])]
if len(sys.argv) > 2:
    rows = [r for r in rows if r["weights"] == sys.argv[2]]
cells = {r["cell"]: r["result"] for r in rows}  # the last line of a cell wins
mean = lambda block, h: block[h]["final_loss"]["mean"]
print("| cell | candidate | default | Adam 1e-3 |\n|---|---|---|---|")
at_or_below = {"100": 0, "200": 0}
for name, result in cells.items():
    block = committed[name]
    cols = []
    for source in (result, block["family-plus-30"], block["Adam 1e-3"]):
        cols.append(" / ".join(f"{mean(source, h) / mean(block['tuned Adam'], h):.2f}" for h in ("100", "200")))
    for h in at_or_below:
        at_or_below[h] += mean(result, h) <= mean(block["tuned Adam"], h)
    print(f"| {name} | " + " | ".join(cols) + " |")
print(f"\n{len(cells)} cells; at or below tuned Adam: {at_or_below['100']} at 100 steps, {at_or_below['200']} at 200")
