"""What an optimizer step costs: LearnedOptimizer against Adam and SGD, from 1e4 to 1e7 parameters.

    python -m benchmarks.step_cost               # CPU, 1e4 .. 1e7 parameters (a few minutes on 2 cores)
    python -m benchmarks.step_cost --quick
    python -m benchmarks.step_cost --device cuda --sizes 1e5 1e6 1e7 1e8

Models: MNIST-shaped MLPs 784 → w → 10 with w picked for the size. Per model and
optimizer: the median time of ``opt.step()`` after warm-up, optimizer-state bytes
per parameter, and the step time as a fraction of one forward+backward pass of
the model on a batch of 128 (what a user feels). For LearnedOptimizer also the
achieved throughput, counted as the rule network's FLOPs per coordinate (the
matrix products of the LSTM layers and the readout, plus the element-wise gate
work) times the coordinates per second, divided by the throughput of a large
float32 matrix product measured in the same run: the distance from the machine's limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from learned_optim import LearnedOptimizer, cpp_build, load_weights
from learned_optim import features as features_lib
from learned_optim.backends import triton as triton_backend
from learned_optim.nets import NetConfig
from learned_optim.pretrained import resolve

from .common import add_out_argument, resolve_out, markdown_table, provenance, pyplot, sync, write_json


def rule_flops_per_coordinate(config: NetConfig, features: int = 2) -> int:
    """Multiply-adds ×2 of every layer's gate matmul on [input, h, 1] and the readout, plus ~10 FLOPs per gate value."""
    gates = 4 if config.cell == "lstm" else 3
    flops, width = 0, features
    for _ in range(config.num_layers):
        flops += 2 * gates * config.hidden_size * (width + config.hidden_size + 1)
        flops += 10 * gates * config.hidden_size  # activations and the cell update
        width = config.hidden_size
    outputs = 2 if config.output == "residual" else 1
    return flops + 2 * outputs * (config.hidden_size + 1)


def mlp_for(numel: int) -> torch.nn.Module:
    width = max(1, round((numel - 10) / (784 + 1 + 10)))
    return torch.nn.Sequential(torch.nn.Linear(784, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() over repeats, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _matmul_operands(device: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The reference float32 matmul's size and operands (n x n times n x n: 2 n^3 FLOPs)."""
    n = 2048 if device == "cpu" else 8192
    return n, torch.randn(n, n, device=device), torch.randn(n, n, device=device)


def matmul_flops(device: str, repeats: int = 5) -> float:
    n, a, b = _matmul_operands(device)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats)


def paired_fractions(step, work_flops: float, device: str, repeats: int) -> list[float]:
    """Per pair of one matmul and one step, timed back to back: the step's FLOP rate over the matmul's.

    On a shared host the throughput drifts by tens of percent within a minute; readings taken apart then
    compare a step at one moment with a matmul at another, and pairs taken together do not.
    """
    n, a, b = _matmul_operands(device)
    a @ b
    sync(device)
    fractions = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        sync(device)
        matmul_s = time.perf_counter() - started
        started = time.perf_counter()
        step()
        sync(device)
        fractions.append((work_flops / (time.perf_counter() - started)) / (2 * n**3 / matmul_s))
    return fractions


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a large device-to-device copy (read + write), the memory side of the roofline."""
    n = (1 << 24) if device == "cpu" else (1 << 28)
    a = torch.empty(n, device=device)
    b = torch.empty_like(a)
    return 2 * 4 * n / timed(lambda: b.copy_(a), device, 5)


def bytes_per_coordinate(state_bytes: float, param_bytes: int = 4) -> float:
    """Least memory traffic of a learned step per coordinate: the state read and written, the gradient read,
    the parameter read and written."""
    return 2 * state_bytes + param_bytes + 2 * param_bytes


def optimizers(device: str, chunk_size: "int | None" = None, weights: str = "default", also=()) -> dict:
    """The optimizers timed, by row name; ``also``: more rules, each timed on its fast path as "LearnedOptimizer
    (NAME)" in the same run (a same-run ratio between two rules does not drift with the host)."""
    cuda = device.startswith("cuda")
    rows = {
        "LearnedOptimizer": lambda p: LearnedOptimizer(p, weights=weights, chunk_size=chunk_size),
        "LearnedOptimizer (torch path)": lambda p: LearnedOptimizer(p, weights=weights, implementation="torch",
                                                                    chunk_size=chunk_size),
    }
    for name in also:
        rows[f"LearnedOptimizer ({name})"] = lambda p, name=name: LearnedOptimizer(p, weights=name,
                                                                                   chunk_size=chunk_size)
    rows["Adam" + (" (fused)" if cuda else " (foreach)")] = lambda p: torch.optim.Adam(
        p, lr=1e-3, **({"fused": True} if cuda else {"foreach": True}))
    rows["SGD"] = lambda p: torch.optim.SGD(p, lr=1e-2)
    return rows


def measure(numel: int, device: str, repeats: int, chunk_size: "int | None" = None, rule_flops=0,
            pairs: "int | None" = None, weights: str = "default", also=()) -> dict:
    """One model size: every optimizer's step time and state; ``rule_flops``: FLOPs per coordinate of the learned
    rows, one number or a dict by row name (rows it lacks get no throughput figures)."""
    torch.manual_seed(0)
    model = mlp_for(numel).to(device)
    params = list(model.parameters())
    count = sum(p.numel() for p in params)
    x, y = torch.randn(128, 784, device=device), torch.randint(0, 10, (128,), device=device)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    fwd_bwd = timed(forward_backward, device, repeats)
    forward_backward()  # leave gradients in place for the steps
    row = {"parameters": count, "forward_backward_s": fwd_bwd, "optimizers": {}}
    for name, make in optimizers(device, chunk_size, weights, also).items():
        opt = make(params)
        step = timed(opt.step, device, repeats)
        state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0)
        row["optimizers"][name] = {
            "step_s": step,
            "state_bytes_per_parameter": state_bytes / count,
            "step_over_forward_backward": step / fwd_bwd,
        }
        flops = rule_flops.get(name, 0) if isinstance(rule_flops, dict) else rule_flops
        if name.startswith("LearnedOptimizer") and flops:
            fractions = paired_fractions(opt.step, flops * count, device, pairs or repeats)
            row["optimizers"][name]["paired_fractions_of_matmul"] = fractions
            row["optimizers"][name]["fraction_of_matmul_throughput_paired"] = statistics.median(fractions)
        with torch.no_grad():  # undo the steps' drift so every optimizer sees the same model
            torch.manual_seed(0)
            reference = mlp_for(numel).to(device)
            for p, q in zip(params, reference.parameters()):
                p.copy_(q)
        del opt
    return row


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=15,
                        help="(matmul, step) pairs per LearnedOptimizer row for the paired fraction of matmul throughput")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high", "medium"),
                        help="torch.set_float32_matmul_precision for the run: the reference matmul, and on CUDA the "
                        "Triton kernel's products (\"high\": TF32), follow it; results go to step_cost_DEVICE_PRECISION.*")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="LearnedOptimizer's chunk_size (default: its own per-device default)")
    parser.add_argument("--weights", default="default",
                        help="the rule LearnedOptimizer loads (a shipped name, 'default' or a path); its name and "
                        "sha256 go in the result file")
    parser.add_argument("--also", default="",
                        help="comma-separated further rules to time in the same run (e.g. an earlier default), each "
                        "on its fast path; the table gives each one's step over the main rule's")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    resolve_out(args)
    if args.quick:
        args.sizes, args.repeats, args.pairs = [1e4], 2, 2
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(args.matmul_precision)
    try:
        return run(args, argv)
    finally:  # the setting is the process's: leave it as it was
        torch.set_float32_matmul_precision(before)


def run(args, argv) -> int:
    started = time.perf_counter()
    rule = load_weights(args.weights)  # first: an unknown or broken weight file fails before any timing
    # the machine's throughput drifts on a shared host: the matmul is timed before and after every model size and
    # the best reading is the reference (the conservative choice: it makes our fraction smaller)
    matmul_readings = [matmul_flops(args.device)]
    bandwidth = copy_bandwidth(args.device)
    also = [name for name in args.also.split(",") if name]
    # per-tensor inputs are folded into the biases: a rule's FLOPs per coordinate count only its per-coordinate inputs
    per_row = {"LearnedOptimizer": rule, "LearnedOptimizer (torch path)": rule}
    per_row.update({f"LearnedOptimizer ({name})": load_weights(name) for name in also})
    rule_flops = {name: rule_flops_per_coordinate(r.config, features_lib.num_features(r.config.preprocess))
                  for name, r in per_row.items()}
    flops = rule_flops["LearnedOptimizer"]
    rows = []
    for size in args.sizes:
        rows.append(measure(int(size), args.device, args.repeats, args.chunk_size, rule_flops, args.pairs, rule,
                            also))
        matmul_readings.append(matmul_flops(args.device))
    peak = max(matmul_readings)
    for row in rows:
        adam = next(v for k, v in row["optimizers"].items() if k.startswith("Adam"))
        main_step = row["optimizers"]["LearnedOptimizer"]["step_s"]
        for name, learned in row["optimizers"].items():
            if name.startswith("LearnedOptimizer"):
                flops = rule_flops[name]
                if name not in ("LearnedOptimizer", "LearnedOptimizer (torch path)"):
                    learned["main_rule_step_over_this"] = main_step / learned["step_s"]
                learned["achieved_flops"] = flops * row["parameters"] / learned["step_s"]
                learned["fraction_of_matmul_throughput"] = learned["achieved_flops"] / peak
                learned["step_over_adam"] = learned["step_s"] / adam["step_s"]
                bound = max(flops * row["parameters"] / peak,
                            bytes_per_coordinate(learned["state_bytes_per_parameter"]) * row["parameters"] / bandwidth)
                learned["roofline_s"] = bound
                learned["step_over_roofline"] = learned["step_s"] / bound
    kernel = args.device == "cpu" and (cpp_build.available("rule_step") or cpp_build.available("moments_step"))
    gpu_kernel = args.device.startswith("cuda") and triton_backend.available()
    data = {
        "cpu_kernel": kernel,
        "gpu_kernel": "triton" if gpu_kernel else None,
        "matmul_flops_per_s": peak,
        "matmul_flops_per_s_readings": matmul_readings,
        "copy_bytes_per_s": bandwidth,
        "float32_matmul_precision": args.matmul_precision,
        "chunk_size": args.chunk_size,
        "rule_flops_per_coordinate": rule_flops["LearnedOptimizer"],
        "rule_flops_per_coordinate_by_row": rule_flops,
        "weights": {"name": args.weights, "resolved": resolve(args.weights)[1].stem, "sha256": rule.sha256},
        "also": {name: {"resolved": resolve(name)[1].stem, "sha256": per_row[f"LearnedOptimizer ({name})"].sha256}
                 for name in also},
        "rows": rows,
        "provenance": provenance("benchmarks.step_cost", argv, args.device, started),
    }
    out = Path(args.out)
    suffix = ("" if args.device == "cpu" else "_" + args.device.replace(":", "")) + (
        "" if args.matmul_precision == "highest" else "_" + args.matmul_precision)
    write_json(out / f"step_cost{suffix}.json", data)
    table = []
    for row in rows:
        for name, r in row["optimizers"].items():
            table.append([f"{row['parameters']:.2e}", name, f"{r['step_s'] * 1e3:.3g}", f"{r['state_bytes_per_parameter']:.0f}",
                          f"{r['step_over_forward_backward']:.3g}", f"{r['step_over_adam']:.3g}" if "step_over_adam" in r else "",
                          f"{r['fraction_of_matmul_throughput']:.1%}" if "fraction_of_matmul_throughput" in r else "",
                          (f"{r['fraction_of_matmul_throughput_paired']:.1%} ({min(r['paired_fractions_of_matmul']):.0%}-"
                           f"{max(r['paired_fractions_of_matmul']):.0%})") if "paired_fractions_of_matmul" in r else "",
                          f"{r['step_over_roofline']:.3g}" if "step_over_roofline" in r else "",
                          f"{r['main_rule_step_over_this']:.3g}" if "main_rule_step_over_this" in r else ""])
    text = "\n".join([
        "# Optimizer step cost",
        "",
        f"`{data['provenance']['command']}` — commit `{data['provenance']['git_commit']}`, {data['provenance']['device']}; "
        f"LearnedOptimizer with `{data['weights']['resolved']}` (sha256 {rule.sha256[:12]}…).",
        "",
        f"Median of {args.repeats} steps after a warm-up. Rule network: {rule_flops['LearnedOptimizer']} FLOPs per "
        "coordinate" + "".join(f", {name}'s {rule_flops[f'LearnedOptimizer ({name})']}" for name in also)
        + "; float32 matmul in the "
        f"same run: {peak / 1e9:.1f} GFLOP/s (the best of {len(matmul_readings)} readings, "
        f"{min(matmul_readings) / 1e9:.0f}-{peak / 1e9:.0f}, one before and one after each size); copy bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s. Roofline bound of a learned step: max(FLOPs / matmul throughput, bytes / copy "
        "bandwidth), the bytes being the state read and written plus the gradient read and the parameter read and written. "
        f"Paired: {args.pairs} more steps, each timed right after one matmul, and the ratio of the two FLOP rates per "
        "pair (on a shared host the throughput drifts within a run; a pair sees one moment)."
        + (f" chunk_size={args.chunk_size}." if args.chunk_size else "")
        + (" LearnedOptimizer runs its C++ step kernel (learned_optim/backends/cpp.py); the torch path is "
           "`implementation=\"torch\"`, the chunked PyTorch computation." if kernel else "")
        + (" LearnedOptimizer runs its Triton kernel (learned_optim/backends/triton.py); the torch path is "
           "`implementation=\"torch\"`, the chunked PyTorch computation." if gpu_kernel else ""),
        "",
        markdown_table(["parameters", "optimizer", "step (ms)", "state bytes / parameter", "step / (fwd+bwd, batch 128)",
                        "step / Adam's", "of matmul throughput (best reading)", "of matmul, paired: median (range)",
                        "step / roofline", "main rule's step / this row's"], table),
        "",
        f"![step time](step_cost{suffix}.png)",
    ])
    plot(rows, out / f"step_cost{suffix}.png", data["provenance"]["device"])
    (out / f"step_cost{suffix}.md").write_text(text + "\n")
    print(text)
    return 0


def plot(rows, path: Path, device: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = [r["parameters"] for r in rows]
    for name in rows[0]["optimizers"]:
        ax.plot(sizes, [r["optimizers"][name]["step_s"] * 1e3 for r in rows], "o-", label=name)
    ax.plot(sizes, [r["forward_backward_s"] * 1e3 for r in rows], "k:", label="forward+backward, batch 128")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("ms")
    ax.set_title(f"step time, {device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
