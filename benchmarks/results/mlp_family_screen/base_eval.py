import json, sys, torch
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task
torch.set_num_threads(1)
n = int(sys.argv[1]); paths = sys.argv[2:]
task = make_task("mnist_mlp", data_root="../shared/data")
ref = json.load(open("benchmarks/results/base_tasks.json"))
ref = ref.get("tasks", ref)
for p in paths:
    w = load_weights(p); sums = []
    for seed in EVAL_SEEDS[:n]:
        losses, _ = train_and_evaluate(task.sample(seed), lambda q: LearnedOptimizer(q, weights=w), 100)
        sums.append(float(losses.sum()))
    t = torch.tensor(sums); print(p, f"sum {t.mean():.2f} +- {t.std()/n**.5:.2f}", flush=True)
