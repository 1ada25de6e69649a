"""Meta-training throughput on the paper's MNIST recipe, against the public notebook's way of computing it.

    python -m benchmarks.metatrain_speed            # ~4 minutes on 2 cores
    python -m benchmarks.metatrain_speed --quick

Recipe: the MNIST MLP (1×20 sigmoid, batch 128), runs of 100 steps unrolled 20 at
a time, the 2-layer 20-unit LSTM rule; one epoch = 20 runs. Two ways of getting
the same truncated meta-gradient are timed in the same process:

- ``ours`` (learned_optim.metatrain.train_run): each step computes the optimizee's
  gradient from that step's graph only; one backward pass through the rule's
  updates per unroll. Timed with the LSTM cell in PyTorch (nets.lstm_cell_fast)
  and, where it builds, with its element-wise work in C++ (cells.py).
- ``notebook-style``: as in the public PyTorch reproduction, the optimizee's parameters
  stay in the meta-graph, and each step's ``loss.backward(retain_graph=True)``
  runs back through the whole unroll so far (its cost grows with the unroll), then
  the unroll's summed loss is backpropagated once more.

Reported: optimizee steps per second, seconds per epoch, and the 50-epoch
projection (training only; validation adds a fixed cost per epoch, reported apart).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from learned_optim import nets
from learned_optim.features import preprocess
from learned_optim.metatrain import MetaTrainConfig, cell_impl, rollout, train_run
from learned_optim.tasks import TRAIN_SEED_START, VALIDATION_SEEDS, DataNotFoundError, make_task

from .common import add_out_argument, resolve_out, markdown_table, provenance, sync, write_json

NOTEBOOK_SECONDS_PER_EPOCH = 250.0  # the public notebook on this machine, as quoted in the project's first measurements


def notebook_style_run(theta, meta_opt, problem, config: MetaTrainConfig, impl: str) -> None:
    """One run with the notebook's meta-gradient computation (second derivatives dropped, as there)."""
    net = config.net
    named = list(problem.model.named_parameters())
    names = [n for n, _ in named]
    params = [p.detach().clone().requires_grad_(True) for _, p in named]
    state = nets.init_state(net, sum(p.numel() for p in params), device=params[0].device)
    for start in range(0, config.steps, config.unroll):
        total = 0.0
        for k in range(config.unroll):
            for p in params:
                p.retain_grad()
            loss = problem.loss(start + k, dict(zip(names, params)))
            # the notebook: backward through everything so far, to read the optimizee's gradient
            loss.backward(retain_graph=True)
            grad = torch.cat([p.grad.detach().reshape(-1) for p in params])
            update, state = nets.step(theta, preprocess(grad, net.preprocess, net.p), state, net, impl=impl)
            pieces = update.split([p.numel() for p in params])
            params = [p + u.view(p.shape) for p, u in zip(params, pieces)]
            total = total + loss
        meta_opt.zero_grad()
        total.backward()
        meta_opt.step()
        params = [p.detach().requires_grad_(True) for p in params]
        state = tuple(s.detach() for s in state)


def time_runs(fn, theta, meta_opt, task, config, runs: int, impl: str) -> float:
    started = time.perf_counter()
    for r in range(runs):
        fn(theta, meta_opt, task.sample(TRAIN_SEED_START + r, config.device), config, impl)
    sync(config.device)
    return time.perf_counter() - started


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metatrain_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=10, help="timed runs of ours")
    parser.add_argument("--notebook-runs", type=int, default=2, help="timed runs of the notebook's computation")
    parser.add_argument("--device", default="cpu")
    add_out_argument(parser)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    resolve_out(args)
    started = time.perf_counter()
    config = MetaTrainConfig(task="mnist_mlp", device=args.device)
    if args.quick:
        config = MetaTrainConfig(task="mnist_mlp", steps=10, unroll=5, device=args.device)
        args.runs, args.notebook_runs = 1, 1
    try:
        task = make_task("mnist_mlp", data_root=args.data_root)
    except DataNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    theta = {k: v.requires_grad_(True) for k, v in nets.init_theta(config.net, torch.Generator().manual_seed(0), device=args.device).items()}
    meta_opt = torch.optim.Adam(list(theta.values()), lr=config.meta_lr)
    # "cpp" where the C++ kernel builds, else "fast"; the kernel is CPU-only
    cpp = cell_impl("auto") if config.device == "cpu" else "fast"
    for impl in {cpp, "fast"}:
        train_run(theta, meta_opt, task.sample(TRAIN_SEED_START + 99, config.device), config, impl)  # warm-up (and kernel build)

    results = {}
    variants = [("ours, PyTorch cell", train_run, args.runs, "fast"), ("notebook-style, PyTorch cell", notebook_style_run, args.notebook_runs, "fast")]
    if cpp == "cpp":
        variants.insert(0, ("ours, C++ cell", train_run, args.runs, "cpp"))
    for name, fn, runs, impl in variants:
        seconds = time_runs(fn, theta, meta_opt, task, config, runs, impl)
        steps_per_s = runs * config.steps / seconds
        epoch = config.runs_per_epoch * config.steps / steps_per_s
        results[name] = {
            "runs": runs,
            "seconds": round(seconds, 2),
            "optimizee_steps_per_s": round(steps_per_s, 2),
            "seconds_per_epoch": round(epoch, 1),
            "projected_50_epochs_minutes": round(50 * epoch / 60, 1),
        }
    best = variants[0][0]
    detached = {k: v.detach() for k, v in theta.items()}
    t = time.perf_counter()
    rollout(detached, config.net, task.sample(VALIDATION_SEEDS[0], config.device), config.steps, args.device, cpp)
    results["validation_seconds_per_problem"] = round(time.perf_counter() - t, 2)
    results["speedup_vs_notebook_style"] = round(
        results[best]["optimizee_steps_per_s"] / results["notebook-style, PyTorch cell"]["optimizee_steps_per_s"], 2
    )
    results["speedup_vs_quoted_notebook"] = round(NOTEBOOK_SECONDS_PER_EPOCH / results[best]["seconds_per_epoch"], 2)
    data = {"config": config.to_dict(), "results": results, "provenance": provenance("benchmarks.metatrain_speed", argv, args.device, started)}
    out = Path(args.out)
    write_json(out / "metatrain_speed.json", data)
    rows = [
        [name, r["runs"], r["optimizee_steps_per_s"], r["seconds_per_epoch"], r["projected_50_epochs_minutes"]]
        for name, r in results.items()
        if isinstance(r, dict)
    ]
    text = "\n".join(
        [
            "# Meta-training throughput, MNIST recipe (20 runs × 100 steps per epoch, unroll 20)",
            "",
            f"`{data['provenance']['command']}` — commit `{data['provenance']['git_commit']}`, {data['provenance']['device']}.",
            "",
            markdown_table(["meta-gradient", "timed runs", "optimizee steps/s", "s per epoch", "50 epochs (min)"], rows),
            "",
            f"Ours ({best}) is {results['speedup_vs_notebook_style']}× the notebook-style computation in the same process, and "
            f"{results['speedup_vs_quoted_notebook']}× the notebook's quoted {NOTEBOOK_SECONDS_PER_EPOCH:.0f} s per epoch (on the 2-core CPU). "
            f"Validation adds {results['validation_seconds_per_problem']} s per held-out problem per epoch.",
        ]
    )
    if args.quick:
        text += "\n\n(--quick: 10-step runs, unroll 5; a smoke test, not the recipe's figures.)"
    (out / "metatrain_speed.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
