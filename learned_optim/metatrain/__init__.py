"""Meta-train an update rule: ``python -m learned_optim.metatrain --task mnist_mlp --out runs/mine.safetensors``.

    config.py       the recipe (MetaTrainConfig) and the rule's starting weights (fresh, or --init-from a file)
    rollout.py      one optimizee run under a rule, the rule's step exactly as LearnedOptimizer takes it
    estimators.py   meta-gradients: truncated backpropagation through time, antithetic evolution strategies
    group.py        several processes (torchrun): meta-gradients and validation summed across ranks
    checkpoints.py  what --resume needs, written atomically after every epoch
    train.py        the loop: epochs, validation, divergence handling, the weight file and its card
    cli.py          the command line

See docs/metatraining.md.
"""

from .checkpoints import checkpoint_path, load_checkpoint, log_path, save_checkpoint
from .cli import build_parser, config_from_args, main
from .config import MetaTrainConfig, initial_theta, start_weights, train_seed, widen
from .estimators import es_gradient, es_runs, meta_step, train_run, train_runs
from .rollout import Optimizee, cell_impl, rollout, rule_step, run_meta_loss
from .train import metatrain, validate

__all__ = [
    "MetaTrainConfig", "Optimizee", "build_parser", "cell_impl", "checkpoint_path", "config_from_args",
    "es_gradient", "es_runs", "initial_theta", "load_checkpoint", "log_path", "main", "meta_step", "metatrain",
    "rollout", "rule_step", "run_meta_loss", "save_checkpoint", "start_weights", "train_run", "train_runs",
    "train_seed", "validate", "widen",
]
