"""Session 24: the per-tensor input at step 0 on the base net, its ReLU twin and 5x300: log(RMS_tensor / RMS_net) of
each tensor's gradient (before the divisor p = 10 the default applies), mean over 5 evaluation seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session24/tensor_inputs_probe.py
"""
import math, torch
from learned_optim.tasks import make_task, EVAL_SEEDS
torch.set_num_threads(1)
for hidden, act in (([20], "sigmoid"), ([20], "relu"), ([300]*5, "sigmoid")):
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=hidden, activation=act)
    rows = []
    for seed in EVAL_SEEDS[:5]:
        p = task.sample(int(seed))
        p.model.zero_grad()
        loss = p.loss(0)  # the first batch
        loss.backward()
        g = [q.grad for q in p.model.parameters()]
        rms = [float(x.pow(2).mean().sqrt()) for x in g]
        n = [x.numel() for x in g]
        net = math.sqrt(sum(r * r * k for r, k in zip(rms, n)) / sum(n))
        rows.append([math.log(r / net) for r in rms])
    mean = [sum(c) / len(c) for c in zip(*rows)]
    print(hidden[0], len(hidden), act, "log(RMS_t/RMS_net) per tensor (W1,b1,...,Wout,bout):", " ".join("%.2f" % v for v in mean))
