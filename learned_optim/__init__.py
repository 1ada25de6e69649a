"""learned_optim: learned optimizers as drop-in torch.optim optimizers.

    from learned_optim import LearnedOptimizer
    opt = LearnedOptimizer(model.parameters())        # the shipped default rule

Meta-train your own with ``python -m learned_optim.metatrain``; see the README.
"""

from .nets import NetConfig
from .optimizer import LearnedOptimizer
from .pretrained import RuleWeights, list_pretrained, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "LearnedOptimizer",
    "NetConfig",
    "RuleWeights",
    "list_pretrained",
    "load_weights",
    "save_weights",
    "__version__",
]
