"""The sources' headline experiments: generalization variants and the meta-learning-rate sweep.

    python -m benchmarks.paper --data-root ../shared/data            # hours on 2 CPU cores; resumable
    python -m benchmarks.paper --quick --data-root ../shared/data
    python -m benchmarks.paper --part sweep --device cuda --data-root DATA

Parts:

- ``variants``: the paper's generalization experiments for the MNIST rule, each
  against the tuned baselines (the base experiments themselves are
  ``benchmarks.base_tasks``): 40 hidden units, 2 hidden layers, ReLU, and 200 steps
  of the base MLP. Run by the same code as ``benchmarks.deep_wide``.
- ``sweep``: the report's meta-learning-rate sweep of the MNIST recipe: the fine
  grid {0.002, …, 0.006} at ``--fine-epochs`` (the report: 100) and the coarse grid
  {1, 0.3, …, 1e-5} at ``--coarse-epochs``, reporting each rate's best validation
  loss and the epoch it came at. Each run is an ordinary meta-training run with its
  checkpoint under OUT/paper_sweep/, so an interrupted sweep continues where it
  stopped. The report found 0.004 best (validation loss 52.3 after 100 epochs) and
  most coarse rates collapsing to chance loss.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from learned_optim import load_weights
from learned_optim.baselines import LR_GRID
from learned_optim.metatrain import MetaTrainConfig, metatrain
from learned_optim.tasks import DataNotFoundError

from . import deep_wide
from .common import add_out_argument, resolve_out, draw_curves, fmt, markdown_table, provenance, pyplot, write_json

FINE_GRID = (0.002, 0.003, 0.004, 0.005, 0.006)
VARIANTS = {  # name: (cell, horizon)
    "40 units": ((1, 40, "sigmoid"), 100),
    "2 layers": ((2, 20, "sigmoid"), 100),
    "ReLU": ((1, 20, "relu"), 100),
    "200 steps": ((1, 20, "sigmoid"), 200),
}


def run_variants(args, rules, variants) -> dict:
    """Each distinct cell once, through deep_wide's cell cache (OUT/deep_wide_cells/): run at
    deep_wide's horizons with the same seeds, the cells are deep_wide's own runs, reused."""
    cells = {cell for cell, _ in variants.values()}
    horizons = sorted({h for _, h in variants.values()} | ({5, 10} if args.quick else {100, 200}))
    results = {cell: deep_wide.cached_cell(cell, rules, args, horizons, reuse=True) for cell in cells}
    return {
        name: {"cell": deep_wide.cell_name(cell), "steps": horizon, "results": results[cell]["results"][str(horizon)]}
        for name, (cell, horizon) in variants.items()
    }


def run_sweep(args) -> dict:
    sweep_dir = Path(args.out) / "paper_sweep"
    rows = {}
    for grid, epochs in (("fine", args.fine_epochs), ("coarse", args.coarse_epochs)):
        rates = FINE_GRID if grid == "fine" else LR_GRID
        if args.quick:
            rates = rates[:2]
        for lr in rates:
            overrides = dict(epochs=epochs, meta_lr=lr, device=args.device, divergence_factor=0)  # the report's plain recipe
            if args.quick:
                overrides.update(runs_per_epoch=2, steps=10, unroll=5, val_problems=2)
            config = MetaTrainConfig(task="mnist_mlp", **overrides)
            out = sweep_dir / f"{grid}-lr{lr:g}-e{epochs}.safetensors"
            if not out.exists():
                metatrain(config, out, resume=True, data_root=args.data_root, log=lambda m: None,
                          command=f"python -m benchmarks.paper (sweep: {grid} grid, meta-lr {lr:g}, {epochs} epochs)")
            card = load_weights(out).card
            history = card["validation"]["history"]
            rows[f"{grid} {lr:g}"] = {
                "grid": grid,
                "meta_lr": lr,
                "epochs": epochs,
                "best_validation": card["validation"]["best"],
                "best_epoch": card["validation"]["best_epoch"],
                "final_validation": history[-1]["val"],
                "untrained_validation": history[0]["val"],
                "wall_time_s": card["wall_time_s"],
                "history": [{"epoch": h["epoch"], "val": h["val"]} for h in history],
            }
    return rows


def to_markdown(data: dict) -> str:
    p = data["provenance"]
    parts = ["# The sources' experiments", "", f"`{p['command']}` — commit `{p['git_commit']}`, {p['device']}, {p['wall_time_s']} s."]
    if "variants" in data:
        parts += ["", "## Generalization variants of the MNIST experiment (final training loss, test accuracy)", ""]
        rows = []
        for name, block in data["variants"].items():
            ranked = sorted(block["results"].items(), key=lambda kv: kv[1]["final_loss"]["mean"])
            for i, (opt, r) in enumerate(ranked):
                acc = r["test_accuracy"]
                rows.append([f"{name} ({block['cell']}, {block['steps']} steps)" if i == 0 else "", opt, fmt(**r["final_loss"]),
                             fmt(**r["sum_of_losses"]), fmt(acc["mean"], acc["se"]) if acc else "diverged"])
        parts.append(markdown_table(["variant", "optimizer", "final loss", "sum of losses", "test accuracy"], rows))
    if "sweep" in data:
        parts += ["", "## Meta-learning-rate sweep, MNIST recipe (validation: mean sum of losses over 100 steps, 10 problems)", "",
                  "Chance-level training (loss 2.30 at every step) sums to about 230. The weight files and cards are in "
                  "paper_sweep/ (a rerun reuses them); their meta-training took "
                  f"{sum(r['wall_time_s'] for r in data['sweep'].values()) / 3600:.2f} h of wall time in all (the cards' "
                  "wall_time_s; the time above is this command's own).", ""]
        rows = [[r["grid"], f"{r['meta_lr']:g}", r["epochs"], f"{r['untrained_validation']:.4g}", f"{r['best_validation']:.4g}",
                 r["best_epoch"], f"{r['final_validation']:.4g}" if math.isfinite(r["final_validation"]) else "diverged",
                 f"{r['wall_time_s']:.0f} s"] for r in data["sweep"].values()]
        parts.append(markdown_table(["grid", "meta-lr", "epochs", "untrained", "best validation", "at epoch",
                                     "last epoch's validation", "wall time"], rows))
        parts += ["", "The report: 0.004 best, validation 52.3 after 100 epochs; most coarse-grid rates collapse to chance."]
    return "\n".join(parts) + "\n"


def plot(data: dict, out: Path) -> list[str]:
    """paper_variants.png (loss curves of each variant, ± s.e.) and paper_sweep.png (validation per epoch and rate)."""
    plt = pyplot()
    if plt is None:
        return []
    written = []
    out.mkdir(parents=True, exist_ok=True)
    if data.get("variants"):
        names = list(data["variants"])
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes.flat, names):
            block = data["variants"][name]
            curves = {k: (v["curve_mean"][: block["steps"]], v["curve_se"][: block["steps"]] if v["curve_se"] else None)
                      for k, v in block["results"].items()}
            draw_curves(ax, curves, f"{name} ({block['cell']})", legend=name == names[0])
        fig.tight_layout()
        fig.savefig(out / "paper_variants.png", dpi=90)
        plt.close(fig)
        written.append("paper_variants.png")
    if data.get("sweep"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
        for ax, grid in zip(axes.flat, ("fine", "coarse")):
            rows = [r for r in data["sweep"].values() if r["grid"] == grid]
            colors = plt.get_cmap("viridis")([i / max(1, len(rows) - 1) for i in range(len(rows))])  # one per rate
            for row, color in zip(rows, colors):
                history = [(h["epoch"], h["val"]) for h in row.get("history", []) if math.isfinite(h["val"])]
                if history:
                    ax.plot(*zip(*history), "o-", ms=3, color=color, label=f"meta-lr {row['meta_lr']:g}")
            ax.axhline(230.3, color="black", lw=0.8, ls=":", label="chance (2.303 per step)")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation: mean sum of losses")
            ax.set_title(f"{grid} grid")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "paper_sweep.png", dpi=90)
        plt.close(fig)
        written.append("paper_sweep.png")
    return written


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("all", "variants", "sweep"), default="all")
    parser.add_argument("--weights", default=deep_wide.DEFAULT_WEIGHTS)
    parser.add_argument("--eval-seeds", type=int, default=20, help="as benchmarks.deep_wide, whose cells are reused")
    parser.add_argument("--tune-seeds", type=int, default=5)
    parser.add_argument("--fine-epochs", type=int, default=100)
    parser.add_argument("--coarse-epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    add_out_argument(parser)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    resolve_out(args)
    if args.quick:
        args.eval_seeds, args.tune_seeds, args.fine_epochs, args.coarse_epochs = 2, 1, 1, 1
    started = time.perf_counter()
    data: dict = {"settings": {k: v for k, v in vars(args).items() if k != "out"}}
    try:
        if args.part in ("all", "variants"):
            variants = {k: (cell, min(h, 10) if args.quick else h) for k, (cell, h) in VARIANTS.items()}
            data["variants"] = run_variants(args, deep_wide.general_rules(args.weights), variants)
        if args.part in ("all", "sweep"):
            data["sweep"] = run_sweep(args)
    except DataNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    data["provenance"] = provenance("benchmarks.paper", argv, args.device, started)
    out = Path(args.out)
    write_json(out / "paper.json", data)
    text = to_markdown(data) + "".join(f"\n![{name}]({name})\n" for name in plot(data, out))
    (out / "paper.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
