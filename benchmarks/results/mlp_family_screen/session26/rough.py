"""How rough is the validation objective around a rule? Its value at random points very close to the rule.

    PYTHONPATH=. python .../session26/rough.py WEIGHTS FAMILY DRAWS DISTANCE [DISTANCE ...]

For each DISTANCE, DRAWS Gaussian directions (seeds 1..DRAWS) scaled to that weight-space norm: the validation figure
the fine-tunes print (mean sum of losses over 100 steps, FAMILY's first 12 validation problems) and the MNIST base
task's mean sum of losses (100 evaluation seeds), against the rule itself. A smooth objective moves by about
slope x distance; a rough one scatters by the same amount at every small distance.
"""

import sys

import torch

from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import compare
from learned_optim.metatrain import MetaTrainConfig, cell_impl, validate
from learned_optim.pretrained import RuleWeights
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)


def main(weights, family, draws, distances):
    rule = load_weights(weights)
    config = MetaTrainConfig(task="mixture", task_options={"family": family}, net=rule.config, steps=100, val_problems=12)
    task = make_task("mixture", data_root="../shared/data", family=family)
    mnist = make_task("mnist_mlp", data_root="../shared/data")
    impl = cell_impl("auto")

    def read(theta):
        moved = RuleWeights(config=rule.config, theta=theta, card=rule.card, name="moved", sha256="moved")
        runs = compare(mnist, {"r": lambda p: LearnedOptimizer(p, weights=moved)}, list(EVAL_SEEDS[:100]), 100)
        return validate(theta, config, task, impl), runs["r"]["losses"].sum(1).mean().item()

    val0, mnist0 = read(rule.theta)
    print(f"{weights}: validation {val0:.2f}, MNIST {mnist0:.2f}", flush=True)
    for distance in distances:
        vals, sums = [], []
        for seed in range(1, draws + 1):
            generator = torch.Generator().manual_seed(seed)
            noise = {k: torch.randn(v.shape, generator=generator) for k, v in rule.theta.items()}
            norm = torch.cat([n.reshape(-1) for n in noise.values()]).norm()
            val, mnist_sum = read({k: v + distance * noise[k] / norm for k, v in rule.theta.items()})
            vals.append(val)
            sums.append(mnist_sum)
        vals, sums = torch.tensor(vals), torch.tensor(sums)
        print(f"distance {distance:g}: validation {' '.join(f'{v:.2f}' for v in vals)} (mean {vals.mean():.2f}, sd "
              f"{vals.std():.2f}); MNIST {' '.join(f'{v:.2f}' for v in sums)} (mean {sums.mean():.2f}, sd {sums.std():.2f})",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), [float(d) for d in sys.argv[4:]])
