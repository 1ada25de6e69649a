"""How the family's members pull on a rule: each member's whole-run meta-gradient (the recipe's: 100 steps, one
unroll, the sum of losses) at a rule, its norm, and its cosine with the base task's mean meta-gradient.

With ``problems_per_step=1`` the meta-optimizer (Adam) takes one problem's meta-gradient per step, so members whose
meta-gradients are much larger set Adam's second moment and the others move the rule little; and a member whose
meta-gradient points away from the base task's pulls the rule away from it. All seeds are training-range seeds
(metatrain.TRAIN_SEED_START and up), the base task's too: nothing here is an evaluation seed.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session31/metagrad.py WEIGHTS [SEEDS] [FAMILY]
"""
import sys

import torch

from learned_optim import load_weights
from learned_optim.metatrain import (TRAIN_SEED_START, build_parser, cell_impl, config_from_args, initial_theta,
                                    train_runs)
from learned_optim.tasks import FAMILIES, make_task

torch.set_num_threads(1)
weights = sys.argv[1]
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
family = sys.argv[3] if len(sys.argv) > 3 else "mlp-family-plus"
rule = load_weights(weights)
flags = ["--task", "mixture", "--family", family, "--steps", "100", "--unroll", "100", "--out", "/tmp/unused.safetensors",
         "--data-root", "../shared/data", "--init-from", weights, "--grad-norm", rule.config.grad_norm,
         "--grad-norm-target", str(rule.config.grad_norm_target)]
flags += ["--" + name.replace("_", "-") for name in ("tensor_rms_input", "net_scale_input", "tensor_count_input",
                                                     "grad_noise_input") if getattr(rule.config, name)]
config = config_from_args(build_parser().parse_args(flags))
assert config.net == rule.config, (config.net, rule.config)
theta = {k: v.requires_grad_(True) for k, v in initial_theta(config).items()}


class Recorder:
    """A stand-in meta-optimizer: keeps the (mean, unclipped) meta-gradient that train_runs hands it."""

    def __init__(self):
        self.grads = []

    def zero_grad(self, set_to_none=True):
        for p in theta.values():
            p.grad = None

    def step(self):
        self.grads.append(torch.cat([p.grad.reshape(-1).clone() for p in theta.values()]))


def meta_grads(task, seed_of):
    rec, losses = Recorder(), []
    for i in range(seeds):
        stats = train_runs(theta, rec, [task.sample(seed_of(i))], config, cell_impl("auto"))  # as metatrain runs it
        losses.append(stats["meta_loss_sum"])
    return torch.stack(rec.grads), losses


members = [("base 1x20 sigmoid b128", make_task("mnist_mlp", data_root="../shared/data", hidden=[20],
                                                activation="sigmoid", batch_size=128))]
for name, options in FAMILIES[family]:
    label = f"{'x'.join(map(str, options['hidden']))} {options['activation']} b{options['batch_size']}"
    members.append((label, make_task(name, data_root="../shared/data", **options)))

rows = []
for index, (label, task) in enumerate(members):
    grads, losses = meta_grads(task, lambda i: TRAIN_SEED_START + 7_000_000 + 1000 * index + i)
    rows.append((label, grads, losses))
base_mean = rows[0][1].mean(0)
print(f"rule {weights}; {seeds} training-range seeds per net; meta-gradient of the sum of 100 losses, one unroll")
print(f"{'net':28s} {'meta-loss':>9s} {'|g| mean':>9s} {'|mean g|':>9s} {'cos(base)':>9s} {'seed cos':>8s}")
for label, grads, losses in rows:
    norms = grads.norm(dim=1)
    mean = grads.mean(0)
    cos = float(torch.nn.functional.cosine_similarity(mean, base_mean, dim=0))
    pair = [float(torch.nn.functional.cosine_similarity(grads[i], grads[j], dim=0))
            for i in range(len(grads)) for j in range(i + 1, len(grads))]
    print(f"{label:28s} {sum(losses) / len(losses):9.2f} {float(norms.mean()):9.3g} {float(mean.norm()):9.3g} "
          f"{cos:9.3f} {sum(pair) / max(1, len(pair)):8.3f}")
family_mean = torch.stack([r[1].mean(0) for r in rows[1:]]).mean(0)
print(f"cos(family mean, base mean) = {float(torch.nn.functional.cosine_similarity(family_mean, base_mean, dim=0)):.3f}")
unit = torch.stack([r[1].mean(0) / r[1].mean(0).norm() for r in rows[1:]]).mean(0)
print(f"cos(mean of unit member means, base mean) = {float(torch.nn.functional.cosine_similarity(unit, base_mean, dim=0)):.3f}")
