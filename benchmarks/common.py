"""Shared pieces of the benchmark scripts: provenance, statistics, tables, plots, progress."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def add_out_argument(parser) -> None:
    """``--out DIR``: where the result files go (default: benchmarks/results/, which the docs cite; under --quick a
    new temporary folder, so that a smoke test never overwrites the committed results)."""
    parser.add_argument("--out", default=None, help="folder for the result files (default: benchmarks/results; "
                        "with --quick a new temporary folder)")


def resolve_out(args) -> str:
    """The folder ``add_out_argument``'s flag comes to (and says where a --quick run writes)."""
    if args.out is None:
        if getattr(args, "quick", False):
            import tempfile

            args.out = tempfile.mkdtemp(prefix="learned_optim-quick-")
            print(f"--quick: writing to {args.out}", file=sys.stderr)
        else:
            args.out = str(DEFAULT_OUT)
    return args.out


def git_commit() -> str:
    """HEAD, with "+dirty" where tracked files other than the results and the docs differ from it."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        )
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(
            # a benchmark rewrites benchmarks/results/ itself, and docs do not change what runs: neither is "dirty"
            # ("top": from the repository's root, as git runs here in benchmarks/)
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmarks/results", ":(exclude,top,glob)**/*.md"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sync(device: str) -> None:
    """Wait for the device's queued work, so that wall-clock timings mean what they say."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_model(cpuinfo: "str | None" = None) -> str:
    """The CPU's model name and its widest float vector instructions, e.g. "Intel(R) Xeon(R) Processor, AVX-512"
    (read from /proc/cpuinfo; "" where there is none). Hosts of one name differ: the float32 matmul that step costs
    are read against runs 2-4x faster with AVX-512 than with AVX2 alone."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else ""
    return ", ".join(x for x in (fields.get("model name", ""), vector) if x)


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    model = cpu_model()
    return (f"cpu ({platform.machine()}{', ' + model if model else ''}, {os.cpu_count()} cores, "
            f"torch {torch.get_num_threads()} threads)")


def provenance(module: str, argv: Sequence[str], device: str, started: float) -> dict[str, Any]:
    """What every result file records: the command, the commit, the device and the wall time."""
    return {
        "command": f"python -m {module} " + shlex.join(list(argv)),
        "git_commit": git_commit(),
        "device": device_name(device),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (inf if any value is inf)."""
    xs = [float(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    if not math.isfinite(mean) or n < 2:
        return mean, float("nan")
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)


def fmt(mean: float, se: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "diverged"
    if not math.isfinite(se):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {se:.2g}"


def grid_summary(final_losses: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """cell -> (learned, tuned Adam, Adam at 1e-3) mean final losses: how a rule fares on a grid (the grid target's terms:
    "at most tuned Adam's" counts ties as wins; "beats Adam at 1e-3" is strictly below; a non-finite loss is ratio inf)."""
    ratios = {cell: mine / tuned if math.isfinite(mine) else float("inf") for cell, (mine, tuned, _) in final_losses.items()}
    return {
        "cells": len(ratios),
        "beats_tuned_adam": sum(mine <= tuned for mine, tuned, _ in final_losses.values()),
        "beats_default_adam": sum(mine < default for mine, _, default in final_losses.values()),
        "worst_ratio": max(ratios.values(), default=float("nan")),
        "final_loss_ratio_to_tuned_adam": ratios,
    }


def kept_run(path: Path, settings: dict, compute: Callable[[], Any], reuse: bool = True,
             commit: str | None = None) -> dict[str, Any]:
    """A run kept in ``path`` as {"settings", "result", "git_commit", "compute_time_s"}: with ``reuse``, the stored
    record when its settings equal ``settings``, else ``compute()`` run, timed and stored. ``commit``: the code's
    (default: HEAD now; a long run should pass the one it started at). Records kept before commit and time were
    stored lack those two keys."""
    if reuse and path.exists():
        stored = json.loads(path.read_text())
        if stored["settings"] == settings:
            return stored
    commit = git_commit() if commit is None else commit
    started = time.perf_counter()
    result = compute()
    record = {"settings": settings, "result": result, "git_commit": commit,
              "compute_time_s": round(time.perf_counter() - started, 1)}
    write_json(path, record)
    return record


def seed_kept(path: Path, settings: dict, report: Path, report_settings: dict, pick: Callable[[dict], Any],
              if_recorded: dict | None = None) -> bool:
    """Keep in ``path`` the result a committed report already holds, so that kept_run does not repeat its runs.

    Only where ``path`` holds nothing, the report exists, every key of ``report_settings`` equals the report's own
    settings (and every key of ``if_recorded`` that the report records), and ``pick(report)`` finds the result
    (None: not there). The record names its source report and commit, and has no compute time (compute_note says
    so). Returns whether it wrote one.
    """
    if path.exists() or not report.exists():
        return False
    data = json.loads(report.read_text())
    recorded = data.get("settings", {})
    if any(recorded.get(k, _MISSING) != v for k, v in report_settings.items()) or any(
            k in recorded and recorded[k] != v for k, v in (if_recorded or {}).items()):
        return False
    result = pick(data)
    if result is None:
        return False
    write_json(path, {"settings": settings, "result": result, "git_commit": data["provenance"]["git_commit"],
                      "seeded_from": report.name})
    return True


_MISSING = object()


def compute_note(records: Iterable[dict[str, Any]]) -> str:
    """A sentence for a report assembled from kept runs (whose own wall time is then near 0): what they took."""
    records = list(records)
    if not records:
        return ""
    timed = [r for r in records if "compute_time_s" in r]
    seeded = [r for r in records if "seeded_from" in r and "compute_time_s" not in r]
    untimed = len(records) - len(timed) - len(seeded)
    if not timed and not seeded:
        return f" The {len(records)} kept runs it assembles predate the record of their compute time."
    parts = []
    if timed:
        commits = sorted({r["git_commit"] for r in timed})
        parts.append(f"The kept runs it assembles took {sum(r['compute_time_s'] for r in timed):.0f} s of compute when "
                     f"run (commit{'s' if len(commits) > 1 else ''} " + ", ".join(f"`{c}`" for c in commits) + ")")
        if untimed:
            parts[-1] += f"; {untimed} of {len(records)} predate that record"
    elif untimed:
        parts.append(f"{untimed} of the {len(records)} kept runs it assembles predate the record of their compute time")
    if seeded:
        sources = sorted({f"{r['seeded_from']} of commit `{r['git_commit']}`" for r in seeded})
        parts.append(f"{len(seeded)} of {len(records)} were read from the committed " + ", ".join(sources))
    return " " + "; ".join(parts) + "."


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def draw_curves(ax, curves: dict[str, tuple[Sequence[float], Sequence[float] | None]], title: str, legend: bool = True,
                ylabel: str = "training loss") -> None:
    """Mean loss per step (name -> (mean, standard error or None)) with a shaded ± s.e. band, log scale."""
    for name, (mean, se) in curves.items():
        mean = torch.as_tensor(mean, dtype=torch.float64)
        if not torch.isfinite(mean).any():
            continue
        steps = torch.arange(mean.numel())
        dashed = "--" if name.startswith(("LSTM", "l2l", "Learned")) else "-"
        (line,) = ax.plot(steps, mean, dashed, label=name)
        if se is not None:
            se = torch.as_tensor(se, dtype=torch.float64)
            ax.fill_between(steps, (mean - se).clamp_min(1e-12), mean + se, color=line.get_color(), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def pyplot(what: str = "plots"):
    """matplotlib.pyplot on the Agg backend, or None (saying so on stderr) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {what}", file=sys.stderr)
        return None
    return plt


def plot_curves(curves: dict[str, torch.Tensor], path: Path, title: str, ylabel: str = "training loss") -> bool:
    """Runs (seeds × steps) per optimizer as mean ± s.e. curves; diverged runs left out and counted. False if no matplotlib."""
    plt = pyplot(path.name)
    if plt is None:
        return False
    summary = {}
    for name, runs in curves.items():
        runs = runs.double()
        finite = torch.isfinite(runs).all(dim=1)
        if not finite.any():
            continue
        runs = runs[finite]
        se = (runs.std(0) / math.sqrt(runs.shape[0])).tolist() if runs.shape[0] > 1 else None
        label = name + ("" if finite.all() else f" ({int((~finite).sum())} diverged runs left out)")
        summary[label] = (runs.mean(0).tolist(), se)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    draw_curves(ax, summary, title, ylabel=ylabel)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def progress(iterable, total: int | None = None, desc: str = ""):
    """A tqdm bar on a terminal, the plain iterable elsewhere."""
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return iterable
