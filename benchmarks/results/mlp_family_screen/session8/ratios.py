"""The tensor_rms_input value log(RMS_tensor / RMS_net) / p (p = 10) of each weight matrix at the first step, on
deep_wide cells and on mlp-family members: can a rule tell a one-hidden-layer sigmoid net's output layer from the
others by it? And the net_scale_input value (the count-weighted RMS of those values over all the net's tensors,
biases included): "spread". Means over the first 5 evaluation seeds.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session8/ratios.py
"""
import torch

from benchmarks import deep_wide
from learned_optim.features import log_rms_ratio, net_rms, net_scale_spread, tensor_rms
from learned_optim.tasks import EVAL_SEEDS, FAMILIES, make_task

torch.set_num_threads(1)


def weights_ratios(task):
    values, spreads = [], []
    for seed in EVAL_SEEDS[:5]:
        problem = task.sample(seed)
        loss = problem.loss(0)
        loss.backward()
        params = list(problem.model.parameters())
        stats = [tensor_rms(p.grad.reshape(-1)) for p in params]
        whole = net_rms(stats)
        ratios = [float(log_rms_ratio(rms, whole, 10.0)) for rms, _ in stats]
        values.append(ratios[0::2])  # weights only
        spreads.append(net_scale_spread(ratios, [int(n) for _, n in stats]))
    return [sum(v) / len(v) for v in zip(*values)], sum(spreads) / len(spreads)


cells = "1x20,1x40,1x60,1x1000,2x20,3x20,4x20,5x20,2x100,3x120,1x20-relu,5x300".split(",")
for name in cells:
    (layers, units, activation), = deep_wide.parse_cells(name)
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=(units,) * layers, activation=activation)
    ratios, spread = weights_ratios(task)
    print(f"cell {name:10s} spread {spread:.3f}; weights, first to output: " + " ".join(f"{v:+.2f}" for v in ratios))
for member in FAMILIES["mlp-family"]:
    name, options = member[0], dict(member[1])
    task = make_task(name, data_root="../shared/data", **options)
    ratios, spread = weights_ratios(task)
    print(f"member {options}: spread {spread:.3f}; " + " ".join(f"{v:+.2f}" for v in ratios))
