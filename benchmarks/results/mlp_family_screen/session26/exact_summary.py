"""Summary of exact.py's output: the exact gradients' norms and their cosines with the first-order ones.

    python .../session26/exact_summary.py .../session26/exact.out
"""
import re
import statistics
import sys

pattern = (r"problem (\d+) \(member (\d+)\): sum ([\d.]+) \(first-order run ([\d.]+)\), \|exact\| ([\d.e+]+), "
           r"\|first-order\| ([\d.e+]+), cosine ([+-][\d.]+)")
rows = [[float(x) for x in m.groups()] for m in map(re.compile(pattern).search, open(sys.argv[1])) if m]
exact, first, cos = [r[4] for r in rows], [r[5] for r in rows], [r[6] for r in rows]
print(f"{len(rows)} problems: exact gradient norm median {statistics.median(exact):.3g} (min {min(exact):.3g}, max "
      f"{max(exact):.3g}); first-order median {statistics.median(first):.3g}; cosine mean {statistics.mean(cos):+.3f}, "
      f"mean |cosine| {statistics.mean(abs(c) for c in cos):.3f}, positive in {sum(c > 0 for c in cos)} of {len(cos)}; "
      f"largest difference of the run's sum of losses between the two rule paths {max(abs(r[2] - r[3]) for r in rows):.2f}")
