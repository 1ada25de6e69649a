"""Does compiling LearnedOptimizer's network pay? ``implementation="compiled"`` against the eager torch path and the
default.

    python -m benchmarks.compile_step             # 1e4 .. 1e6 parameters, a few minutes on 2 cores
    python -m benchmarks.compile_step --quick
    python -m benchmarks.compile_step --device cuda --sizes 1e5 1e6 1e7

For each model size (one flat parameter; the step cost depends only on the number
of coordinates), the time of ``opt.step()`` after warm-up: the default (on the CPU the C++
kernel, on CUDA the Triton kernel, where they are available), the chunked torch computation
eager (``implementation="torch"``) and compiled (``implementation="compiled"``, that
computation through torch.compile instead of the kernels); the time the compiled optimizer's first steps took (a
cold compilation: dynamo reset and inductor's caches off, as on a user's first run); and the
number of steps after which compiling has paid for itself against the eager torch path. Also
the largest difference between the parameters after the steps of each, on the same gradients.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer
from learned_optim.backends import batched

from .common import add_out_argument, resolve_out, markdown_table, provenance, sync, write_json


def measure(numel: int, device: str, repeats: int, compile: bool, implementation: str = "fast") -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(numel, generator=gen).to(device))
    grads = [torch.randn(numel, generator=gen).to(device) * 1e-2 for _ in range(3)]
    if compile:  # compile afresh for every size, caches off: the first steps show a cold compilation's cost
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True
        torch._dynamo.reset()
        batched._COMPILED = None
    opt = LearnedOptimizer([param], implementation="compiled" if compile else implementation)
    sync(device)
    started = time.perf_counter()
    for t in range(3):  # warm-up: the compilation happens here (both chunk shapes are met)
        param.grad = grads[t]
        opt.step()
    sync(device)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    for t in range(repeats):
        param.grad = grads[t % 3]
        opt.step()
    sync(device)
    return {"warmup_s": warmup, "step_s": (time.perf_counter() - started) / repeats, "param": param.detach().cpu()}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    resolve_out(args)
    if args.quick:
        args.sizes, args.repeats = [5e3], 2
    started = time.perf_counter()
    rows, results = [], {}
    for size in args.sizes:
        numel = int(size)
        default = measure(numel, args.device, args.repeats, compile=False)
        eager = measure(numel, args.device, args.repeats, compile=False, implementation="torch")
        compiled = measure(numel, args.device, args.repeats, compile=True)
        saved = eager["step_s"] - compiled["step_s"]
        extra = compiled["warmup_s"] - eager["warmup_s"]
        break_even = max(0.0, extra) / saved if saved > 0 else float("inf")
        diff = float((eager["param"] - compiled["param"]).abs().max())
        results[str(numel)] = {
            "default_step_ms": round(default["step_s"] * 1e3, 3),
            "eager_step_ms": round(eager["step_s"] * 1e3, 3),
            "compiled_step_ms": round(compiled["step_s"] * 1e3, 3),
            "speedup": round(eager["step_s"] / compiled["step_s"], 2),
            "speedup_over_default": round(default["step_s"] / compiled["step_s"], 2),
            "compile_warmup_s": round(compiled["warmup_s"], 2),
            "break_even_steps": round(break_even, 1) if break_even != float("inf") else None,
            "max_param_difference": diff,
            "max_param_difference_default": float((default["param"] - compiled["param"]).abs().max()),
        }
        r = results[str(numel)]
        rows.append([f"{numel:.0e}", r["default_step_ms"], r["eager_step_ms"], r["compiled_step_ms"], r["speedup"],
                     r["speedup_over_default"], r["compile_warmup_s"],
                     r["break_even_steps"] if r["break_even_steps"] is not None else "never", f"{diff:.1e}",
                     f"{r['max_param_difference_default']:.1e}"])
    data = {"results": results, "repeats": args.repeats, "provenance": provenance("benchmarks.compile_step", argv, args.device, started)}
    out = Path(args.out)
    suffix = "" if args.device == "cpu" else "_" + args.device.replace(":", "")
    write_json(out / f"compile_step{suffix}.json", data)
    text = "\n".join(
        [
            "# LearnedOptimizer.step: implementation=\"compiled\" against the eager torch path and the default",
            "",
            f"`{data['provenance']['command']}` — commit `{data['provenance']['git_commit']}`, {data['provenance']['device']}.",
            "",
            f"Mean of {args.repeats} steps after 3 warm-up steps; parameters compared after all of them. The "
            "default is the C++ kernel on the CPU and the Triton kernel on CUDA where they are available; "
            "`implementation=\"compiled\"` runs the chunked torch computation (`implementation=\"torch\"`) "
            "through torch.compile instead.",
            "",
            markdown_table(
                ["parameters", "default step (ms)", "torch path, eager (ms)", "compiled (ms)",
                 "compiled: speedup over eager", "over the default", "first 3 compiled steps (s)",
                 "steps to break even (against eager)", "max |Δparam|: eager vs compiled", "default vs compiled"],
                rows,
            ),
        ]
    )
    if args.quick:
        text += "\n\n(--quick: a smoke test, not a measurement.)"
    (out / f"compile_step{suffix}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
