"""Session 24: the per-tensor input at step 0 on the base net, its ReLU twin and 5x300: log(RMS_tensor / RMS_net) of
each tensor's gradient (before the divisor p = 10 the default applies), mean over 5 evaluation seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session24/tensor_inputs_probe.py
"""
import torch
from learned_optim.features import log_rms_ratio, net_rms, tensor_rms
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
        stats = [tuple(float(v) for v in tensor_rms(q.grad)) for q in p.model.parameters()]  # the optimizer's own
        whole = net_rms(stats)
        rows.append([log_rms_ratio(rms, whole, 1.0) for rms, _ in stats])
    mean = [sum(c) / len(c) for c in zip(*rows)]
    print(hidden[0], len(hidden), act, "log(RMS_t/RMS_net) per tensor (W1,b1,...,Wout,bout):", " ".join("%.2f" % v for v in mean))
