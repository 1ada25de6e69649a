"""Gradient preprocessing: what one coordinate's network sees of its gradient.

Andrychowicz et al. (2016), appendix A, feed each coordinate two numbers so
that gradients spanning many orders of magnitude reach the network on one scale:

    (log|g| / p, sign g)    if |g| >= e^-p
    (-1,         e^p g)     otherwise

With p = 10 both branches meet at |g| = e^-p (first feature -1, second ±1), so
the map is continuous. ``"none"`` passes the raw gradient as a single feature,
the input of the gradient-only RNNs of Maheswaranathan et al.
"""

from __future__ import annotations

import math

import torch

PREPROCESSORS = ("log_sign", "none")


def num_features(preprocess: str) -> int:
    """Number of input features per coordinate for a preprocessing name."""
    if preprocess == "log_sign":
        return 2
    if preprocess == "none":
        return 1
    raise ValueError(f"Invalid preprocess: {preprocess!r} (allowed: {', '.join(PREPROCESSORS)})")


def log_sign(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """The paper's two-feature encoding of a flat gradient, shape (N,) -> (N, 2)."""
    threshold = math.exp(-p)
    magnitude = grad.abs()
    large = magnitude >= threshold
    # clamp keeps log finite on the small branch; torch.where discards that value anyway
    log_part = torch.where(large, magnitude.clamp_min(threshold).log() / p, -1.0)
    sign_part = torch.where(large, grad.sign(), grad * math.exp(p))
    return torch.stack((log_part, sign_part), dim=1)


def preprocess(grad: torch.Tensor, preprocess: str = "log_sign", p: float = 10.0) -> torch.Tensor:
    """Features for a flat gradient: shape (N,) -> (N, num_features(preprocess))."""
    if preprocess == "log_sign":
        return log_sign(grad, p)
    if preprocess == "none":
        return grad.unsqueeze(1)
    raise ValueError(f"Invalid preprocess: {preprocess!r} (allowed: {', '.join(PREPROCESSORS)})")
