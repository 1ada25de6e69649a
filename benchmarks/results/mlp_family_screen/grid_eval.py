"""Candidate rules on the deep_wide grid (GPU screening): final loss at 100/200 steps vs deep_wide.json's tuned Adam."""
import json, sys, time
import torch
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task
from benchmarks import deep_wide

weights_path, out_path = sys.argv[1], sys.argv[2]
cells = sys.argv[3].split(",") if len(sys.argv) > 3 else [deep_wide.cell_name(c) for c in deep_wide.CELLS]
seeds = int(sys.argv[4]) if len(sys.argv) > 4 else 20
target = float(sys.argv[5]) if len(sys.argv) > 5 else None
ref = json.load(open("benchmarks/results/deep_wide.json"))["cells"]
weights = load_weights(weights_path)
opts = {} if target is None else {"grad_norm_target": target}
results = {}
for name in cells:
    (layers, units, act), = deep_wide.parse_cells(name)
    task = make_task("mnist_mlp", hidden=(units,) * layers, activation=act)
    t0 = time.time()
    finals = {100: [], 200: []}
    for seed in EVAL_SEEDS[:seeds]:
        losses, _ = train_and_evaluate(task.sample(seed, "cuda"), lambda p: LearnedOptimizer(p, weights=weights, **opts), 200)
        for h in finals:
            finals[h].append(float(losses[h - 1]))
    row = {}
    for h in finals:
        block = ref[name]["results"][str(h)]
        tuned = block[deep_wide.tuned_adam_key(block)]["final_loss"]["mean"]
        mine = sum(finals[h]) / len(finals[h])
        row[h] = {"mine": mine, "tuned": tuned, "adam1e-3": block["Adam (lr=1e-3, default)"]["final_loss"]["mean"], "ratio": mine / tuned}
    results[name] = row
    print(f"{weights_path} {name}: " + "  ".join(f"{h}: {r['mine']:.3f} vs {r['tuned']:.3f} ({r['ratio']:.2f})" for h, r in row.items()) + f"  {time.time()-t0:.0f}s", flush=True)
    json.dump(results, open(out_path, "w"), indent=1)
