"""What the gradient-noise input (NetConfig.grad_noise_input) reads along the default's own runs: the default widened
with a zero-weight noise column (the same steps) on the base task's net and on small-batch nets, the per-tensor value
log(RMS(m_hat) / RMS(g)) (state ``grad_noise``) averaged over 10 seeds (20000-20009) at a few steps, per layer.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session30/noise_values.py NET [NET ...]

NET: HIDDEN-ACTIVATION-BATCH as in session29/small_batch.py, e.g. 20-sigmoid-128 (the base task's net), 64-relu-64.
"""
import dataclasses
import sys

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.metatrain import widen
from learned_optim.pretrained import RuleWeights
from learned_optim.tasks import make_task

torch.set_num_threads(1)
base = load_weights("default")
config = dataclasses.replace(base.config, grad_noise_input=True)
rule = RuleWeights(config=config, theta=widen(base.theta, base.config, config), card={}, name="default+noise0",
                   sha256="0" * 64)
STEPS, AT = 200, (1, 5, 20, 50, 100, 199)
for net in sys.argv[1:]:
    hidden, activation, batch = net.split("-")
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=tuple(int(u) for u in hidden.split("x")),
                     activation=activation, batch_size=int(batch))
    values = []
    for seed in range(20000, 20010):
        problem = task.sample(seed)
        params = list(problem.model.parameters())
        opt = LearnedOptimizer(params, weights=rule)
        run = []
        for t in range(STEPS):
            opt.zero_grad()
            problem.loss(t).backward()
            opt.step()
            run.append([float(opt.state[p]["grad_noise"]) for p in params])
        values.append(run)
    v = torch.tensor(values)  # seeds, steps, tensors
    names = [n for n, _ in task.sample(0).model.named_parameters()]
    print(f"{net}: mean over 10 seeds at steps {AT}")
    for i, name in enumerate(names):
        print(f"  {name:>12}: " + " ".join(f"{float(v[:, t, i].mean()):+.2f}" for t in AT), flush=True)
