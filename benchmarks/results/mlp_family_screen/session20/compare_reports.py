"""Two levers reports' rules cell by cell: where B's mean final loss is below A's, and by how many unpaired s.e.

    python benchmarks/results/mlp_family_screen/session20/compare_reports.py REPORT_A.json LEVER_A REPORT_B.json LEVER_B
"""
import json
import math
import sys

path_a, lever_a, path_b, lever_b = sys.argv[1:5]
a, b = json.load(open(path_a))["cells"], json.load(open(path_b))["cells"]
lower = 0
for h in ("100", "200"):
    for cell in a:
        tuned = a[cell]["tuned Adam"][h]["final_loss"]["mean"]
        fa, fb = a[cell][lever_a][h]["final_loss"], b[cell][lever_b][h]["final_loss"]
        z = (fb["mean"] - fa["mean"]) / math.hypot(fa["se"], fb["se"])
        lower += fb["mean"] < fa["mean"]
        print(f"{cell:>10} @{h}: {lever_a} {fa['mean'] / tuned:.2f}, {lever_b} {fb['mean'] / tuned:.2f} x tuned Adam; "
              f"difference {z:+.1f} unpaired s.e.")
print(f"{lever_b} below {lever_a} in {lower} of {2 * len(a)} cell-horizons")
