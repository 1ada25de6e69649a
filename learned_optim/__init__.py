"""learned_optim: learned optimizers as drop-in torch.optim optimizers.

    from learned_optim import LearnedOptimizer
    opt = LearnedOptimizer(model.parameters())        # the shipped default rule; lr=1 is the rule as trained

Meta-train your own with ``python -m learned_optim.metatrain``; look inside a rule with
``python -m learned_optim.analyze``. See the README and docs/.
"""

from .cpp_build import build as build_kernels
from .nets import NetConfig
from .optimizer import LearnedOptimizer
from .pretrained import RuleWeights, list_pretrained, load_weights, pretrained_card, save_weights

__version__ = "0.5.0"

__all__ = [
    "LearnedOptimizer",
    "NetConfig",
    "RuleWeights",
    "build_kernels",
    "list_pretrained",
    "load_weights",
    "pretrained_card",
    "save_weights",
    "__version__",
]
