"""The C++ backends (CPU): the optimizer's whole step in csrc/rule_step.cpp (log-sign and raw-gradient rules) and
csrc/moments_step.cpp ("moments" rules), built on first use.

``lstm_rule_step`` runs an LSTM rule's step (features, every layer, readout) a few coordinates at
a time with their gates in vector registers (16-lane where the CPU has AVX-512, else 8:
``rule_step_block``), the state updated in place and, with ``param=``, the parameter too: no
memory beyond the update vector, none at all when it writes the parameter. ``tensor_rms`` is a
gradient's (RMS, count) in two passes without temporaries. The per-tensor inputs, constant over
a tensor, enter as a shift of the first layer's gate biases. See benchmarks/step_cost.py for what
it buys; cpp_build.py for how it is built.
"""

from __future__ import annotations

import math

import torch

from .. import cpp_build, nets
from . import Context, Entry, add_update, torch_grad_stats

_rule_step_block: int | None = None  # rule_step_block()'s answer, once known


def rule_step_supports(config) -> bool:
    """Whether ``lstm_rule_step`` computes this rule (an LSTM of at most 4 layers of at most 32 units, on the
    log-sign or raw gradient, with a linear readout)."""
    return (config.cell == "lstm" and config.hidden_size <= 32 and config.num_layers <= 4
            and config.preprocess in ("log_sign", "none") and config.output == "linear")


def rule_step_block() -> int:
    """Units per block of the C++ step's weight layout, and the lanes it computes on: 16 where it was built for
    a CPU with AVX-512, else 8 (also where it cannot be built). Builds the kernel on first call."""
    global _rule_step_block
    if _rule_step_block is None:  # asked on every step: read once
        module = cpp_build.module("rule_step")
        _rule_step_block = int(module.vector_lanes()) if module is not None else 8
    return _rule_step_block


def _packed_columns(hidden: int, block: int = 8) -> torch.Tensor:
    """Column of rule_step.cpp's layout for gate q, unit j (a (4, H) index): units in blocks of
    ``block`` with columns [i f g o] x block, and a last block of the R units left over (H rounded
    up to 4, modulo block) as [i f g o] x R."""
    padded = -(-hidden // 4) * 4
    unit = torch.arange(hidden)
    first, lane = unit // block, unit % block
    width = torch.clamp(padded - block * first, max=block)
    return 4 * block * first + width * torch.arange(4).unsqueeze(1) + lane


def pack_lstm(theta, config, block: int | None = None) -> list[torch.Tensor]:
    """The LSTM weights in rule_step.cpp's layout: per layer a (nin + H + 1, 4 Hp) float32 tensor, Hp = H rounded up to 4.

    Row r holds input r of [x, h, 1]; the columns are the gates of the units in blocks of ``block``
    (default ``rule_step_block()``; see ``_packed_columns``), the i, f and o gates' weights halved (the
    kernel computes sigmoid(z) as (1 + tanh(z / 2)) / 2), the g gate's as they are, padding columns zero.
    ``lstm_rule_step`` must be given the same ``block``.
    """
    block = rule_step_block() if block is None else block
    packed = []
    for layer in range(config.num_layers):
        prefix = f"cells.{layer}."
        full = torch.cat([theta[prefix + "w_ih"], theta[prefix + "w_hh"], theta[prefix + "b"].unsqueeze(1)], dim=1)
        packed.append(_packed_rows(full, config.hidden_size, block))
    return packed


def _packed_rows(gate_major: torch.Tensor, hidden: int, block: int) -> torch.Tensor:
    """(4 H, K) weights, rows gate-major as torch's LSTM keeps them, as K packed rows (K, 4 Hp) of rule_step.cpp's
    layout (see ``pack_lstm``): the i, f and o gates halved, padding columns zero."""
    scale = torch.tensor([0.5, 0.5, 1.0, 0.5]).repeat_interleave(hidden).unsqueeze(1)
    out = torch.zeros(gate_major.shape[1], 4 * (-(-hidden // 4) * 4))
    out[:, _packed_columns(hidden, block).reshape(-1)] = (gate_major.detach().to(device="cpu", dtype=torch.float32) * scale).t()
    return out.contiguous()


def pack_bias_shift(column: torch.Tensor, config, block: int | None = None) -> torch.Tensor:
    """A (4 H,) vector added to layer 0's gate biases, as the row ``pack_lstm`` makes of them (4 Hp,): adding
    ``x`` times this row to the last row of layer 0's packed weights is adding ``x * column`` to its biases."""
    block = rule_step_block() if block is None else block
    return _packed_rows(column.reshape(-1, 1), config.hidden_size, block)[0]


def pack_readout(theta, config) -> tuple[torch.Tensor, float]:
    """The readout as the step kernel takes it: w padded with zeros to a multiple of 8 floats, and b."""
    readout = torch.zeros(-(-config.hidden_size // 8) * 8)
    readout[: config.hidden_size] = theta["readout.w"].reshape(-1).detach()
    return readout, float(theta["readout.b"].reshape(()))


def lstm_rule_step(grad, states, packed, theta, config, sign: float = 1.0, param: torch.Tensor | None = None,
                   lr: float = 0.0, readout: "tuple[torch.Tensor, float] | None" = None,
                   block: int | None = None) -> torch.Tensor | None:
    """The rule's update for a flat CPU float32 gradient; ``states`` (N, H each) are updated in place.

    Coordinates with a non-finite gradient get update 0 and keep their state. With ``param`` (a flat,
    contiguous float32 tensor of N values) nothing is returned: the kernel adds ``lr`` times the update
    to it in place, as ``param.add_(update, alpha=lr)`` would, without the update buffer or a second pass.
    ``readout``: ``pack_readout(theta, config)``, made once by a caller that steps many tensors (else made here).
    ``block``: the layout ``packed`` was made with (``pack_lstm``'s; default ``rule_step_block()``). Requires ``cpp_build.available("rule_step")`` and ``rule_step_supports(config)``.
    """
    into_param = param is not None
    if into_param:
        if param.dtype != torch.float32 or not param.is_contiguous() or param.numel() != grad.numel():
            raise ValueError("param: a contiguous float32 tensor with one value per gradient entry")
        out = param
    else:
        out = torch.empty_like(grad)
    readout_w, readout_b = pack_readout(theta, config) if readout is None else readout
    cpp_build.module("rule_step").lstm_rule_step(
        grad, float(sign), list(states), packed, config.preprocess, float(config.p), readout_w,
        readout_b, float(config.output_scale), out, into_param, float(lr),
        rule_step_block() if block is None else int(block),
    )
    return None if into_param else out


def tensor_rms(grad: torch.Tensor, reduce_max=None, reduce_sum=None) -> tuple[float, int]:
    """``features.tensor_rms`` for a contiguous CPU float32 gradient in two passes of C++, no temporaries.

    (amax · RMS(g / amax), count) over the finite entries, the sum of squares accumulated in double.
    ``reduce_max``/``reduce_sum`` as there. Requires ``cpp_build.available("rule_step")``.
    """
    module = cpp_build.module("rule_step")
    amax, count = module.finite_amax_count(grad)
    if reduce_max is not None:  # a shard of a larger tensor: the whole tensor's max and count
        amax_t, count_t = torch.tensor(amax, dtype=torch.float32), torch.tensor(count, dtype=torch.int64)
        reduce_max(amax_t)
        reduce_sum(count_t)
        amax, count = float(amax_t), int(count_t)
    total = module.finite_scaled_square_sum(grad, amax if amax > 0 else 1.0)
    if reduce_sum is not None:
        total_t = torch.tensor(total, dtype=torch.float64)
        reduce_sum(total_t)
        total = float(total_t)
    return amax * math.sqrt(total / max(count, 1)), count


def fold_tensor_inputs(theta, config):
    """(theta, config, columns) for the kernels: a rule with per-tensor inputs as the rule without them plus
    ``columns``, layer 0's input weights on each of those inputs (4H,) in order. Each input is constant over a
    tensor, so for each tensor it adds ``value * column`` to layer 0's gate biases. Without such inputs:
    (theta, config, [])."""
    k = config.tensor_inputs
    if not k:
        return theta, config, []
    theta = dict(theta)
    w_ih = theta["cells.0.w_ih"]
    theta["cells.0.w_ih"] = w_ih[:, :-k]
    return theta, base_config(config), list(w_ih[:, -k:].unbind(1))


def base_config(config):
    """The config without per-tensor inputs (what the kernels compute, those inputs folded into the biases)."""
    import dataclasses

    from ..nets import TENSOR_INPUTS

    return dataclasses.replace(config, **dict.fromkeys(TENSOR_INPUTS, False)) if config.tensor_inputs else config


class CppBackend:
    """The C++ kernel, tensor by tensor: whole when it can write the parameter itself (no extra memory), else in
    slices of ``chunk_size`` (a float32 copy of the gradient's slice and the update: the only extra memory)."""

    name = "cpp"

    @staticmethod
    def covers(context: Context, device: torch.device) -> bool:
        return (device.type == "cpu" and context.state_dtype != torch.float64 and rule_step_supports(context.config)
                and cpp_build.available("rule_step"))

    def __init__(self, context: Context) -> None:
        self.context = context
        theta, config, columns = fold_tensor_inputs(context.rule.theta, context.config)
        self.shift_rows = [pack_bias_shift(column, config) for column in columns]
        self.packed, self.readout = pack_lstm(theta, config), pack_readout(theta, config)
        self.config = config

    def grad_stats(self, grad, reduce_max=None, reduce_sum=None):
        if grad.dtype == torch.float32 and grad.is_contiguous():
            return tensor_rms(grad.reshape(-1), reduce_max, reduce_sum)
        return torch_grad_stats(self.context, grad, reduce_max, reduce_sum)

    def update(self, entries: list[Entry], maximize: bool) -> None:
        context, config, readout = self.context, self.config, self.readout
        names = config.state_names
        theta, chunk = context.theta(torch.device("cpu")), context.chunk_for(torch.device("cpu"))
        # the whole-tensor calls are prepared first and run back to back: the Python and torch work of preparing
        # one runs several times slower right after a kernel call has streamed its state through the caches
        whole = []
        for entry in entries:
            p, state = entry.param, entry.state
            if p.numel() == 0:
                continue
            packed = self.packed
            if entry.inputs is not None:
                # each per-tensor input is one number for the whole tensor: a shift of layer 0's gate biases
                first = packed[0].clone()
                for value, row in zip(entry.inputs, self.shift_rows):
                    first[-1].add_(row, alpha=value)
                packed = [first, *packed[1:]]
            sign = (-1.0 if maximize else 1.0) * (1.0 if entry.scale is None else entry.scale)
            flat_grad = entry.grad.reshape(-1)
            if not all(state[name].is_contiguous() for name in names):
                for name in names:
                    state[name] = state[name].contiguous()
            states = [state[name] for name in names]
            target = p.view(-1)
            if target.dtype == torch.float32 and flat_grad.dtype == torch.float32 and flat_grad.is_contiguous():
                # the kernel adds lr x update to the parameter itself: the whole tensor in one call, nothing allocated
                whole.append((flat_grad, states, packed, sign, target, entry.lr))
                continue
            # otherwise in slices, which bound the memory of a float32 copy of the gradient and of the update
            fused = target.dtype == torch.float32
            for start in range(0, p.numel(), chunk):
                end = min(start + chunk, p.numel())
                g = flat_grad[start:end].to(torch.float32).contiguous()
                chunk_state = [t[start:end] for t in states]
                if fused:
                    lstm_rule_step(g, chunk_state, packed, theta, config, sign, param=target[start:end], lr=entry.lr,
                                   readout=readout)
                else:
                    update = lstm_rule_step(g, chunk_state, packed, theta, config, sign, readout=readout)
                    add_update(target[start:end], update, entry.lr)
        for flat_grad, states, packed, sign, target, lr in whole:
            lstm_rule_step(flat_grad, states, packed, theta, config, sign, param=target, lr=lr, readout=readout)


# -- "moments" rules -------------------------------------------------------------------------------------------------


def moments_step_supports(config) -> bool:
    """Whether csrc/moments_step.cpp computes this rule: "moments" features, a "residual" or "scale" readout, an LSTM
    of 1 or 2 layers of 4, 8 or 16 units, no per-tensor inputs."""
    return (config.cell == "lstm" and config.preprocess == "moments" and config.output in nets.ADAM_DIRECTION_OUTPUTS
            and config.hidden_size in (4, 8, 16) and config.num_layers in (1, 2) and not config.tensor_inputs)


def moment_corrections(step_count: int) -> list[float]:
    """1 / (1 - b^t) for the three momentum decays and the second moment's (the bias corrections of update t), and
    the time input log(1 + t) / log(1 + 10^4)."""
    from ..features import MOMENT_BETAS, SECOND_MOMENT_BETA, TIME_SCALE

    return [1.0 / (1.0 - b**step_count) for b in (*MOMENT_BETAS, SECOND_MOMENT_BETA)] + [
        math.log1p(step_count) / TIME_SCALE]


def pack_moments(theta, config) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The rule's weights as the kernel takes them: per layer [W_ih, W_hh, b] (4H, nin + H + 1), and the readout
    [w, b] (2, H + 1), float32 on the CPU. A "scale" readout (no correction) gets a zero row for d: the kernel's
    x_1 + a · 0 is x_1 exactly."""
    layers = [torch.cat([theta[f"cells.{l}.w_ih"], theta[f"cells.{l}.w_hh"], theta[f"cells.{l}.b"].unsqueeze(1)],
                        dim=1).detach().to("cpu", torch.float32).contiguous() for l in range(config.num_layers)]
    readout = torch.cat([theta["readout.w"], theta["readout.b"].unsqueeze(1)], dim=1)
    if config.output == "scale":
        readout = torch.cat([torch.zeros_like(readout), readout])
    return layers, readout.detach().to("cpu", torch.float32).contiguous()


def moments_step(grad, moments, states, packed, config, step_count: int, sign: float = 1.0,
                 param: "torch.Tensor | None" = None, lr: float = 0.0) -> "torch.Tensor | None":
    """A moments rule's update for a flat CPU float32 gradient; ``moments`` (N, 4), or (N, 6) with a flip gate, and
    ``states`` (N, H each) are updated in place. With ``param`` (flat, contiguous float32) the kernel adds ``lr``
    times the update to it and returns None. Coordinates with a non-finite gradient get update 0 and keep their state."""
    into_param = param is not None
    out = param if into_param else torch.empty_like(grad)
    layers, readout = packed
    scale = float(nets.nominal_step(config, step_count))
    cpp_build.module("moments_step").moments_step(grad, float(sign), moments, list(states), layers, readout,
                                                  moment_corrections(step_count), scale, out, into_param, float(lr))
    return None if into_param else out


class CppMomentsBackend:
    """The moments kernel, tensor by tensor, state (float32) and float32 parameters updated in place."""

    name = "cpp"

    @staticmethod
    def covers(context: Context, device: torch.device) -> bool:
        return (device.type == "cpu" and context.state_dtype == torch.float32
                and moments_step_supports(context.config) and cpp_build.available("moments_step"))

    def __init__(self, context: Context) -> None:
        self.context = context
        self.packed = pack_moments(context.rule.theta, context.config)

    def grad_stats(self, grad, reduce_max=None, reduce_sum=None):
        return torch_grad_stats(self.context, grad, reduce_max, reduce_sum)

    def update(self, entries: list[Entry], maximize: bool) -> None:
        config = self.context.config
        names = config.state_names
        for entry in entries:
            p, state = entry.param, entry.state
            if p.numel() == 0:
                continue
            for name in names:
                if not state[name].is_contiguous():
                    state[name] = state[name].contiguous()
            sign = (-1.0 if maximize else 1.0) * (1.0 if entry.scale is None else entry.scale)
            flat_grad, target = entry.grad.reshape(-1), p.view(-1)
            if flat_grad.dtype != torch.float32 or not flat_grad.is_contiguous():
                flat_grad = flat_grad.to(torch.float32).contiguous()
            states = [state[name] for name in names[1:]]
            if target.dtype == torch.float32:
                moments_step(flat_grad, state["moments"], states, self.packed, config, state["step"], sign,
                             param=target, lr=entry.lr)
            else:
                update = moments_step(flat_grad, state["moments"], states, self.packed, config, state["step"], sign)
                add_update(target, update, entry.lr)
