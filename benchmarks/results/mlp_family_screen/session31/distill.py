"""Distil an oracle-routed composition of two rules into one coordinatewise LSTM: a diagnostic of session 31.

Session 26 found the meta-gradient at the default to be noise in every weight but the readout bias; session 28 found
that a composition of two rules' steps, routed by what kind of net they are in (the 1x24 specialist's steps on the
first layer of one-hidden-layer sigmoid nets, a fifth of them on the output layer, the default's everywhere else),
would meet every point of issue 5, but that a router by depth alone is a tilt toward sigmoid nets. Distillation asks
a question the meta-gradient cannot answer at this scale: can one rule, from what it sees per coordinate, learn to take
the specialist's steps in one-hidden-layer *sigmoid* nets and the default's in the others (ReLU and tanh among them)?
Its error signal is dense and smooth (squared error to the teacher's updates, per coordinate and step), not the
chaotic sum of losses.

Teacher on each family member (``--family``, default mlp-family-plus; the routing uses the member's label, which the
student never sees): one hidden layer and sigmoid -> tensors 0 and 1 take B's step, the output layer's two tensors
(1 - w) A + w B; any other net -> A's step (with ``--c``: ReLU members at batch below 128 take C's). The student is A with a ``tensor_count_input`` (log of the tensor count)
added at zero weight, so it starts as A exactly. Rounds: round 0's trajectories follow the teacher; later rounds
follow the student, labelled by the teacher run on the same gradients with its own states (DAgger). The student's
loss: per tensor, the squared error over the teacher's mean squared update on that tensor over the run, averaged over
the tensors and the 100 steps, on up to ``--coords`` sampled coordinates per tensor (the rule is coordinatewise, so a
sample of coordinates is exact for them; the per-tensor inputs are computed from the whole gradient).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session31/distill.py A B OUT.safetensors [options]

Training seeds only (metatrain.TRAIN_SEED_START + 8,000,000 and up); no evaluation model or seed.
"""
import argparse
import dataclasses
import json
import time

import torch

from learned_optim import load_weights, nets
from learned_optim.features import normalize_per_tensor, rule_inputs, tensor_input_columns
from learned_optim.metatrain import TRAIN_SEED_START, _Optimizee, _rule_step, cell_impl, widen
from learned_optim.pretrained import save_weights
from learned_optim.tasks import FAMILIES, make_task

parser = argparse.ArgumentParser()
parser.add_argument("a")
parser.add_argument("b")
parser.add_argument("out")
parser.add_argument("--family", default="mlp-family-plus", choices=sorted(FAMILIES))
parser.add_argument("--output-weight", type=float, default=0.2)
parser.add_argument("--problems", type=int, default=24, help="new problems per round")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--passes", type=int, default=8, help="passes over the pool after each round's new problems")
parser.add_argument("--coords", type=int, default=1000)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--clip", type=float, default=1.0)
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--no-count-input", action="store_true", help="the student without the tensor-count input")
parser.add_argument("--init", default=None, help="start the student from this weight file (its architecture: A's "
                    "with the count input, or A's with --no-count-input) instead of from A")
parser.add_argument("--extra", default="[]", help="more members, a JSON list of [task, options] pairs (teacher: A)")
parser.add_argument("--c", default=None, help="a third teacher, C, for the family's ReLU members at batch below 128 "
                    "(e.g. session 29's noisy.safetensors); without it those take A's steps")
args = parser.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
impl = cell_impl("auto")

A, B = load_weights(args.a), load_weights(args.b)
C = load_weights(args.c) if args.c else None
assert A.config == B.config and (C is None or C.config == A.config), "the teachers must share an architecture"
S_config = A.config if args.no_count_input else dataclasses.replace(A.config, tensor_count_input=True)
theta = widen(A.theta, A.config, S_config) if S_config != A.config else dict(A.theta)
if args.init:
    start_rule = load_weights(args.init)
    assert start_rule.config == S_config, "--init must have the student's architecture"
    theta = dict(start_rule.theta)
theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
meta_opt = torch.optim.Adam(theta.values(), lr=args.lr)

members = list(FAMILIES[args.family]) + [tuple(m) for m in json.loads(args.extra)]
task = make_task("mixture", data_root="../shared/data", members=members)
routed = [len(opts.get("hidden", ())) == 1 and opts.get("activation") == "sigmoid" for _, opts in members]
to_c = [C is not None and opts.get("activation") == "relu" and opts.get("batch_size", 128) < 128 for _, opts in members]
label = lambda o: f"{'x'.join(map(str, o['hidden']))} {o['activation']} b{o['batch_size']}"  # noqa: E731
print("members:", [name if name != "mnist_mlp" else label(o) for name, o in members], flush=True)
print("routed to the composition:", [label(o) for (_, o), r in zip(members, routed) if r], flush=True)
print("routed to C:", [label(o) for (_, o), r in zip(members, to_c) if r], flush=True)


def teacher_update(u_a, u_b, sizes, route):
    if not route:
        return u_a
    pieces_a, pieces_b = u_a.split(sizes), u_b.split(sizes)
    n = len(sizes)
    out = []
    for i, (pa, pb) in enumerate(zip(pieces_a, pieces_b)):
        w = 1.0 if i < 2 else args.output_weight if i >= n - 2 else 0.0
        out.append((1 - w) * pa + w * pb)
    return torch.cat(out)


@torch.no_grad()
def collect(seed, follow_student):
    """One run of ``args.steps`` steps: the flat gradients, the teacher's updates along the run, the final loss."""
    problem, route = task.sample(seed), routed[task.member(seed)]
    opt = _Optimizee(problem, torch.device("cpu"))
    n, sizes = opt.numel, opt.sizes
    s_a, s_b = nets.init_state(A.config, n), nets.init_state(B.config, n)
    s_s = nets.init_state(S_config, n)
    student = {k: v.detach() for k, v in theta.items()}
    grad = opt.loss_and_grad(0)[1]
    grads, labels = [], []
    for t in range(args.steps):
        u_a, s_a = _rule_step((C if to_c[task.member(seed)] else A).theta, grad, s_a, A.config, impl, sizes)
        u_b, s_b = _rule_step(B.theta, grad, s_b, B.config, impl, sizes) if route else (u_a, s_b)
        label = teacher_update(u_a, u_b, sizes, route)
        grads.append(grad)
        labels.append(label)
        if follow_student:
            u_s, s_s = _rule_step(student, grad, s_s, S_config, impl, sizes)
            opt.apply(u_s)
        else:
            opt.apply(label)
        loss, grad = opt.loss_and_grad(t + 1)
    # the student's inputs on a sample of coordinates (they do not depend on its weights)
    pieces, start = [], 0
    for size in sizes:
        take = torch.randperm(size)[: args.coords] if size > args.coords else torch.arange(size)
        pieces.append(take + start)
        start += size
    index = torch.cat(pieces)
    owner = torch.cat([torch.full((len(p),), i) for i, p in enumerate(pieces)])
    xs, ys = [], []
    for g, label in zip(grads, labels):
        column = tensor_input_columns(g, sizes, S_config)
        x = rule_inputs(normalize_per_tensor(g, sizes, S_config.grad_norm_target, S_config.grad_norm_power),
                        S_config, column)
        xs.append(x[index])
        ys.append(label[index])
    ys = torch.stack(ys)
    scale = torch.zeros(len(sizes)).index_add_(0, owner, ys.pow(2).mean(0)) / torch.bincount(owner).float()
    weight = 1.0 / (scale[owner] + 1e-30) / torch.bincount(owner).float()[owner] / len(sizes)  # per coordinate
    return {"x": torch.stack(xs), "y": ys, "w": weight, "route": route, "seed": seed, "final": float(loss)}


def student_loss(item):
    state = nets.init_state(S_config, item["x"].shape[1])
    total = 0.0
    for t in range(item["x"].shape[0]):
        u, state = nets.step(theta, item["x"][t], state, S_config, impl=impl)
        total = total + ((u - item["y"][t]).pow(2) * item["w"]).sum()
    return total / item["x"].shape[0]


pool, seed_next, log = [], TRAIN_SEED_START + 8_000_000, []
for round_ in range(args.rounds):
    start = time.time()
    new = [collect(seed_next + i, follow_student=round_ > 0) for i in range(args.problems)]
    finite = [i for i in new if torch.isfinite(i["x"]).all() and torch.isfinite(i["y"]).all() and torch.isfinite(i["w"]).all()]
    if len(finite) < len(new):
        print(f"round {round_}: {len(new) - len(finite)} runs left out (not finite): seeds "
              f"{sorted({i['seed'] for i in new} - {i['seed'] for i in finite})}", flush=True)
    new = finite
    seed_next += args.problems
    with torch.no_grad():
        before = [float(student_loss(item)) for item in new]
    print(f"round {round_}: {len(new)} runs collected in {time.time() - start:.0f} s; student error on them "
          f"routed {sum(b for b, i in zip(before, new) if i['route']) / max(1, sum(i['route'] for i in new)):.4f}, "
          f"others {sum(b for b, i in zip(before, new) if not i['route']) / max(1, sum(not i['route'] for i in new)):.4f}",
          flush=True)
    pool += new
    for p in range(args.passes):
        start = time.time()
        errs = {True: [], False: []}
        for k in torch.randperm(len(pool)).tolist():
            meta_opt.zero_grad(set_to_none=True)
            loss = student_loss(pool[k])
            if not torch.isfinite(loss):
                print(f"skipped a non-finite loss (seed {pool[k]['seed']})", flush=True)
                continue
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(theta.values()), args.clip)
            meta_opt.step()
            errs[pool[k]["route"]].append(float(loss.detach()))
        mean = lambda v: sum(v) / max(1, len(v))  # noqa: E731
        record = {"round": round_, "pass": p, "routed": mean(errs[True]), "others": mean(errs[False]),
                  "seconds": round(time.time() - start)}
        log.append(record)
        print(json.dumps(record), flush=True)

save_weights(args.out, {k: v.detach() for k, v in theta.items()}, S_config,
             {"name": args.out, "description": f"session 31 diagnostic: {args.a} distilled toward the routed "
                                               f"composition with {args.b} (w {args.output_weight}) on {args.family}",
              "distill": {"args": vars(args), "log": log}})
print("wrote", args.out)
