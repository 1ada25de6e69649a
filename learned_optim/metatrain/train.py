"""The meta-training loop: epochs of training runs and validation, divergence handling, checkpoints, the card.

Truncated backpropagation through time, as in Andrychowicz et al. (2016):
optimizee runs of ``steps`` steps, unrolled ``unroll`` steps at a time; the
meta-loss of an unroll is the sum of the optimizee's losses after each of its
updates (every weight w_t = 1; with ``meta_loss="log"`` the sum of their logarithms,
so that each problem counts by its relative progress rather than its loss's
scale: then G_j below sums g_t / f(θ_t)); the optimizee's gradients are treated as inputs
(no second derivatives); the rule's hidden state is carried across unrolls and
detached between them; the meta-optimizer is Adam.

Why one backward pass per unroll is enough: with the gradients g_t treated as
constants, θ_t = θ_s + Σ_{j<t} Δ_j(φ) and ∂f(θ_t)/∂θ_t = g_t, so

    d/dφ Σ_{t=s+1}^{s+K} f(θ_t) = Σ_{j=s}^{s+K-1} G_jᵀ ∂Δ_j/∂φ,   G_j = Σ_{t=j+1}^{s+K} g_t.

Each step's optimizee gradient needs only that step's graph, and the
meta-gradient is one backward through the K rule steps with output weights G_j.

Each epoch runs ``runs_per_epoch`` training problems (fresh seeds), then
validates on ``val_problems`` held-out problem seeds (mean sum of losses over a
run, the reproductions' metric); the best epoch's weights are kept (``--keep last``:
the last epoch's). A checkpoint
is written atomically after every epoch; ``--resume`` continues a killed run
from its last complete epoch and ends with the same weights as an
uninterrupted run. Output: a weight file with its card (see pretrained.py).

``meta_grad="es"`` replaces backpropagation by antithetic evolution strategies over
whole runs (``unroll`` must equal ``steps``): for each training problem, ``es_pairs``
Gaussian directions ε, each scored by two runs of the rule at φ ± σε on that same
problem, give the estimate Σ (L(φ+σε) − L(φ−σε)) ε / (2σ · pairs) of the gradient
of the meta-loss averaged over the perturbations, a smoothed objective. It needs
no derivatives at all (forward runs only, so every step may take the C++ kernel),
and it stays finite where a whole run's exact meta-gradient is chaotic; its cost
is 2 · es_pairs runs per problem, and its variance grows with the rule's size.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..pretrained import card_path, remove_stale_temporaries, save_weights
from ..tasks import VALIDATION_SEEDS, Task, make_task
from .checkpoints import checkpoint_path, load_checkpoint, log_path, save_checkpoint
from .config import LOG_FLOOR, RESUMABLE_CHANGES, MetaTrainConfig, initial_theta, start_weights, train_seed
from .estimators import es_runs, pes_runs, runs_per_problem, train_runs, unrolls_per_problem
from .group import Group, process_group
from .rollout import cell_impl, rollout


def validate(theta, config: MetaTrainConfig, task: Task, impl: str = "fast", group: "Group | None" = None) -> float:
    """Mean over held-out problems of the sum of losses over a run (lower is better); under meta_grad "pes", of the
    mean log loss over the run (long runs' losses span orders of magnitude)."""
    detached = {k: v.detach() for k, v in theta.items()}
    seeds = list(VALIDATION_SEEDS[: config.val_problems])
    if group is not None:
        seeds = seeds[group.rank :: group.world]
    total = 0.0
    for seed in seeds:
        problem = task.sample(seed, config.device)
        losses = rollout(detached, config.net, problem, config.steps, config.device, impl)
        if config.meta_grad == "pes":
            total += float(losses.double().clamp_min(LOG_FLOOR).log().mean())
        else:
            total += float(losses.sum())
    if group is not None:
        (total,) = group.sum_floats([total], config.device)
    return total / config.val_problems



def _progress_bar(total: int, initial: int):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="run", desc="meta-training", dynamic_ncols=True)


def metatrain(
    config: MetaTrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    data_root: str | os.PathLike | None = None,
    command: str | None = None,
    name: str | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Path:
    """Run the recipe and write the best epoch's weights to ``out`` (with its card)."""
    out = Path(out)
    if not out.name.endswith(".safetensors"):
        raise ValueError(f"Invalid out: {str(out)!r} (must end with .safetensors)")
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt, log_file = checkpoint_path(out), log_path(out)
    group = process_group()
    world, lead = (group.world, group.rank == 0) if group is not None else (1, True)
    if config.problems_per_step % world:
        raise ValueError(
            f"Invalid problems_per_step: {config.problems_per_step} (must be a multiple of the {world} ranks)"
        )
    if not lead:
        log = lambda message: None  # noqa: E731 -- rank 0 speaks for the run
    device = torch.device(config.device)
    task = make_task(config.task, data_root=data_root, **config.task_options)
    impl = cell_impl(config.kernel) if device.type == "cpu" else "fast"  # the C++ kernel is CPU-only

    source = start_weights(config) if config.init_from else None  # read and hashed once: the card names these bytes
    theta = {
        k: v.requires_grad_(True)
        for k, v in initial_theta(config, device, source).items()
    }
    meta_opt = torch.optim.Adam(list(theta.values()), lr=config.meta_lr)
    progress: dict[str, Any] = {"config": config.to_dict(), "epochs_done": 0, "history": [], "train_seconds": 0.0}
    best_theta = {k: v.detach().clone() for k, v in theta.items()}

    if lead:  # a run killed while writing leaves its temporary file behind: the checkpoint's, the weights' or the card's
        remove_stale_temporaries(ckpt, out, card_path(out))
    if ckpt.exists() and not resume:
        raise FileExistsError(f"A checkpoint of an unfinished run exists at {ckpt}: pass --resume, or delete it")
    if ckpt.exists():
        saved, saved_theta, saved_best, opt_state = load_checkpoint(ckpt)
        mine = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
        try:  # through the config class: a field added since the checkpoint was written takes its default
            theirs = {k: v for k, v in MetaTrainConfig.from_dict(saved["config"]).to_dict().items()
                      if k not in RESUMABLE_CHANGES}
        except (TypeError, ValueError):
            theirs = None
        if mine != theirs:
            raise ValueError(f"Checkpoint {ckpt} was written by another recipe; resume with the same flags")
        progress = saved
        progress["config"] = config.to_dict()
        with torch.no_grad():
            for k in theta:
                theta[k].copy_(saved_theta[k])
        best_theta = {k: v.to(device) for k, v in saved_best.items()}
        meta_opt.load_state_dict(opt_state)
        progress.setdefault("resumed_after_epochs", []).append(progress["epochs_done"])
        log(f"resuming from {ckpt} after epoch {progress['epochs_done']}")
    else:
        if log_file.exists() and lead:
            log_file.unlink()
        val = validate(theta, config, task, impl, group)  # epoch 0: the untrained rule
        progress["history"].append({"epoch": 0, "val": val})
        progress["best_epoch"], progress["best_val"] = 0, val
        log(f"epoch 0: validation {val:.4f} (untrained)")

    bar = _progress_bar(config.epochs * config.runs_per_epoch, progress["epochs_done"] * config.runs_per_epoch) if lead else None
    per_step, share = config.problems_per_step, config.problems_per_step // world
    rank = group.rank if group is not None else 0
    stopped = None
    while progress["epochs_done"] < config.epochs and stopped is None:
        epoch = progress["epochs_done"] + 1
        good = ({k: v.detach().clone() for k, v in theta.items()}, copy.deepcopy(meta_opt.state_dict()))
        started = time.perf_counter()
        totals = [0.0, 0.0, 0.0]  # meta-loss sum, unrolls counted, unrolls skipped
        for first in range(0, config.runs_per_epoch, per_step):
            mine = range(first + rank * share, first + (rank + 1) * share)  # this rank's share of the step's problems
            seeds = [train_seed(config, epoch, run) for run in mine]
            problems = [task.sample(seed, config.device) for seed in seeds]
            if config.meta_grad == "es":
                stats = es_runs(theta, meta_opt, problems, seeds, config, impl, group)
            elif config.meta_grad == "pes":
                stats = pes_runs(theta, meta_opt, problems, seeds, config, impl, group)
            else:
                stats = train_runs(theta, meta_opt, problems, config, impl, group)
            totals = [a + b for a, b in zip(totals, (stats["meta_loss_sum"], stats["meta_loss_count"], stats["skipped_unrolls"]))]
            if bar is not None:
                bar.update(per_step)
        if group is not None:
            totals = group.sum_floats(totals, config.device)
        train_seconds = time.perf_counter() - started
        val = validate(theta, config, task, impl, group)
        epoch_seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "train_meta_loss": totals[0] / max(1.0, totals[1]),
            "skipped_unrolls": int(totals[2]),
            "val": val,
            "train_seconds": round(train_seconds, 3),
            "epoch_seconds": round(epoch_seconds, 3),
            "optimizee_steps_per_s": round(config.runs_per_epoch * runs_per_problem(config) * config.steps / train_seconds, 2),
        }
        progress["train_seconds"] += epoch_seconds
        diverged = _divergence(config, record, progress["best_val"], unrolls=config.runs_per_epoch * unrolls_per_problem(config))
        if diverged is not None:
            reductions = progress.setdefault("lr_reductions", [])
            with torch.no_grad():  # back to the state before this epoch
                for k in theta:
                    theta[k].copy_(good[0][k])
            meta_opt.load_state_dict(good[1])
            record["diverged"] = diverged
            if len(reductions) >= config.max_lr_reductions:
                stopped = f"diverged at epoch {epoch} after {len(reductions)} meta-learning-rate reductions ({diverged})"
                progress["stopped"] = stopped
            else:
                new_lr = meta_opt.param_groups[0]["lr"] * config.divergence_lr_factor
                for param_group in meta_opt.param_groups:
                    param_group["lr"] = new_lr
                reductions.append({"epoch": epoch, "reason": diverged, "meta_lr": new_lr})
                log(f"epoch {epoch} diverged ({diverged}): restored the state before it, meta-lr now {new_lr:.3g}; redoing it")
        else:
            improved = val < progress["best_val"]
            if improved:
                best_theta = {k: v.detach().clone() for k, v in theta.items()}
                progress["best_epoch"], progress["best_val"] = epoch, val
            progress["epochs_done"] = epoch
        record["best_epoch"] = progress["best_epoch"]
        progress["history"].append(record)
        if lead:
            save_checkpoint(ckpt, progress, theta, best_theta, meta_opt)
            with open(log_file, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.set_postfix(val=f"{val:.3f}", best=f"{progress['best_val']:.3f}")
        elif diverged is None:
            log(
                f"epoch {epoch}: meta-loss {record['train_meta_loss']:.4f}, validation {val:.4f} "
                f"(best {progress['best_val']:.4f} at epoch {progress['best_epoch']}), {epoch_seconds:.1f} s"
            )
    if bar is not None:
        bar.close()
    if stopped is not None:
        log(f"stopped: {stopped}; keeping the best epoch")

    history = progress["history"]
    trained = [h for h in history if "train_seconds" in h and "diverged" not in h]
    card = {
        "name": name or out.name[: -len(".safetensors")],
        "description": f"Coordinatewise {config.net.cell.upper()} rule meta-trained on {config.task}",
        "task": task.describe(),
        "metatrain": config.to_dict(),
        "command": command,
        **({"init_from_sha256": source.sha256} if source is not None else {}),
        "validation": {
            "metric": f"mean over {config.val_problems} held-out problems of the sum of training losses over {config.steps} steps",
            "seeds": f"{VALIDATION_SEEDS.start}..{VALIDATION_SEEDS.start + config.val_problems - 1}",
            "best_epoch": progress["best_epoch"],
            "best": progress["best_val"],
            "history": history,
        },
        "throughput": {
            "optimizee_steps_per_s": (
                round(sum(config.runs_per_epoch * runs_per_problem(config) * config.steps for _ in trained)
                      / sum(h["train_seconds"] for h in trained), 2)
                if trained
                else None
            ),
            "mean_epoch_seconds": round(sum(h["epoch_seconds"] for h in trained) / len(trained), 2) if trained else None,
        },
        "wall_time_s": round(progress["train_seconds"], 1),
        # a resumed run gives the weights of an uninterrupted one (tested); where it was interrupted is recorded
        "resumed_after_epochs": progress.get("resumed_after_epochs", []),
        # divergences met: each restored the state before its epoch and lowered the meta-learning rate
        "lr_reductions": progress.get("lr_reductions", []),
        "stopped": progress.get("stopped"),
        "ranks": world,
        "cell_implementation": {"cpp": "C++ element-wise kernel (cells.py)", "fast": "cells.lstm_cell_fast"}[impl],
        "package_version": __version__,
        "torch_version": torch.__version__,
        "device": _device_name(device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if group is not None:
        group.barrier()
    if not lead:
        return out
    best = f"best validation {progress['best_val']:.4f} at epoch {progress['best_epoch']}"
    if config.keep == "last":
        card["validation"]["kept_epoch"] = progress["epochs_done"]
        kept, which = {k: v.detach() for k, v in theta.items()}, f"last epoch {progress['epochs_done']}; {best}"
    else:
        kept, which = best_theta, best
    save_weights(out, kept, config.net, card)
    log(f"wrote {out} ({which})")
    return out


def _divergence(config: MetaTrainConfig, record: dict[str, Any], best: float, unrolls: int) -> str | None:
    """Why an epoch counts as diverged, or None: validation not finite, far above the best, or most unrolls (ES: pairs)
    skipped."""
    val = record["val"]
    if not math.isfinite(val):
        return "validation is not finite"
    if config.divergence_factor > 0 and config.meta_grad == "pes":  # a mean log loss: a factor is a difference
        if val > best + math.log(config.divergence_factor):
            return f"validation {val:.4g} > best {best:.4g} + log {config.divergence_factor:g}"
    elif config.divergence_factor > 0 and val > config.divergence_factor * best:
        return f"validation {val:.4g} > {config.divergence_factor:g} x best {best:.4g}"
    if record["skipped_unrolls"] > unrolls / 2:
        return f"{record['skipped_unrolls']} of {unrolls} unrolls non-finite"
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
