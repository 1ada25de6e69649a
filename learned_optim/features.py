"""The rule's inputs: ONE pipeline for the optimizer, the meta-trainer, distillation and the analysis tools.

    per tensor:      (RMS, count) of its gradient's finite entries     tensor_rms (or a kernel's copy of it)
    per tensor:      (scale, input values) from those of all tensors    tensor_terms
    per coordinate:  features of the (scaled) gradient, and the         rule_inputs
                     tensor's input values beside them

The optimizer computes the per-tensor statistics with the fastest reduction its device has and
hands them to ``tensor_terms``; the meta-trainer and distillation go through ``flat_rule_inputs``,
which does all three steps on an optimizee's flat gradient; the analysis tools call ``nets.rule_step``
with input values they choose. A "moments" rule's inputs come from moving averages it keeps in its
state (``moment_features``), so ``nets.rule_step`` computes them beside the network. The C++ and Triton kernels compute the per-coordinate features
themselves (equal to ``preprocess``, by test) and take the per-tensor values as a shift of the
first layer's biases.

Gradient preprocessing: what one coordinate's network sees of its gradient.

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
from typing import NamedTuple

import torch

PREPROCESSORS = ("log_sign", "none", "moments")
MOMENT_BETAS = (0.9, 0.99, 0.999)  # "moments": the decays of the gradient's moving averages it reads
SECOND_MOMENT_BETA = 0.999  # and of its square's
# What keeps m / sqrt(v) finite and small where v is 0 or denormal: where every gradient was 0 (then m = 0 too), and
# where a gradient below about 1e-21 has a square that float32 rounds to 0 while m keeps it (without it, such a
# coordinate would read a ratio of 1e7 and jump). A gradient above about 1e-14 does not feel it.
TINY = 1e-16
TIME_SCALE = math.log1p(1e4)  # the time input is log(1 + t) / this: 0 at the start, 1 at step 10,000
# a "residual" rule with flip_gate (nets.py) keeps c, a moving average (decay FLIP_DECAY) of the product of consecutive
# gradients over v_hat, each clipped to [-1, 1]; its correction is closed where c <= FLIP_CLOSED, open where c >= 0
FLIP_DECAY = 0.9
FLIP_CLOSED = -0.3


def num_features(preprocess: str) -> int:
    """Number of input features per coordinate for a preprocessing name."""
    if preprocess == "log_sign":
        return 2
    if preprocess == "none":
        return 1
    if preprocess == "moments":
        return len(MOMENT_BETAS) + 2
    raise ValueError(f"Invalid preprocess: {preprocess!r} (allowed: {', '.join(PREPROCESSORS)})")


def feature_state_width(preprocess: str, flip_gate: bool = False) -> int:
    """Numbers per coordinate a preprocessing keeps between steps: the moving averages of "moments" (and, with
    ``flip_gate``, the last gradient and the flip average c), else none."""
    if preprocess != "moments":
        return 0
    return len(MOMENT_BETAS) + 1 + 2 * bool(flip_gate)


# -- "moments": what a rule that must converge reads ---------------------------------------------------------------
#
# Moving averages of the gradient at three decays and of its square, kept per coordinate (bias-corrected, as Adam's),
# and the time:
#
#     x_k = m_k / sqrt(v)    (k: decay 0.9, 0.99, 0.999),     x_4 = g / sqrt(v),     x_5 = log(1 + t) / log(1 + 10^4)
#
# Free of scale (a gradient times c gives the same x, for gradients above about 1e-14: see TINY), bounded, and they
# shrink as the gradient turns to noise around a minimum: |m_k| / sqrt(v) falls toward sqrt((1 - b_k) / (1 + b_k)),
# most for the slowest average, while it stays near 1 on a steady slope. x_1 is Adam's own step direction, which a "residual" output (nets.py) steps along. The
# time lets a rule learn a schedule that needs no horizon: it grows without bound, but slowly (1.25 at step 10^5).
#
# With a flip gate the state also holds the last gradient g' and c = FLIP_DECAY c + (1 - FLIP_DECAY) clip(x_4 g' / r),
# r = sqrt(v_hat) + TINY: near 1 on a steady slope, near 0 where the gradient is noise, near -1 where it flips sign at
# every step (an oscillation across a valley, as in full-batch runs whose step is too large for the curvature).


def moment_features(grad: torch.Tensor, moments: torch.Tensor, step) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (N, 5), the new moments) for a flat gradient (N,) and the moving averages before it: (N, 4) as
    [m_0.9, m_0.99, m_0.999, v], or (N, 6) as [..., g', c] for a rule with a flip gate (the last gradient and the flip
    average, see above); ``step``: the count of this update (>= 1), an int or one per row (N,)."""
    k = len(MOMENT_BETAS)
    g = grad.unsqueeze(1)
    betas = torch.tensor(MOMENT_BETAS, dtype=grad.dtype, device=grad.device)
    m = moments[:, :k] * betas + g * (1 - betas)
    v = moments[:, k : k + 1] * SECOND_MOMENT_BETA + g.square() * (1 - SECOND_MOMENT_BETA)
    t = torch.as_tensor(step, dtype=grad.dtype, device=grad.device).reshape(-1, 1)
    m_hat = m / (1 - betas**t)
    root = _corrected_root(v, t) + TINY
    time = (t.log1p() / TIME_SCALE).expand(g.shape[0], 1)
    x = torch.cat([m_hat / root, g / root, time], dim=1)
    if moments.shape[1] == k + 1:
        return x, torch.cat([m, v], dim=1)
    agreement = (x[:, k : k + 1] * moments[:, k + 1 : k + 2] / root).clamp(-1.0, 1.0)
    c = moments[:, k + 2 :] * FLIP_DECAY + agreement * (1 - FLIP_DECAY)
    return x, torch.cat([m, v, g, c], dim=1)


def moment_gate(moments: torch.Tensor, step) -> torch.Tensor:
    """(N,): what a "residual" readout multiplies its correction by, from the moving averages after this step's
    update. sqrt(v_hat) / (sqrt(v_hat) + TINY): 1 (in float32, exactly) wherever the gradient has been above about
    1e-14, falling to 0 where it has always been 0, so that a coordinate without a gradient stays where it is (as in
    Adam) instead of drifting by the correction the LSTM's biases give at zero input. With a flip gate (moments
    (N, 6)), times clip(1 - c / FLIP_CLOSED, 0, 1): the correction closes where the gradient keeps flipping sign, so
    that the rule steps along Adam's direction alone there, which shrinks as the oscillation cancels in m."""
    k = len(MOMENT_BETAS)
    t = torch.as_tensor(step, dtype=moments.dtype, device=moments.device).reshape(-1)
    root = _corrected_root(moments[:, k], t)
    gate = root / (root + TINY)
    if moments.shape[1] == k + 1:
        return gate
    return gate * (1 - moments[:, k + 2] / FLIP_CLOSED).clamp(0.0, 1.0)


def _corrected_root(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sqrt(v_hat): the RMS of the gradient, bias-corrected as Adam's for update ``t``."""
    return (v / (1 - SECOND_MOMENT_BETA**t)).sqrt()


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
FLOAT32_MAX = torch.finfo(torch.float32).max


def tensor_rms(grad: torch.Tensor, chunk_size: int | None = None, dtype: torch.dtype | None = None,
               reduce_max=None, reduce_sum=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMS, count) over the finite entries of one tensor's gradient: 0-dim tensors, no sync.

    RMS 0 where there is no finite nonzero entry. Computed as amax · RMS(grad / amax), so
    gradients near float32's smallest normal are still exact. With ``chunk_size`` the gradient
    is read in pieces of that many entries (two passes), so the temporaries are bounded by the
    chunk, not the tensor; ``dtype``: compute in this dtype. When ``grad`` is one shard of a
    larger tensor, ``reduce_max`` and ``reduce_sum`` (in-place reductions of a 0-dim tensor
    across the shards) make both the whole tensor's.
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
    return amax * (total / count.clamp_min(1)).sqrt(), count


def scale_for_rms(rms: "torch.Tensor | float", target: float) -> "torch.Tensor | float":
    """``target / rms``, 1 where ``rms`` is 0, and at most float32's largest value: floats in, a float out; a 0-dim
    tensor in, a 0-dim float64 tensor out (no sync).

    An RMS below target / (float32's largest value), as of an all-subnormal float32 gradient,
    would give an infinite scale, and every scaled entry would be skipped as non-finite: the
    largest finite scale instead.
    """
    if isinstance(rms, float):
        return min(target / rms, FLOAT32_MAX) if rms > 0 else 1.0
    # divided in float64: in float32 torch may divide as target * (1 / rms), and 1 / rms overflows for an RMS
    # below 1 / (float32's largest value) although target / rms is finite (the C++ kernel divides in double)
    rms = torch.as_tensor(rms).double()
    safe = torch.where(rms > 0, rms, torch.ones_like(rms))
    return torch.where(rms > 0, (target / safe).clamp(max=FLOAT32_MAX), torch.ones_like(rms))


def net_rms(rms_and_counts) -> "torch.Tensor | float":
    """The RMS over all the finite entries of several tensors, from each one's (RMS, count).

    Floats in, a float out (the CPU kernel's values); 0-dim tensors in, a 0-dim float64 tensor on
    the first one's device out (no sync).
    """
    pairs = list(rms_and_counts)
    if all(isinstance(r, float) for r, _ in pairs):
        total, count = math.fsum(c * r * r for r, c in pairs), sum(int(c) for _, c in pairs)
        return math.sqrt(total / max(count, 1))
    device = next(torch.as_tensor(r).device for r, _ in pairs)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for r, c in pairs:
        r = torch.as_tensor(r, dtype=torch.float64).to(device)
        c = torch.as_tensor(c, dtype=torch.float64).to(device)
        total, count = total + c * r * r, count + c
    return (total / count.clamp_min(1)).sqrt()


# -- where a tensor sits in the net ---------------------------------------------------------
#
# Per-tensor normalization shows the rule every tensor at one scale, and with it the rule
# cannot tell a net's output layer (whose gradients are often ten times the hidden layers')
# from its first layer. With ``tensor_rms_input`` each coordinate gets one more input, the
# same for all of a tensor's coordinates: log(RMS_tensor / RMS_net) / p, on the scale of
# log_sign's first feature, RMS_net over all the gradients of the step. Invariant to a common
# factor on all gradients, like the normalization. A tensor with no finite nonzero entry (or a
# net with none) gets 0.
#
# With ``tensor_count_input`` every coordinate also sees log(T), T the number of tensors the
# step updates (those with a gradient): 4 for a one-hidden-layer MLP with biases, 12 for a
# five-layer one. A rule reads T clipped to [tensor_count_min, tensor_count_max] (NetConfig):
# log T outside the range its training nets showed is a value it never saw (a one-tensor
# quadratic reads log 1 = 0 where a rule trained on MLPs saw log 4 and up), and the clip makes
# it read the nearest value it did see. Unlike every other input, it depends on what else the
# optimizer holds: splitting a model's parameters over two optimizers changes it.


def log_rms_ratio(rms: "torch.Tensor | float", whole: "torch.Tensor | float", p: float) -> "torch.Tensor | float":
    """``log(rms / whole) / p``, 0 where either is 0."""
    if isinstance(rms, float) and isinstance(whole, float):
        return math.log(rms / whole) / p if rms > 0 and whole > 0 else 0.0
    rms, whole = torch.as_tensor(rms, dtype=torch.float64), torch.as_tensor(whole, dtype=torch.float64).to(
        torch.as_tensor(rms).device)
    ok = (rms > 0) & (whole > 0)
    one = torch.ones_like(rms)
    return torch.where(ok, (torch.where(ok, rms, one) / torch.where(ok, whole, one)).log() / p, torch.zeros_like(rms))


def clipped_tensor_count(count: int, config) -> int:
    """The tensor count T as the count input reads it: clipped to [config.tensor_count_min, config.tensor_count_max]
    (no upper bound where that is 0)."""
    count = max(count, config.tensor_count_min)
    return min(count, config.tensor_count_max) if config.tensor_count_max else count


class TensorTerms(NamedTuple):
    """What a rule takes per tensor: the factor on its gradient (None without grad_norm) and its per-tensor input
    values, in NetConfig.TENSOR_INPUTS order (None for a rule without such inputs). Floats for floats in, 0-dim
    float64 tensors for tensors in."""

    scale: "float | torch.Tensor | None"
    inputs: "tuple | None"


def needs_stats(config) -> bool:
    """Whether a rule of ``config`` needs its tensors' gradient statistics (for a scale or an input)."""
    return config.grad_norm == "tensor" or bool(config.tensor_inputs)


def tensor_terms(stats, config) -> list[TensorTerms]:
    """Each tensor's ``TensorTerms`` from every tensor's (RMS, count) of its raw gradient (``stats``, in the order
    of the step's tensors: all of them, since the per-tensor inputs compare each tensor with the whole net)."""
    stats = list(stats)
    scales = [scale_for_rms(rms, config.grad_norm_target) if config.grad_norm == "tensor" else None
              for rms, _ in stats]
    if not config.tensor_inputs:
        return [TensorTerms(scale, None) for scale in scales]
    count = (math.log(clipped_tensor_count(len(stats), config)),) * config.tensor_count_input
    if not config.tensor_rms_input:
        return [TensorTerms(scale, count) for scale in scales]
    whole = net_rms(stats)
    return [TensorTerms(scale, (log_rms_ratio(rms, whole, config.p),) + count) for scale, (rms, _) in zip(scales, stats)]


def rule_inputs(grad: torch.Tensor, config, column: "torch.Tensor | None" = None) -> torch.Tensor:
    """What a rule of ``config`` (a NetConfig) takes per coordinate of a flat gradient (already scaled): its
    preprocessing, and for a rule with per-tensor inputs (``config.tensor_inputs`` of them) the ``column`` (N, k)
    beside it. Shape (N, config.input_size)."""
    return beside_column(preprocess(grad, config.preprocess, config.p), config, column)


def beside_column(x: torch.Tensor, config, column: "torch.Tensor | None") -> torch.Tensor:
    """The per-coordinate features ``x`` with a rule's per-tensor input ``column`` beside them, where it has any."""
    if config.tensor_inputs:
        x = torch.cat([x, column.to(x.dtype)], dim=1)
    return x


def flat_terms(flat_grad: torch.Tensor, sizes, config) -> "tuple[torch.Tensor, torch.Tensor | None]":
    """For a flat gradient made of tensors of ``sizes`` entries, as LearnedOptimizer computes them: the gradient as
    the rule sees it (each tensor times its scale under grad_norm="tensor") and the per-tensor input columns
    (N, config.tensor_inputs), None for a rule without such inputs."""
    pieces = flat_grad.split(list(sizes))
    terms = tensor_terms([tensor_rms(piece) for piece in pieces], config) if needs_stats(config) else None
    if config.grad_norm == "tensor":
        flat_grad = torch.cat([piece * t.scale.to(piece.dtype) for piece, t in zip(pieces, terms)])
    column = None
    if config.tensor_inputs:
        rows = torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in t.inputs]) for t in terms])
        column = rows.to(device=flat_grad.device, dtype=flat_grad.dtype).repeat_interleave(
            torch.tensor(list(sizes), device=flat_grad.device), dim=0)
    return flat_grad, column


def flat_rule_inputs(flat_grad: torch.Tensor, sizes, config) -> torch.Tensor:
    """The rule's inputs (N, config.input_size) for a flat gradient made of tensors of ``sizes`` entries, as
    LearnedOptimizer computes them: ``flat_terms``, then ``rule_inputs`` (the meta-trainer's and distillation's)."""
    seen, column = flat_terms(flat_grad, sizes, config)
    return rule_inputs(seen, config, column)


def normalize_per_tensor(flat_grad: torch.Tensor, sizes, target: float) -> torch.Tensor:
    """A flat gradient made of tensors of ``sizes`` entries, each rescaled to RMS ``target`` (grad_norm="tensor")."""
    return torch.cat([piece * scale_for_rms(tensor_rms(piece)[0], target).to(piece.dtype)
                      for piece in flat_grad.split(list(sizes))])
