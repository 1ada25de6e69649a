"""Per-problem evolution-strategies meta-gradients of a rule, as `metatrain --meta-grad es` computes them.

    PYTHONPATH=. python .../session27/es_grads.py WEIGHTS FAMILY FIRST COUNT PAIRS SIGMA OUT.pt

For COUNT training problems of the mixture family FAMILY (seeds train_seed(seed=7, epoch=0, run=FIRST..): the
problems of session26/meta_grads.py, so that the two estimators can be compared problem by problem), the antithetic ES
estimate (metatrain.es_gradient: PAIRS pairs of Gaussian perturbations of standard deviation SIGMA, whole 100-step
runs, the sum of losses after each update) of the gradient of that problem's smoothed meta-loss with respect to the
rule's weights, flattened and divided by the pairs that stayed finite. Written to OUT.pt in meta_grads.py's format
(session26/line.py and snr.py read it), with each problem's mean meta-loss over its 2 x PAIRS runs, and every pair's
two meta-losses ("scores", one list per run of "runs"; the directions follow from the problem's seed), so that other weightings of
the same runs can be computed without running them again.
"""

import sys
import time

import torch

from learned_optim import load_weights
from learned_optim.metatrain import MetaTrainConfig, cell_impl, es_gradient, train_seed
from learned_optim.tasks import make_task

torch.set_num_threads(1)


def main(weights, family, first, count, pairs, sigma, out):
    rule = load_weights(weights)
    config = MetaTrainConfig(task="mixture", task_options={"family": family}, net=rule.config, steps=100, unroll=100,
                             runs_per_epoch=1000, seed=7, val_problems=1, meta_grad="es", es_pairs=pairs, es_sigma=sigma)
    task = make_task("mixture", data_root="../shared/data", family=family)
    names = list(rule.theta)
    grads, sums, members, seeds, scores = [], [], [], [], []
    started = time.perf_counter()
    for run in range(first, first + count):
        seed = train_seed(config, 0, run)
        scores.append([])
        total, stats = es_gradient(rule.theta, task.sample(seed), config, cell_impl("auto"), seed, scores[-1])
        if stats["meta_loss_count"] == 0:
            continue
        grads.append(torch.cat([t.reshape(-1) for t in total]) / stats["meta_loss_count"])
        sums.append(stats["meta_loss_sum"] / stats["meta_loss_count"])
        members.append(task.member(seed))
        seeds.append(seed)
        print(f"run {run}: member {members[-1]}, mean meta-loss {sums[-1]:.2f}, {stats['skipped_unrolls']} pairs dropped, "
              f"|g| {grads[-1].norm():.3g}, {time.perf_counter() - started:.0f} s", flush=True)
    torch.save({"weights": str(weights), "sha256": rule.sha256, "family": family, "names": names,
                "shapes": [tuple(rule.theta[k].shape) for k in names], "grads": torch.stack(grads),
                "sums": torch.tensor(sums), "members": torch.tensor(members), "seeds": torch.tensor(seeds),
                "estimator": "es", "pairs": pairs, "sigma": sigma,
                "scores": scores, "runs": list(range(first, first + count))}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
