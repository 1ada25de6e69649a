"""The command line: ``python -m learned_optim.metatrain --task mnist_mlp --out runs/mine.safetensors``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

import torch

from ..nets import NetConfig
from .config import BIAS_INITS, KEEPS, META_GRADS, META_LOSSES, MetaTrainConfig
from .train import metatrain


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    return values


def add_tensor_count_range(parser) -> None:
    """``--tensor-count-range MIN MAX`` (NetConfig.tensor_count_min / max), for metatrain's and distill's parsers."""
    net = NetConfig()
    parser.add_argument("--tensor-count-range", type=int, nargs=2, metavar=("MIN", "MAX"),
                        default=(net.tensor_count_min, net.tensor_count_max),
                        help="the count input reads T clipped to [MIN, MAX] (MAX 0: no upper bound); set it to the "
                             "tensor counts the task distribution shows, so that a net outside them reads a value the "
                             "rule saw (default 1 0: unclipped)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m learned_optim.metatrain", description="Meta-train an update rule (see docs/metatraining.md).")
    defaults, net_defaults = MetaTrainConfig(), NetConfig()
    parser.add_argument("--task", default=defaults.task, help="task to meta-train on: " + ", ".join(TASK_FLAGS))
    parser.add_argument("--out", required=True, help="weight file to write (NAME.safetensors; the card goes to NAME.json)")
    parser.add_argument("--name", default=None, help="name recorded in the card (default: the file name)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw/ (default: $LEARNED_OPTIM_DATA or ~/.cache/learned_optim/data)")
    group = parser.add_argument_group("recipe")
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--runs-per-epoch", type=int, default=defaults.runs_per_epoch)
    group.add_argument("--steps", type=int, default=defaults.steps, help="optimizee steps per run")
    group.add_argument("--unroll", type=int, default=defaults.unroll, help="truncation length")
    group.add_argument("--lr", type=float, default=defaults.meta_lr, help="meta-learning rate (Adam)")
    group.add_argument("--meta-grad-clip", type=float, default=defaults.meta_grad_clip, help="clip the meta-gradient norm (0: off)")
    group.add_argument("--val-problems", type=int, default=defaults.val_problems)
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--device", default=defaults.device, help="cpu or cuda")
    group.add_argument("--kernel", default=defaults.kernel, help="LSTM cell on the CPU: auto (C++ where it builds), cpp or python")
    group.add_argument("--problems-per-step", type=int, default=defaults.problems_per_step,
                       help="problems per meta-update, their meta-gradients averaged; under torchrun, split across the ranks")
    group.add_argument("--divergence-factor", type=float, default=defaults.divergence_factor,
                       help="an epoch validating above this x the best so far has diverged (0: off)")
    group.add_argument("--divergence-lr-factor", type=float, default=defaults.divergence_lr_factor,
                       help="after a divergence: restore the state before the epoch and multiply the meta-lr by this")
    group.add_argument("--keep", default=defaults.keep, choices=KEEPS,
                       help="which weights go to --out: best (the best validation's epoch) or last (the last epoch's)")
    group.add_argument("--max-lr-reductions", type=int, default=defaults.max_lr_reductions,
                       help="divergences tolerated before the run stops and keeps its best epoch")
    group.add_argument("--bias-init", default=defaults.bias_init, choices=BIAS_INITS,
                       help="uniform (torch.nn's init) or zero: the untrained rule then maps a zero gradient to a zero "
                       "update (needed where gradients are small, e.g. mnist_cnn with --preprocess none)")
    group.add_argument("--meta-loss", default=defaults.meta_loss, choices=META_LOSSES,
                       help="sum: the sum of the optimizee's losses per unroll (the paper's); log: the sum of their "
                       "logarithms, so that problems count by relative progress, not by their losses' scale")
    group.add_argument("--meta-grad", default=defaults.meta_grad, choices=META_GRADS,
                       help="the meta-gradient estimator: tbptt (truncated backpropagation, the paper's), es "
                       "(antithetic evolution strategies over whole runs; needs --unroll equal to --steps) or pes "
                       "(persistent evolution strategies over truncations of --unroll steps of long runs)")
    group.add_argument("--es-pairs", type=int, default=defaults.es_pairs,
                       help="es: perturbation pairs per training problem (each pair costs two runs)")
    group.add_argument("--min-steps", type=int, default=defaults.min_steps,
                       help="pes: each problem's run length is drawn log-uniformly from [--min-steps, --steps] "
                            "(0: every run has --steps)")
    group.add_argument("--es-sigma", type=float, default=defaults.es_sigma,
                       help="es: standard deviation of the Gaussian perturbation of each rule weight")
    group.add_argument("--init-from", default=defaults.init_from,
                       help="start from this weight file (a shipped name or a path) instead of a fresh init; "
                       "the network flags must match its card, except that they may add per-tensor inputs "
                       "(--tensor-rms-input, --tensor-count-input), which "
                       "start at zero weight")
    group = parser.add_argument_group("network")
    group.add_argument("--cell", default=net_defaults.cell, help="lstm or gru")
    group.add_argument("--layers", type=int, default=net_defaults.num_layers)
    group.add_argument("--hidden-size", type=int, default=net_defaults.hidden_size)
    group.add_argument("--preprocess", default=net_defaults.preprocess,
                       help="log_sign (the paper's), none (the raw gradient) or moments (moving averages: m/sqrt(v) "
                            "at three decays and g/sqrt(v), free of scale)")
    group.add_argument("--output", default=net_defaults.output,
                       help="linear (update = output_scale x readout), residual (Adam's direction m/sqrt(v), its "
                            "step output_scale, both adjusted by the readout) or scale (the same direction, only its "
                            "step adjusted); residual and scale need --preprocess moments")
    group.add_argument("--flip-gate", action="store_true",
                       help="residual only: its correction also closes where the gradient keeps flipping sign (two "
                            "more numbers of state per parameter; features.moment_gate)")
    group.add_argument("--p", type=float, default=net_defaults.p)
    group.add_argument("--output-scale", type=float, default=net_defaults.output_scale)
    group.add_argument("--step-decay-steps", type=float, default=net_defaults.step_decay_steps,
                       help="tau > 0: the nominal step at update t is output_scale / (1 + (t - 1) / tau)^power, a "
                            "schedule that needs no horizon (0: constant; needs --preprocess moments)")
    group.add_argument("--step-decay-power", type=float, default=net_defaults.step_decay_power)
    group.add_argument("--grad-norm", default=net_defaults.grad_norm,
                       help="none, or tensor: each optimizee tensor's gradient rescaled to RMS --grad-norm-target first")
    group.add_argument("--grad-norm-target", type=float, default=net_defaults.grad_norm_target)
    group.add_argument("--tensor-rms-input", action="store_true",
                       help="one more input per coordinate: log(RMS_tensor / RMS_net) / p of its tensor's gradient")
    group.add_argument("--tensor-count-input", action="store_true",
                       help="one more input, the same for every coordinate: log of the number of tensors the step "
                            "updates (how deep the optimizee is)")
    add_tensor_count_range(group)
    group = parser.add_argument_group("task options (only those of the chosen task apply)")
    group.add_argument("--dim", type=int, default=None, help="quadratic: dimension")
    group.add_argument("--init", default=None, help="quadratic: initial θ, zeros or normal")
    group.add_argument("--hidden", type=_positive_ints, default=None, help="mnist_mlp: hidden layer sizes, e.g. 20 or 100,100")
    group.add_argument("--activation", default=None, help="mnist_mlp: sigmoid, relu or tanh")
    group.add_argument("--family", default=None, help="mixture: a named family of tasks (tasks.FAMILIES), e.g. mlp-family")
    group.add_argument("--batch-size", type=int, default=None, help="mnist_mlp: images per step")
    group.add_argument("--dataset", default=None, help="mnist_mlp: mnist (default), fashion_mnist or digits")
    return parser


TASK_FLAGS = {
    "quadratic": ("dim", "init"),
    "mnist_mlp": ("hidden", "activation", "batch_size", "dataset"),
    "linreg": ("dim",),
    "rosenbrock": (),
    "two_moons": ("hidden",),
    "mnist_cnn": ("batch_size",),
    "mixture": ("family",),
}


def config_from_args(args: argparse.Namespace) -> MetaTrainConfig:
    if args.task not in TASK_FLAGS:
        raise ValueError(f"Unknown task: {args.task!r} (available: {', '.join(sorted(TASK_FLAGS))})")
    options = {}
    for flag in ("dim", "init", "hidden", "activation", "batch_size", "dataset", "family"):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in TASK_FLAGS[args.task]:
            raise ValueError(f"--{flag.replace('_', '-')} does not apply to task {args.task!r}")
        options[flag] = list(value) if isinstance(value, tuple) else value
    net = NetConfig(
        cell=args.cell,
        num_layers=args.layers,
        hidden_size=args.hidden_size,
        preprocess=args.preprocess,
        p=args.p,
        output_scale=args.output_scale,
        step_decay_steps=args.step_decay_steps,
        step_decay_power=args.step_decay_power,
        output=args.output,
        flip_gate=args.flip_gate,
        grad_norm=args.grad_norm,
        grad_norm_target=args.grad_norm_target,
        tensor_rms_input=args.tensor_rms_input,
        tensor_count_input=args.tensor_count_input,
        tensor_count_min=args.tensor_count_range[0],
        tensor_count_max=args.tensor_count_range[1],
    )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Invalid device: {args.device!r} (CUDA is not available here; use --device cpu)")
    return MetaTrainConfig(
        task=args.task,
        task_options=options,
        net=net,
        epochs=args.epochs,
        runs_per_epoch=args.runs_per_epoch,
        steps=args.steps,
        unroll=args.unroll,
        meta_lr=args.lr,
        meta_grad_clip=args.meta_grad_clip,
        val_problems=args.val_problems,
        seed=args.seed,
        device=args.device,
        kernel=args.kernel,
        problems_per_step=args.problems_per_step,
        divergence_factor=args.divergence_factor,
        divergence_lr_factor=args.divergence_lr_factor,
        max_lr_reductions=args.max_lr_reductions,
        keep=args.keep,
        bias_init=args.bias_init,
        meta_loss=args.meta_loss,
        init_from=args.init_from,
        meta_grad=args.meta_grad,
        es_pairs=args.es_pairs,
        es_sigma=args.es_sigma,
        min_steps=args.min_steps,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # started by torchrun
    try:
        config = config_from_args(args)
        if distributed:
            import torch.distributed as dist

            if config.device.startswith("cuda"):
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is this rank's GPU
            dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
        metatrain(
            config,
            args.out,
            resume=args.resume,
            data_root=args.data_root,
            command="python -m learned_optim.metatrain " + shlex.join(argv),
            name=args.name,
        )
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:  # DataNotFoundError is a FileNotFoundError
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    finally:
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
