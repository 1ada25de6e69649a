# default vs l2l-mnist on training members near the base task (diagnostic): is the gap specialization or compromise?
# python benchmarks/results/mlp_family_screen/session5/members.py 10 > members.out (repository root, one thread)
import sys, torch
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task
torch.set_num_threads(1)
n = int(sys.argv[1])
cfgs = [dict(hidden=(32,), activation="sigmoid", batch_size=128), dict(hidden=(16, 16), activation="sigmoid", batch_size=128),
        dict(hidden=(20,), activation="sigmoid", batch_size=128)]
for cfg in cfgs:
    task = make_task("mnist_mlp", data_root="../shared/data", **cfg)
    for name in ("l2l-mnist", "l2l-mlp-family"):
        w = load_weights(name); sums = []; finals = []; early = []
        for seed in EVAL_SEEDS[:n]:
            losses, _ = train_and_evaluate(task.sample(seed), lambda q: LearnedOptimizer(q, weights=w), 100)
            sums.append(float(losses.sum())); finals.append(float(losses[-1])); early.append(float(losses[:20].sum()))
        s = torch.tensor(sums); f = torch.tensor(finals); e = torch.tensor(early)
        print(cfg["hidden"], name, f"sum {s.mean():.2f} +- {s.std()/n**.5:.2f}  first20 {e.mean():.2f}  final {f.mean():.3f}", flush=True)
