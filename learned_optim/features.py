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

# Partial equalization (``grad_norm_power`` a < 1): each tensor's factor is
#
#     target / (RMS_tensor^a · RMS_net^(1-a))
#
# where RMS_net is over all the gradients the step updates. a = 1 is the per-tensor
# rescaling above; a = 0 one factor for the whole net, which keeps the ratios between
# tensors (a net's output layer often has gradients ten times its first layer's) but
# not deep nets' orders of magnitude; between them the rule sees part of each
# tensor's size. Every gradient times one constant still leaves what the rule sees
# unchanged, whatever a.


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


def scale_for_rms(rms: torch.Tensor, target: float) -> torch.Tensor:
    """``target / rms``, 1 where ``rms`` is 0, and at most the dtype's largest finite value.

    An RMS below target / (the dtype's largest value), as of an all-subnormal float32 gradient,
    would give an infinite scale, and every scaled entry would be skipped as non-finite: the
    largest finite scale instead.
    """
    # divided in float64: in float32 torch may divide as target * (1 / rms), and 1 / rms overflows for an RMS
    # below 1 / (float32's largest value) although target / rms is finite (the C++ kernel divides in double)
    safe = torch.where(rms > 0, rms, torch.ones_like(rms)).double()
    ratio = (target / safe).clamp(max=torch.finfo(rms.dtype).max).to(rms.dtype)
    return torch.where(rms > 0, ratio, torch.ones_like(rms))


def tensor_scale(grad: torch.Tensor, target: float, chunk_size: int | None = None,
                 dtype: torch.dtype | None = None, reduce_max=None, reduce_sum=None) -> torch.Tensor:
    """``target / RMS(grad)`` over the finite entries of one tensor's gradient (a 0-dim tensor, no sync).

    1 where there is nothing to normalize (all zero or no finite entry); see ``tensor_rms`` for
    the arguments and ``scale_for_rms`` for the cap.
    """
    rms, _ = tensor_rms(grad, chunk_size, dtype, reduce_max, reduce_sum)
    return scale_for_rms(rms, target)


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


def partial_scale(rms: "torch.Tensor | float", whole: "torch.Tensor | float", target: float,
                  power: float) -> "torch.Tensor | float":
    """``target / (rms^power · whole^(1-power))`` as the product of the two capped scales
    (``scale_for_rms``), so a tensor (or net) with nothing to normalize contributes 1."""
    if isinstance(rms, float) and isinstance(whole, float):
        big = torch.finfo(torch.float32).max
        own = min(target / rms, big) if rms > 0 else 1.0
        net = min(target / whole, big) if whole > 0 else 1.0
        return min(own**power * net ** (1 - power), big)
    rms, whole = torch.as_tensor(rms, dtype=torch.float64), torch.as_tensor(whole, dtype=torch.float64)
    own, net = scale_for_rms(rms, target), scale_for_rms(whole.to(rms.device), target)
    return (own**power * net ** (1 - power)).clamp(max=torch.finfo(torch.float32).max)


def normalize_per_tensor(flat_grad: torch.Tensor, sizes, target: float, power: float = 1.0) -> torch.Tensor:
    """A flat gradient made of tensors of ``sizes`` entries, each rescaled by its ``tensor_scale``
    (``power`` 1), or by its partial scale against the whole flat gradient's RMS (``power`` < 1)."""
    pieces = flat_grad.split(list(sizes))
    if power == 1.0:
        return torch.cat([piece * tensor_scale(piece, target).to(piece.dtype) for piece in pieces])
    stats = [tensor_rms(piece) for piece in pieces]
    whole = net_rms(stats)
    return torch.cat([piece * partial_scale(rms, whole, target, power).to(piece.dtype)
                      for piece, (rms, _) in zip(pieces, stats)])


# -- where a tensor's gradient sits in the net -------------------------------------------
#
# Per-tensor normalization shows the rule every tensor at one scale, and with it the rule
# cannot tell a net's output layer (whose gradients are often ten times the hidden layers')
# from its first layer. With ``tensor_rms_input`` each coordinate gets one more input, the
# same for all of a tensor's coordinates: log(RMS_tensor / RMS_net) / p, on the scale of
# log_sign's first feature, RMS_net over all the gradients of the step (``tensor_input_scale`` s > 0:
# s log(RMS_tensor / RMS_net) instead, a larger input whose weights a meta-optimizer moves in larger effect). Invariant to a
# common factor on all gradients, like the normalization. A tensor with no finite nonzero
# entry (or a net with none) gets 0.
#
# That value does not say what kind of net the tensor is in: an output layer sits at about
# +0.2 in a one-hidden-layer MLP and in a five-layer one alike. With ``net_scale_input``
# every coordinate also sees one number for the whole net, the count-weighted RMS of those
# values over its tensors, sqrt(sum n_t c_t^2 / sum n_t): 0 when every tensor's gradients
# are at one scale, larger the more they differ (deeper sigmoid nets, whose first layers'
# gradients are far below the last's). Also invariant to a common factor.
#
# Neither says how deep the net is in a way that is the same for a sigmoid net and its ReLU
# twin. With ``tensor_count_input`` every coordinate also sees log(T), T the number of tensors
# the step updates (those with a gradient): 4 for a one-hidden-layer MLP with biases, 12 for
# a five-layer one. A structure input, not a scale: it does not change as training goes on.
# A rule reads T clipped to [tensor_count_min, tensor_count_max] (NetConfig): log T outside the
# range its training members showed is a value it never saw (a one-tensor quadratic reads
# log 1 = 0 where a rule trained on MLPs saw log 4 and up; session 32 of the screen), and the
# clip makes it read the nearest value it did see.
#
# None of these says how noisy the gradient is: a rule trained at batch 128 takes steps about
# four times too large on ReLU nets at batch 32-64 (session 28 of the mlp_family screen), where
# successive gradients disagree. With ``grad_noise_input`` every coordinate also sees
# log(RMS(m_hat_tensor) / (RMS(g_tensor) sqrt((1-b)/(1+b)))), m an exponential moving average
# (b = GRAD_NOISE_BETA) of the tensor's raw gradient kept per coordinate, m_hat its
# bias-corrected value: RMS(m_hat) against what it would be if successive gradients were
# independent noise around zero (RMS(g) sqrt((1-b)/(1+b)) once the EMA is warm). About 0 for such
# noise, log sqrt((1+b)/(1-b)) = 1.47 for b = 0.9 when successive gradients agree (m_hat ~ g; so
# on the first step, m_hat = g), more while the gradient shrinks. Centred on noise so that its
# weights learn from how far a tensor is from noise, not from a constant offset (the default's
# own runs read about -1.4 uncentred after 20 steps, on every net; session30/noise_values.out).
# 0 for a tensor (or EMA) with no finite nonzero entry and before any update. Invariant to a
# common factor on all gradients, like the others; the one per-tensor input with a state.

GRAD_NOISE_BETA = 0.9


def update_grad_ema(ema: torch.Tensor, grad: torch.Tensor, beta: float = GRAD_NOISE_BETA,
                    chunk_size: int | None = None) -> None:
    """``ema <- beta * ema + (1 - beta) * grad`` in place, on the entries where ``grad`` is finite (the others keep
    their value, as the rule skips those coordinates); in pieces of ``chunk_size`` entries (bounded temporaries)."""
    flat_ema, flat_grad = ema.view(-1), grad.reshape(-1)
    n = flat_ema.numel()
    step = max(1, chunk_size or n)
    for start in range(0, n, step):
        e, g = flat_ema[start : start + step], flat_grad[start : start + step].to(ema.dtype)
        e.copy_(torch.where(torch.isfinite(g), e * beta + g * (1 - beta), e))


def grad_noise_value(ema_rms, updates: int, grad_rms, beta: float = GRAD_NOISE_BETA):
    """A tensor's ``grad_noise_input``: log(RMS(m) / (1 - beta^updates) / (RMS(g) sqrt((1 - beta) / (1 + beta)))),
    0 where either RMS is 0 or before any update. Floats in, a float out; 0-dim tensors in, a 0-dim float64 tensor
    out (no sync)."""
    if updates < 1:
        return 0.0 if isinstance(grad_rms, float) else torch.zeros((), dtype=torch.float64, device=grad_rms.device)
    factor = math.sqrt((1.0 + beta) / (1.0 - beta)) / (1.0 - beta**updates)
    return log_rms_ratio(ema_rms * factor, grad_rms, 1.0)


# -- a step relative to the tensor's own scale ----------------------------------------------
#
# Per-tensor normalization makes a rule's steps the same size in every tensor. A net's
# tensors are not on one scale: in the paper's 784-20-10 MLP the output layer's weights
# (fan-in 20) start about six times as large as the first layer's (fan-in 784), and a
# rule meta-trained on that net alone moves them about ten times as far. With
# ``relative_step`` b > 0 each tensor's update is multiplied by
#
#     m_t = clamp(RMS(w_t) / RMS(w_net), 1/R, R)^b,     R = RELATIVE_STEP_RANGE,
#
# RMS(w_net) over all the weights the step updates (count-weighted), so a net whose tensors
# share one scale takes the rule's plain steps, and every weight times one constant leaves
# m unchanged. The clamp keeps a tensor that starts at zero (a bias) moving (at R^-b of a
# typical step) and bounds the factor of one far larger than the rest (a norm layer's
# gains at 1). A net whose weights are all zero (or not finite) takes m = 1. As Adafactor's
# relative step size, but on a learned rule's update, and relative to the net.

RELATIVE_STEP_RANGE = 10.0


def relative_step_factors(stats, power: float) -> list:
    """Each tensor's ``m_t`` from its weights' (RMS, count) in ``stats`` (``tensor_rms`` of the parameter, or the
    kernels' floats): floats in, floats out; 0-dim tensors in, 0-dim float64 tensors on the first one's device out
    (no sync). All 1 for ``power`` 0."""
    stats = list(stats)
    if power == 0:
        return [1.0] * len(stats)
    whole = net_rms(stats)
    low, high = 1.0 / RELATIVE_STEP_RANGE, RELATIVE_STEP_RANGE
    if isinstance(whole, float):
        if not (whole > 0 and math.isfinite(whole)):
            return [1.0] * len(stats)
        return [min(max(rms / whole, low), high) ** power for rms, _ in stats]
    ok = (whole > 0) & torch.isfinite(whole)
    safe = torch.where(ok, whole, torch.ones_like(whole))
    out = []
    for rms, _ in stats:
        ratio = (torch.as_tensor(rms, dtype=torch.float64).to(whole.device) / safe).clamp(low, high)
        out.append(torch.where(ok, ratio**power, torch.ones_like(ratio)))
    return out


def relative_step_column(tensors, power: float) -> "torch.Tensor | None":
    """``m_t`` of a net's parameter ``tensors``, one entry per coordinate in their order, flat (N,), in float32 on the
    first tensor's device; None for ``power`` 0."""
    if power == 0:
        return None
    tensors = list(tensors)
    stats = [tensor_rms(t.detach()) for t in tensors]
    factors = torch.stack([torch.as_tensor(m, dtype=torch.float64) for m in relative_step_factors(stats, power)])
    device = tensors[0].device
    return factors.to(device=device, dtype=torch.float32).repeat_interleave(
        torch.tensor([t.numel() for t in tensors], device=device))


def rule_inputs(grad: torch.Tensor, config, column: "torch.Tensor | None" = None) -> torch.Tensor:
    """What a rule of ``config`` (a NetConfig) takes per coordinate of a flat gradient: its preprocessing, and for a
    rule with per-tensor inputs (``config.tensor_inputs`` of them) the ``column`` (N, k) beside it.
    Shape (N, config.input_size)."""
    x = preprocess(grad, config.preprocess, config.p)
    if config.tensor_inputs:
        x = torch.cat([x, column.to(x.dtype)], dim=1)
    return x


def log_rms_ratio(rms: "torch.Tensor | float", whole: "torch.Tensor | float", p: float) -> "torch.Tensor | float":
    """``log(rms / whole) / p``, 0 where either is 0."""
    if isinstance(rms, float) and isinstance(whole, float):
        return math.log(rms / whole) / p if rms > 0 and whole > 0 else 0.0
    rms, whole = torch.as_tensor(rms, dtype=torch.float64), torch.as_tensor(whole, dtype=torch.float64).to(
        torch.as_tensor(rms).device)
    ok = (rms > 0) & (whole > 0)
    one = torch.ones_like(rms)
    return torch.where(ok, (torch.where(ok, rms, one) / torch.where(ok, whole, one)).log() / p, torch.zeros_like(rms))


def net_scale_spread(ratios, counts) -> "torch.Tensor | float":
    """``sqrt(sum n_t c_t^2 / sum n_t)``: the count-weighted RMS of the tensors' ``log_rms_ratio`` values (0 for no
    entries), the same combination ``net_rms`` makes of (RMS, count) pairs. Floats in, a float out; 0-dim tensors
    in, a 0-dim float64 tensor out (no sync)."""
    return net_rms(zip(ratios, counts))


def clipped_tensor_count(count: int, config) -> int:
    """The tensor count T as the count input reads it: clipped to [config.tensor_count_min, config.tensor_count_max]
    (no upper bound where that is 0)."""
    count = max(count, config.tensor_count_min)
    return min(count, config.tensor_count_max) if config.tensor_count_max else count


def tensor_input_values(stats, config, whole=None, noise=None) -> "list[tuple] | None":
    """The per-tensor inputs of a rule of ``config`` for tensors of ``stats`` (each tensor's (RMS, count) of its raw
    gradient): a tuple of ``config.tensor_inputs`` values per tensor (its tensor_rms_input value, then the net's
    net_scale_input value, then its tensor_count_input value, then its grad_noise_input value, taken from
    ``noise``, one per tensor: ``grad_noise_value``), None for a rule with none. ``whole``: ``net_rms(stats)``
    where the caller has it."""
    if not config.tensor_inputs:
        return None
    if config.grad_noise_input and (noise is None or len(noise) != len(stats)):
        raise ValueError("a rule with grad_noise_input needs one noise value per tensor")
    if whole is None:
        whole = net_rms(stats)
    ratios = [log_rms_ratio(rms, whole, config.tensor_input_divisor) for rms, _ in stats]
    spread = net_scale_spread(ratios, [n for _, n in stats]) if config.net_scale_input else None
    count = (math.log(clipped_tensor_count(len(stats), config)),) * config.tensor_count_input
    noise = noise if config.grad_noise_input else [None] * len(stats)
    return [(c,) * config.tensor_rms_input + (spread,) * config.net_scale_input + count
            + (v,) * config.grad_noise_input for c, v in zip(ratios, noise)]


def tensor_input_columns(flat_grad: torch.Tensor, sizes, config, noise=None) -> "torch.Tensor | None":
    """The per-tensor inputs (``tensor_input_values``) of a flat gradient made of tensors of ``sizes`` entries, one
    row per entry: shape (N, config.tensor_inputs); None for a rule with none. ``noise``: the tensors'
    grad_noise_input values, for a rule with that input."""
    stats = [tensor_rms(piece) for piece in flat_grad.split(list(sizes))]
    values = tensor_input_values(stats, config, noise=noise)
    if values is None:
        return None
    rows = torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in row]) for row in values])
    return rows.to(device=flat_grad.device, dtype=flat_grad.dtype).repeat_interleave(
        torch.tensor(list(sizes), device=flat_grad.device), dim=0)
