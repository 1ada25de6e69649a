"""The exact meta-gradient of a whole run, second derivatives included, beside metatrain's first-order one.

    PYTHONPATH=. python .../session26/exact.py WEIGHTS GRADS.pt FIRST COUNT OUT.pt

For problems FIRST..FIRST+COUNT-1 of GRADS.pt (meta_grads.py: their seeds and first-order gradients), the gradient of
the same meta-loss (the sum of losses after steps 1..100) through everything: each optimizee gradient is computed with
create_graph, so its dependence on the rule's earlier updates is differentiated (metatrain drops it, as the paper
does). The rule runs on the pure-torch path. Prints per problem the cosine of the two gradients and their norms;
writes the exact gradients to OUT.pt in meta_grads.py's format (so snr.py and line.py read them).
"""

import sys
import time

import torch

from learned_optim import load_weights
from learned_optim.metatrain import _rule_step
from learned_optim import nets
from learned_optim.tasks import make_task

torch.set_num_threads(1)


def exact_gradient(theta, net, problem, steps=100):
    named = list(problem.model.named_parameters())
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    params = [p.detach().float().clone().requires_grad_(True) for _, p in named]
    state = nets.init_state(net, sum(sizes))
    total = 0.0
    loss = problem.loss(0, dict(zip(names, params)))
    for t in range(steps):
        grads = torch.autograd.grad(loss, params, create_graph=True)
        update, state = _rule_step(theta, torch.cat([g.reshape(-1) for g in grads]), state, net, "fast", sizes, params)
        params = [p + u.view(s) for p, u, s in zip(params, update.split(sizes), shapes)]
        loss = problem.loss(t + 1, dict(zip(names, params)))
        total = total + loss
    out = torch.autograd.grad(total, list(theta.values()))
    return float(total.detach()), torch.cat([g.reshape(-1) for g in out])


def main(weights, path, first, count, out):
    rule = load_weights(weights)
    data = torch.load(path)
    assert data["sha256"] == rule.sha256
    task = make_task("mixture", data_root="../shared/data", family=data["family"])
    theta = {k: rule.theta[k].clone().requires_grad_(True) for k in data["names"]}
    grads, sums = [], []
    started = time.perf_counter()
    for i in range(first, first + count):
        seed = int(data["seeds"][i])
        total, g = exact_gradient(theta, rule.config, task.sample(seed))
        approx = data["grads"][i]
        cos = torch.nn.functional.cosine_similarity(g, approx, dim=0).item()
        grads.append(g)
        sums.append(total)
        print(f"problem {i} (member {int(data['members'][i])}): sum {total:.2f} (first-order run {float(data['sums'][i]):.2f}), "
              f"|exact| {g.norm():.3g}, |first-order| {approx.norm():.3g}, cosine {cos:+.3f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    sl = slice(first, first + count)
    torch.save({**{k: data[k] for k in ("weights", "sha256", "family", "names", "shapes")},
                "grads": torch.stack(grads), "sums": torch.tensor(sums), "members": data["members"][sl],
                "seeds": data["seeds"][sl], "estimator": "exact"}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
