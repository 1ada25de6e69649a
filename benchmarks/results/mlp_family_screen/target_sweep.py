# the default rule's grad_norm_target (the RMS each tensor's gradient is rescaled to) on the MNIST base task, first N eval seeds
#   python benchmarks/results/mlp_family_screen/target_sweep.py N LR TARGET...
import sys, time, torch
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task
torch.set_num_threads(1)
n = int(sys.argv[1]); lr = float(sys.argv[2]); targets = [float(v) for v in sys.argv[3:]]
task = make_task("mnist_mlp", data_root="../shared/data")
w = load_weights("default")
for t in targets:
    t0=time.time(); sums, finals = [], []
    for seed in EVAL_SEEDS[:n]:
        losses, _ = train_and_evaluate(task.sample(seed), lambda q: LearnedOptimizer(q, weights=w, lr=lr, grad_norm_target=t), 100)
        sums.append(float(losses.sum())); finals.append(float(losses[-1]))
    s, f = torch.tensor(sums), torch.tensor(finals)
    print(f"lr {lr} target {t}: sum {s.mean():.2f} +- {s.std()/n**.5:.2f}, final {f.mean():.3f} +- {f.std()/n**.5:.3f} ({time.time()-t0:.0f}s)", flush=True)
