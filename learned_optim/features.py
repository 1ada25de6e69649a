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


# -- per-tensor gradient normalization -------------------------------------------------
#
# A rule meta-trained on one net sees gradients of that net's typical size; in a deeper
# net the first layers' gradients are orders of magnitude smaller (1e-6 against 1e-2 in
# a 5-layer sigmoid MLP), and a rule that is not scale invariant all but stops moving
# them. With grad_norm="tensor" every parameter tensor's gradient is rescaled, before
# the features, to a root mean square of ``grad_norm_target``: the rule then sees every
# tensor at one scale, and the tensor's size is left to it to learn from the dynamics.
# The update is not rescaled back (it is a step in parameter space, as Adam's is).

GRAD_NORMS = ("none", "tensor")


def tensor_scale(grad: torch.Tensor, target: float, chunk_size: int | None = None,
                 dtype: torch.dtype | None = None, reduce_max=None, reduce_sum=None) -> torch.Tensor:
    """``target / RMS(grad)`` over the finite entries of one tensor's gradient (a 0-dim tensor, no sync).

    1 where there is nothing to normalize (all zero or no finite entry). Computed as
    amax · RMS(grad / amax), so gradients near float32's smallest normal still scale exactly.
    With ``chunk_size`` the gradient is read in pieces of that many entries (two passes), so
    the temporaries are bounded by the chunk, not the tensor; ``dtype``: compute in this dtype.
    When ``grad`` is one shard of a larger tensor, ``reduce_max`` and ``reduce_sum`` (in-place
    reductions of a 0-dim tensor across the shards) make the result the whole tensor's.
    """
    flat = grad.reshape(-1)
    n = flat.numel()
    step = max(1, chunk_size or n)
    dtype = dtype or flat.dtype
    zero = torch.zeros((), dtype=dtype, device=flat.device)

    def pieces():
        for start in range(0, n, step):
            piece = flat[start : start + step].to(dtype)
            finite = torch.isfinite(piece)
            yield torch.where(finite, piece, zero), finite

    amax, count = zero.clone(), torch.zeros((), dtype=torch.int64, device=flat.device)
    for clean, finite in pieces():
        amax = torch.maximum(amax, clean.abs().amax())
        count = count + finite.sum()
    if reduce_max is not None:
        reduce_max(amax)
        reduce_sum(count)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    total = zero.clone()
    for clean, _ in pieces():
        total = total + (clean / safe).square().sum()
    if reduce_sum is not None:
        reduce_sum(total)
    rms = amax * (total / count.clamp_min(1)).sqrt()
    # an RMS below target / (the dtype's largest value), as of an all-subnormal float32 gradient, would give an
    # infinite scale, and every scaled entry would be skipped as non-finite: the largest finite scale instead
    ratio = (target / torch.where(rms > 0, rms, torch.ones_like(rms))).clamp(max=torch.finfo(rms.dtype).max)
    return torch.where(rms > 0, ratio, torch.ones_like(rms))


def normalize_per_tensor(flat_grad: torch.Tensor, sizes, target: float) -> torch.Tensor:
    """A flat gradient made of tensors of ``sizes`` entries, each rescaled by its ``tensor_scale``."""
    pieces = flat_grad.split(list(sizes))
    return torch.cat([piece * tensor_scale(piece, target).to(piece.dtype) for piece in pieces])
