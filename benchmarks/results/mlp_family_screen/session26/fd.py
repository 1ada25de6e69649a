"""Does the meta-gradient point where the objective goes? Its directional derivatives against finite differences.

    PYTHONPATH=. python .../session26/fd.py WEIGHTS GRADS.pt COUNT [EPS ...]

metatrain's meta-gradient treats the optimizee's gradients as constants (no second derivatives, the paper's
approximation). For the first COUNT problems of GRADS.pt (meta_grads.py: their seeds and first-order gradients g_i)
and three unit directions u in the rule's weight space (minus the mean of all of GRADS.pt's gradients; the Adam-like
mean / RMS; a Gaussian), compare per problem the derivative that g_i predicts, <g_i, u>, with the central difference
(J_i(w + eps u) - J_i(w - eps u)) / (2 eps) of that problem's sum of losses after steps 1..100 (the meta-loss the
gradient is of), for each EPS (default 1e-3 and 1e-4). Prints the mean of each over the problems, their correlation
across problems and the fraction of problems where the signs agree.
"""

import sys

import torch

from benchmarks.common import mean_se
from learned_optim import load_weights
from learned_optim.metatrain import cell_impl, rollout
from learned_optim.tasks import make_task

torch.set_num_threads(1)


def main(weights, path, count, epsilons):
    rule = load_weights(weights)
    data = torch.load(path)
    names = data["names"]
    assert data["sha256"] == rule.sha256
    task = make_task("mixture", data_root="../shared/data", family=data["family"])
    g = data["grads"].double()
    theta0 = torch.cat([rule.theta[k].reshape(-1) for k in names]).double()
    mean = g.mean(0)
    directions = {"-mean": -mean, "-adam": -mean / (g.pow(2).mean(0).sqrt() + 1e-12),
                  "random": torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    impl = cell_impl("auto")

    def unflat(vector):
        out, offset = {}, 0
        for k in names:
            size = rule.theta[k].numel()
            out[k] = vector[offset : offset + size].view_as(rule.theta[k]).float()
            offset += size
        return out

    def meta_loss(vector, seed):
        return float(rollout(unflat(vector), rule.config, task.sample(int(seed)), 101, "cpu", impl)[1:].sum())

    for name, direction in directions.items():
        u = direction / direction.norm()
        predicted = (g[:count] @ u)
        for eps in epsilons:
            measured = torch.tensor([(meta_loss(theta0 + eps * u, s) - meta_loss(theta0 - eps * u, s)) / (2 * eps)
                                     for s in data["seeds"][:count]], dtype=torch.float64)
            corr = torch.corrcoef(torch.stack([predicted, measured]))[0, 1].item()
            agree = (predicted.sign() == measured.sign()).double().mean().item()
            print(f"{name:7s} eps {eps:g}: first-order {'%+.1f ± %.1f' % mean_se(predicted)}, finite difference "
                  f"{'%+.1f ± %.1f' % mean_se(measured)}; correlation over {count} problems {corr:+.2f}, signs agree "
                  f"in {agree:.2f}", flush=True)


if __name__ == "__main__":
    eps = [float(e) for e in sys.argv[4:]] or [1e-3, 1e-4]
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), eps)
