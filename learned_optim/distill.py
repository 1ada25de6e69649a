"""Distillation: teach one coordinatewise rule the steps of a composition of two rules, routed by net structure.

    python -m learned_optim.distill --base l2l-mlp-family-plus --specialist B.safetensors \\
        --family mlp-family-plus --tensor-count-range 4 0 --out runs/student.safetensors

Meta-training by truncated backpropagation optimizes the sum of an optimizee's losses, a chaotic function of the rule's
weights: at the shipped default its gradient is noise in every weight but one
(docs/research/a-default-for-deep-and-wide-nets.md).
Distillation optimizes a dense, smooth target instead. The teacher is a composition of two rules: on the members of
a family that are routed (``route_depth`` hidden layers with ``route_activation``; by default the one-hidden-layer
sigmoid nets), the first layer's tensors take the specialist's steps and the output layer's a mix, (1 - w) base + w
specialist (``output_weight``); every other tensor, and every tensor of the members not routed, takes the base rule's
steps. The student is the base rule widened with a tensor-count input (``NetConfig.tensor_count_input``, at zero
weight: it starts as the base rule exactly), the one input that tells it how deep the net is, so that it can learn
where the specialist's steps belong. Its loss, on each run: per tensor, the squared error of its updates to the
teacher's over the teacher's mean squared update on that tensor, averaged over the tensors and the steps, on up to
``coords`` sampled coordinates per tensor (the rule is coordinatewise, so a sample of coordinates is exact for them;
its per-tensor inputs come from the whole gradient).

Rounds (DAgger): round 0's runs follow the teacher's steps; later rounds' runs follow the student's, labelled by the
teacher run on the same gradients with its own states, so that the student learns the teacher's steps where its own
steps take the net. After each round's new runs, ``passes`` passes over every run so far, Adam, gradient clipping.

Training seeds only (metatrain.TRAIN_SEED_START + 8,000,000 and up): no evaluation model or seed. One thread, CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from . import __version__, nets
from .features import flat_rule_inputs
from .metatrain.cli import add_tensor_count_range
from .metatrain.config import widen
from .metatrain.rollout import Optimizee, cell_impl, rollout, rule_step
from .pretrained import RuleWeights, load_weights, save_weights
from .tasks import FAMILIES, TRAIN_SEED_START, VALIDATION_SEEDS, make_task

SEED_OFFSET = 8_000_000  # the training seeds this stage draws from (metatrain's own start at TRAIN_SEED_START)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything that decides a distilled rule, besides the two teachers' weights."""

    family: str = "mlp-family-plus"
    extra: tuple = ()  # more members, (task, options) pairs, taught the base rule's steps
    route_depth: int = 1  # routed members: this many hidden layers ...
    route_activation: str = "sigmoid"  # ... with this activation
    output_weight: float = 0.2  # w: on routed members the output layer's step is (1 - w) base + w specialist
    count_input: bool = True  # the student adds a tensor-count input
    tensor_count_min: int = 1  # the count input's range (NetConfig)
    tensor_count_max: int = 0
    problems: int = 48  # new runs per round
    rounds: int = 3
    passes: int = 15  # passes over all runs so far after each round
    coords: int = 1000  # sampled coordinates per tensor
    steps: int = 100
    lr: float = 1e-3
    clip: float = 1.0
    seed: int = 0
    val_problems: int = 8  # the student's mean sum of losses on this many validation problems after each round

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"Invalid family: {self.family!r} (allowed: {', '.join(sorted(FAMILIES))})")
        for name in ("route_depth", "problems", "rounds", "coords", "steps", "val_problems"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be an int >= 1)")
        if not isinstance(self.passes, int) or self.passes < 0:
            raise ValueError(f"Invalid passes: {self.passes!r} (must be an int >= 0)")
        if not 0.0 <= self.output_weight <= 1.0:
            raise ValueError(f"Invalid output_weight: {self.output_weight!r} (must be in [0, 1])")
        if not (self.lr > 0 and self.clip > 0):
            raise ValueError(f"Invalid lr / clip: {self.lr!r} / {self.clip!r} (must be > 0)")

    @property
    def members(self) -> list[tuple[str, dict[str, Any]]]:
        return list(FAMILIES[self.family]) + [(name, dict(options)) for name, options in self.extra]

    def routed(self, options: dict[str, Any]) -> bool:
        """Whether a member with these task options is taught the composition (else the base rule's steps)."""
        return len(options.get("hidden", ())) == self.route_depth and options.get("activation") == self.route_activation


def teacher_update(u_base: torch.Tensor, u_special: torch.Tensor, sizes: Sequence[int], routed: bool,
                   output_weight: float) -> torch.Tensor:
    """The composition's flat update from the two rules' flat updates on a net of tensors of ``sizes`` entries (in
    the order of its parameters: first layer's weight and bias first, output layer's last): the base rule's where
    not ``routed``; else the specialist's on the first two tensors, (1 - w) base + w specialist on the last two, the
    base rule's on the others."""
    if not routed:
        return u_base
    n, pieces = len(sizes), []
    for i, (a, b) in enumerate(zip(u_base.split(list(sizes)), u_special.split(list(sizes)))):
        w = 1.0 if i < 2 else output_weight if i >= n - 2 else 0.0
        pieces.append((1 - w) * a + w * b)
    return torch.cat(pieces)


def _route_means(pairs: Sequence[tuple[bool, float]], empty: float) -> dict[str, float]:
    """Mean of the values of (routed, value) pairs on routed runs and on the others (``empty`` where none)."""
    mean = lambda v: sum(v) / len(v) if v else empty  # noqa: E731
    return {"routed": mean([v for r, v in pairs if r]), "others": mean([v for r, v in pairs if not r])}


def student_config(base: nets.NetConfig, config: DistillConfig) -> nets.NetConfig:
    if not config.count_input:
        return base
    return dataclasses.replace(base, tensor_count_input=True, tensor_count_min=config.tensor_count_min,
                               tensor_count_max=config.tensor_count_max)


class Distiller:
    """The student's weights, its meta-optimizer and the pool of labelled runs; ``round`` adds runs and trains."""

    def __init__(self, base: RuleWeights, specialist: RuleWeights, config: DistillConfig,
                 data_root: Any = None, init: "RuleWeights | None" = None) -> None:
        if base.config != specialist.config:
            raise ValueError("the base rule and the specialist must share an architecture")
        self.base, self.specialist, self.config = base, specialist, config
        self.net = student_config(base.config, config)
        if init is not None:
            if init.config != self.net:
                raise ValueError("the student's start must have the student's architecture (the base rule's, with "
                                 "the count input and its range)")
            theta = init.theta
        else:
            theta = widen(dict(base.theta), base.config, self.net) if self.net != base.config else dict(base.theta)
        self.theta = {k: v.detach().to(torch.float32).clone().requires_grad_(True) for k, v in theta.items()}
        self.meta_opt = torch.optim.Adam(self.theta.values(), lr=config.lr)
        self.members = config.members
        self.task = make_task("mixture", data_root=data_root, members=self.members)
        self.impl = cell_impl("auto")
        self.pool: list[dict[str, Any]] = []
        self.next_seed = TRAIN_SEED_START + SEED_OFFSET
        self.log: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []  # validation before training (round -1) and after each round

    @torch.no_grad()
    def collect(self, seed: int, follow_student: bool) -> dict[str, Any]:
        """One run of ``steps`` steps: the student's inputs and the teacher's updates on sampled coordinates, each
        coordinate's weight in the loss, whether the member is routed."""
        member = self.task.member(seed)
        problem, routed = self.task.sample(seed), self.config.routed(self.members[member][1])
        opt = Optimizee(problem, torch.device("cpu"))
        n, sizes, net = opt.numel, opt.sizes, self.base.config
        s_a, s_b, s_s = nets.init_state(net, n), nets.init_state(net, n), nets.init_state(self.net, n)
        student = {k: v.detach() for k, v in self.theta.items()}
        grad = opt.loss_and_grad(0)[1]
        grads, labels = [], []
        for t in range(self.config.steps):
            u_a, s_a = rule_step(self.base.theta, grad, s_a, net, self.impl, sizes, t + 1)
            u_b, s_b = rule_step(self.specialist.theta, grad, s_b, net, self.impl, sizes, t + 1) if routed else (u_a, s_b)
            label = teacher_update(u_a, u_b, sizes, routed, self.config.output_weight)
            grads.append(grad)
            labels.append(label)
            if follow_student:
                u_s, s_s = rule_step(student, grad, s_s, self.net, self.impl, sizes, t + 1)
                opt.apply(u_s)
            else:
                opt.apply(label)
            loss, grad = opt.loss_and_grad(t + 1)
        pieces, start = [], 0  # the student's inputs on a sample of coordinates (independent of its weights)
        for size in sizes:
            take = torch.randperm(size)[: self.config.coords] if size > self.config.coords else torch.arange(size)
            pieces.append(take + start)
            start += size
        index = torch.cat(pieces)
        owner = torch.cat([torch.full((len(p),), i) for i, p in enumerate(pieces)])
        xs, ys = [], []
        for g, label in zip(grads, labels):
            x = flat_rule_inputs(g, sizes, self.net)
            xs.append(x[index])
            ys.append(label[index])
        y = torch.stack(ys)
        per_tensor = torch.bincount(owner).float()
        scale = torch.zeros(len(sizes)).index_add_(0, owner, y.pow(2).mean(0)) / per_tensor
        weight = 1.0 / (scale[owner] + 1e-30) / per_tensor[owner] / len(sizes)
        return {"x": torch.stack(xs), "y": y, "w": weight, "route": routed, "seed": seed, "final": float(loss)}

    def loss(self, item: dict[str, Any]) -> torch.Tensor:
        """The student's weighted squared error on one run, per step."""
        state = nets.init_state(self.net, item["x"].shape[1])
        total = 0.0
        for t in range(item["x"].shape[0]):
            u, state = nets.step(self.theta, item["x"][t], state, self.net, impl=self.impl)
            total = total + ((u - item["y"][t]).pow(2) * item["w"]).sum()
        return total / item["x"].shape[0]

    def errors(self, items: Sequence[dict[str, Any]]) -> dict[str, float]:
        """The student's mean loss on routed runs and on the others (nan where none)."""
        with torch.no_grad():
            return _route_means([(item["route"], float(self.loss(item))) for item in items], empty=float("nan"))

    def validate(self) -> float:
        """The student's mean sum of losses over ``steps`` steps on the family's first ``val_problems`` validation
        problems (metatrain's validation seeds; no evaluation seed)."""
        theta = {k: v.detach() for k, v in self.theta.items()}
        seeds = VALIDATION_SEEDS[: self.config.val_problems]
        with torch.random.fork_rng():  # building a net draws from the global generator (nn.Linear's own init)
            return sum(float(rollout(theta, self.net, self.task.sample(s), self.config.steps, "cpu", self.impl).sum())
                       for s in seeds) / len(seeds)

    def round(self, index: int, out=None) -> None:
        """Collect ``problems`` new runs (following the teacher in round 0, the student after), then train ``passes``
        passes over the pool; progress to ``out`` (default: stdout)."""
        out = out or sys.stdout
        start = clock = time.time()
        new = [self.collect(self.next_seed + i, follow_student=index > 0) for i in range(self.config.problems)]
        self.next_seed += self.config.problems
        finite = [i for i in new if all(torch.isfinite(i[k]).all() for k in ("x", "y", "w"))]
        if len(finite) < len(new):
            print(f"round {index}: {len(new) - len(finite)} runs left out (not finite): seeds "
                  f"{sorted({i['seed'] for i in new} - {i['seed'] for i in finite})}", file=out, flush=True)
        before = self.errors(finite)
        print(f"round {index}: {len(finite)} runs collected in {time.time() - start:.0f} s; student error on them "
              f"routed {before['routed']:.4f}, others {before['others']:.4f}", file=out, flush=True)
        self.pool += finite
        params = list(self.theta.values())
        for p in range(self.config.passes):
            start, errs = time.time(), []
            for k in torch.randperm(len(self.pool)).tolist():
                self.meta_opt.zero_grad(set_to_none=True)
                loss = self.loss(self.pool[k])
                if not torch.isfinite(loss):
                    print(f"skipped a non-finite loss (seed {self.pool[k]['seed']})", file=out, flush=True)
                    continue
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.config.clip)
                self.meta_opt.step()
                errs.append((self.pool[k]["route"], float(loss.detach())))
            record = {"round": index, "pass": p, **_route_means(errs, empty=0.0), "seconds": round(time.time() - start)}
            self.log.append(record)
            print(json.dumps(record), file=out, flush=True)
        self.history.append({"round": index, "val": self.validate(), "seconds": round(time.time() - clock, 1)})
        print(f"round {index}: validation {self.history[-1]['val']:.4f}", file=out, flush=True)

    def rule(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.theta.items()}


def distill(base: str, specialist: str, config: DistillConfig, out: str, data_root: Any = None,
            init: str | None = None, command: str | None = None, name: str | None = None,
            stream=None) -> RuleWeights:
    """Run every round and write the student (weights and card) to ``out``; returns it as it loads. Progress to
    ``stream`` (default: stdout)."""
    stream = stream or sys.stdout
    torch.manual_seed(config.seed)
    a, b = load_weights(base), load_weights(specialist)
    start = load_weights(init) if init else None
    distiller = Distiller(a, b, config, data_root=data_root, init=start)
    print("members:", [f"{task} {json.dumps(options, sort_keys=True)}" + " (routed)" * config.routed(options)
                       for task, options in distiller.members], file=stream, flush=True)
    clock = time.time()
    distiller.history.append({"round": -1, "val": distiller.validate()})
    print(f"before: validation {distiller.history[-1]['val']:.4f}", file=stream, flush=True)
    for index in range(config.rounds):
        distiller.round(index, out=stream)
    recipe = dataclasses.asdict(config)
    card = {
        "name": name or out,
        "description": (f"{base} distilled toward a composition with {specialist}: on {config.family}'s members with "
                        f"{config.route_depth} hidden layer(s) of {config.route_activation} its first layer's steps, "
                        f"w = {config.output_weight} of them on the output layer, {base}'s everywhere else; "
                        "the student reads log of the tensor count, clipped to "
                        f"[{config.tensor_count_min}, {config.tensor_count_max or 'inf'}]" * config.count_input),
        "task": {"name": "mixture", "family": config.family,
                 "members": [{"name": task, **options} for task, options in config.members]},
        "distill": {"base": base, "base_sha256": a.sha256, "base_task": a.card.get("task"),
                    "specialist": specialist, "specialist_sha256": b.sha256, "specialist_task": b.card.get("task"),
                    **({"init": init, "init_sha256": start.sha256} if start is not None else {}),
                    "recipe": recipe, "log": distiller.log},
        **({"command": command} if command else {}),
        "validation": {
            "metric": f"mean over {config.val_problems} held-out problems of the family of the sum of training "
                      f"losses over {config.steps} steps (the last round's is the rule's)",
            "seeds": f"{VALIDATION_SEEDS.start}..{VALIDATION_SEEDS.start + config.val_problems - 1}",
            "history": distiller.history,
        },
        "wall_time_s": round(time.time() - clock, 1),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_weights(out, distiller.rule(), distiller.net, card)


def build_parser() -> argparse.ArgumentParser:
    d = DistillConfig()
    parser = argparse.ArgumentParser(prog="python -m learned_optim.distill", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base", required=True, help="the rule the student starts as and is taught off the route")
    parser.add_argument("--specialist", required=True, help="the rule whose steps the routed members' first layer takes")
    parser.add_argument("--out", required=True, help="the student's weight file (NAME.safetensors; NAME.json beside)")
    parser.add_argument("--init", default=None, help="start from this weight file (the student's architecture)")
    parser.add_argument("--name", default=None, help="the card's name (default: --out)")
    parser.add_argument("--data-root", default=None, help="where MNIST/raw is (default: $LEARNED_OPTIM_DATA)")
    parser.add_argument("--family", default=d.family, choices=sorted(FAMILIES))
    parser.add_argument("--extra", default="[]", help="more members, a JSON list of [task, options] pairs")
    parser.add_argument("--route-depth", type=int, default=d.route_depth)
    parser.add_argument("--route-activation", default=d.route_activation)
    parser.add_argument("--output-weight", type=float, default=d.output_weight)
    parser.add_argument("--no-count-input", action="store_true", help="a student without the tensor-count input")
    add_tensor_count_range(parser)
    for field in ("problems", "rounds", "passes", "coords", "steps", "seed", "val_problems"):
        parser.add_argument("--" + field, type=int, default=getattr(d, field))
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--clip", type=float, default=d.clip)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        extra = tuple((str(task), dict(options)) for task, options in json.loads(args.extra))
        config = DistillConfig(
            family=args.family, extra=extra, route_depth=args.route_depth, route_activation=args.route_activation,
            output_weight=args.output_weight, count_input=not args.no_count_input,
            tensor_count_min=args.tensor_count_range[0], tensor_count_max=args.tensor_count_range[1],
            problems=args.problems, rounds=args.rounds, passes=args.passes, coords=args.coords, steps=args.steps,
            lr=args.lr, clip=args.clip, seed=args.seed, val_problems=args.val_problems)
        distill(args.base, args.specialist, config, args.out, data_root=args.data_root, init=args.init,
                command="python -m learned_optim.distill " + shlex.join(argv), name=args.name)
    except (ValueError, TypeError, FileNotFoundError, json.JSONDecodeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
