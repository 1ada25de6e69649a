"""What each rule does to each tensor of the base net (1x20 sigmoid MNIST, batch 128): per step, the RMS of the
update a tensor takes, that update over the tensor's raw gradient RMS (an effective learning rate), and the cosine
between the update and the negative gradient (1: a gradient step; lower: momentum or sign-like steps).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session8/updates.py [SEEDS] [WEIGHTS...]

Means over the first SEEDS (default 5) evaluation seeds of base_tasks.
"""
import sys

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
names = sys.argv[2:] or ["default", "l2l-mnist"]
task = make_task("mnist_mlp", data_root="../shared/data")
STEPS, SHOW = 100, (0, 1, 2, 3, 5, 10, 20, 40, 99)
tensor_names = [n for n, _ in task.sample(EVAL_SEEDS[0]).model.named_parameters()]

for name in names:
    weights = load_weights(name)
    rms_upd = torch.zeros(len(tensor_names), STEPS)
    elr = torch.zeros(len(tensor_names), STEPS)
    cos = torch.zeros(len(tensor_names), STEPS)
    loss_sum = 0.0
    for seed in EVAL_SEEDS[:n_seeds]:
        problem = task.sample(seed)
        params = list(problem.model.parameters())
        opt = LearnedOptimizer(params, weights=weights)
        for t in range(STEPS):
            opt.zero_grad()
            loss = problem.loss(t)
            loss.backward()
            loss_sum += float(loss.detach())
            before = [p.detach().clone() for p in params]
            grads = [p.grad.detach().clone() for p in params]
            opt.step()
            for i, (p, b, g) in enumerate(zip(params, before, grads)):
                d = (p.detach() - b).reshape(-1)
                g = g.reshape(-1)
                rms_upd[i, t] += d.pow(2).mean().sqrt() / n_seeds
                elr[i, t] += (d.pow(2).mean().sqrt() / g.pow(2).mean().sqrt().clamp_min(1e-30)) / n_seeds
                cos[i, t] += float(torch.nn.functional.cosine_similarity(-d, g, dim=0)) / n_seeds
    print(f"== {name}: mean sum of losses {loss_sum / n_seeds:.2f}")
    for i, tn in enumerate(tensor_names):
        print(f"  {tn:10s} step:      " + " ".join(f"{t:>8d}" for t in SHOW))
        print(f"  {'':10s} RMS update " + " ".join(f"{float(rms_upd[i, t]):8.2e}" for t in SHOW))
        print(f"  {'':10s} upd/RMS g  " + " ".join(f"{float(elr[i, t]):8.3f}" for t in SHOW))
        print(f"  {'':10s} cos(-d,g)  " + " ".join(f"{float(cos[i, t]):8.3f}" for t in SHOW))
        print(f"  {'':10s} sum RMS update over steps 0-19: {float(rms_upd[i, :20].sum()):.3e}, 20-99: "
              f"{float(rms_upd[i, 20:].sum()):.3e}")
