"""Reverse-engineering tools for coordinatewise update rules (Maheswaranathan et al., 2021).

    from learned_optim.analysis import LearnedRule, Momentum, effective_lr, fixed_points, linearize
    rule = LearnedRule("default")
    fps = fixed_points(rule, initial_states)           # states with F(h*, 0) = h*
    lin = linearize(rule, fps.points[0])               # eigenmodes read as momentum terms
"""

from .rules import Adam, ClippedGradientDescent, GradientDescent, LearnedRule, Momentum, RMSProp, Rule
from .tools import (
    Autonomous,
    FixedPoints,
    Linearization,
    Saturation,
    autonomous,
    effective_lr,
    fixed_points,
    linearize,
    saturation,
    update_function,
)

__all__ = [
    "Adam", "Autonomous", "ClippedGradientDescent", "FixedPoints", "GradientDescent", "LearnedRule", "Linearization",
    "Momentum", "RMSProp", "Rule", "Saturation", "autonomous", "effective_lr", "fixed_points", "linearize",
    "saturation", "update_function",
]
