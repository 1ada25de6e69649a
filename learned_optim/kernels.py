"""Optional C++ kernels for the CPU (float32), built on first use.

- ``lstm_cell_cpp`` (csrc/lstm_cell.cpp), for the meta-trainer: the same function as
  ``nets.lstm_cell_fast`` with autograd (the matmul on [x, h, 1] stays in BLAS), the
  gates, the cell update and their gradients in one fused pass each; about 1.5×
  faster for a forward+backward step of the 2×20 LSTM on 16k coordinates.
- ``lstm_rule_step`` (csrc/rule_step.cpp), for LearnedOptimizer: the whole step of an
  LSTM rule (features, every layer, readout) a few coordinates at a time with their gates
  in vector registers (16-lane where the CPU has AVX-512, else 8: ``rule_step_block``),
  the state updated in place, and (``param=``) the parameter too.
  No autograd; no memory beyond the update vector, none at all when it writes the
  parameter. ``tensor_scale``: grad_norm="tensor"'s RMS in two passes without temporaries.
  See ``benchmarks/step_cost.py`` for what they buy.

They are built with torch.utils.cpp_extension, which needs a C++ compiler and ninja
(``pip install ninja``); builds are cached. Where one cannot be built, callers fall
back to the PyTorch implementation (with one warning per failed build).
"""

from __future__ import annotations

import hashlib
import math
import platform
import threading
import time
import warnings
from pathlib import Path

import torch

_CSRC = Path(__file__).resolve().parent / "csrc"
_lock = threading.Lock()
_modules: dict[str, object] = {}
_rule_step_block: int | None = None  # rule_step_block()'s answer, once known
_errors: dict[str, str] = {}
# rule_step.cpp tests for non-finite gradients, which -ffast-math would let the compiler drop
_FLAGS = {
    "lstm_cell": ["-O3", "-ffast-math", "-march=native", "-fopenmp"],
    "rule_step": ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"],
}


# a build takes about a minute here; a lock older than this was left by a killed build
STALE_LOCK_SECONDS = 900.0


def _clear_stale_lock(module: str, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the build lock of a killed build (torch waits forever on it); True if one was removed.

    torch.utils.cpp_extension holds ``<build dir>/lock`` while one process builds and makes
    every other process wait until it is gone, so a build killed midway leaves the next
    process hanging. A lock untouched for ``max_age`` seconds is taken to be such a leftover.
    """
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(module, verbose=False)) / "lock"
        if time.time() - lock.stat().st_mtime <= max_age:
            return False
        lock.unlink()
    except (ImportError, OSError):  # no lock (the usual case), or a torch without this helper
        return False
    warnings.warn(f"learned_optim: removed a stale build lock {lock} (left by a killed build)", RuntimeWarning, stacklevel=3)
    return True


def cpu_tag(cpuinfo: str | None = None) -> str:
    """8 hex digits naming this CPU: its model and instruction-set flags (from /proc/cpuinfo where there is one).

    The kernels are built with -march=native, so a build is only good on the CPU it was built on; the tag is
    part of the cached module's name, so machines sharing a home directory (and so torch's extension cache)
    with different CPUs each build their own instead of loading one that would die on an illegal instruction.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    wanted = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
              if line.split(":", 1)[0].strip() in ("model name", "flags", "Features", "CPU part")]
    # the first processor's lines describe them all (no per-core noise such as MHz or core ids)
    text = "\n".join([platform.machine(), platform.processor(), *dict.fromkeys(wanted)])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def module_name(name: str) -> str:
    """The name a kernel is built and cached under (see ``cpu_tag``)."""
    return f"learned_optim_{name}_{cpu_tag()}"


def _build(name: str = "lstm_cell"):
    module = _modules.get(name)
    if module is not None:  # built: no lock (every optimizer step asks)
        return module
    with _lock:
        if name in _modules or name in _errors:
            return _modules.get(name)
        try:
            from torch.utils.cpp_extension import load

            _clear_stale_lock(module_name(name))

            _modules[name] = load(
                name=module_name(name),
                sources=[str(_CSRC / f"{name}.cpp")],
                extra_cflags=_FLAGS[name],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # no compiler, no ninja, a failed build: fall back, say so once
            _errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            hint = " (pip install ninja, or learned_optim[fast], to build it)" if "ninja" in _errors[name].lower() else ""
            warnings.warn(
                f"learned_optim: the C++ kernel {name} could not be built ({_errors[name]}){hint}; "
                "using the PyTorch implementation instead",
                RuntimeWarning,
                stacklevel=3,
            )
        return _modules.get(name)


def cpp_available(name: str = "lstm_cell") -> bool:
    """Whether a C++ kernel ("lstm_cell" or "rule_step") is (or can be) built here; builds it on first call."""
    return _build(name) is not None


def build_error(name: str = "lstm_cell") -> str | None:
    """Why a kernel could not be built, or None."""
    _build(name)
    return _errors.get(name)


class _LSTMCellFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b):
        hidden, n_in = h.shape[1], x.shape[1]
        # [W_ih, W_hh, b] with the g rows doubled: sigmoid then gives tanh (see csrc/lstm_cell.cpp)
        gate_scale = torch.ones(4 * hidden, 1, dtype=x.dtype)
        gate_scale[2 * hidden : 3 * hidden] = 2.0
        weight = torch.cat([w_ih, w_hh, b.unsqueeze(1)], dim=1) * gate_scale
        inputs = torch.cat([x, h, x.new_ones(x.shape[0], 1)], dim=1)
        h_new, c_new, s, t = _modules['lstm_cell'].lstm_pointwise_forward(inputs @ weight.t(), c.contiguous())
        ctx.save_for_backward(inputs, weight, gate_scale, c, s, t)
        ctx.n_in = n_in
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh, dc):
        inputs, weight, gate_scale, c, s, t = ctx.saved_tensors
        dh = torch.zeros_like(c) if dh is None else dh.contiguous()
        dc = torch.zeros_like(c) if dc is None else dc.contiguous()
        dz, dc_prev = _modules['lstm_cell'].lstm_pointwise_backward(dh, dc, s, c.contiguous(), t)
        n_in, hidden = ctx.n_in, c.shape[1]
        d_inputs = dz @ weight[:, : n_in + hidden]
        d_weight = (dz.t() @ inputs) * gate_scale
        dx = d_inputs[:, :n_in] if ctx.needs_input_grad[0] else None
        return dx, d_inputs[:, n_in:], dc_prev, d_weight[:, :n_in], d_weight[:, n_in : n_in + hidden], d_weight[:, -1]


def lstm_cell_cpp(x, h, c, w_ih, w_hh, b):
    """nets.lstm_cell_fast with the element-wise work in C++ (CPU float32), else the PyTorch version."""
    tensors = (x, h, c, w_ih, w_hh, b)
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and _build("lstm_cell") is not None:
        return _LSTMCellFunction.apply(*tensors)
    from .nets import lstm_cell_fast

    return lstm_cell_fast(*tensors)


# -- the optimizer's step ------------------------------------------------------------------


def rule_step_supports(config) -> bool:
    """Whether ``lstm_rule_step`` computes this rule (an LSTM of at most 4 layers of at most 32 units)."""
    return config.cell == "lstm" and config.hidden_size <= 32 and config.num_layers <= 4


def rule_step_block() -> int:
    """Units per block of the C++ step's weight layout, and the lanes it computes on: 16 where it was built for
    a CPU with AVX-512, else 8 (also where it cannot be built). Builds the kernel on first call."""
    global _rule_step_block
    if _rule_step_block is None:  # asked on every step: read once
        module = _build("rule_step")
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
    ``block``: the layout ``packed`` was made with (``pack_lstm``'s; default ``rule_step_block()``). Requires ``cpp_available("rule_step")`` and ``rule_step_supports(config)``.
    """
    into_param = param is not None
    if into_param:
        if param.dtype != torch.float32 or not param.is_contiguous() or param.numel() != grad.numel():
            raise ValueError("param: a contiguous float32 tensor with one value per gradient entry")
        out = param
    else:
        out = torch.empty_like(grad)
    readout_w, readout_b = pack_readout(theta, config) if readout is None else readout
    _modules["rule_step"].lstm_rule_step(
        grad, float(sign), list(states), packed, config.preprocess, float(config.p), readout_w,
        readout_b, float(config.output_scale), out, into_param, float(lr),
        rule_step_block() if block is None else int(block),
    )
    return None if into_param else out


FLOAT32_MAX = torch.finfo(torch.float32).max


def tensor_rms(grad: torch.Tensor, reduce_max=None, reduce_sum=None) -> tuple[float, int]:
    """``features.tensor_rms`` for a contiguous CPU float32 gradient in two passes of C++, no temporaries.

    (amax · RMS(g / amax), count) over the finite entries, the sum of squares accumulated in double.
    ``reduce_max``/``reduce_sum`` as there. Requires ``cpp_available("rule_step")``.
    """
    module = _modules["rule_step"]
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


def tensor_scale(grad: torch.Tensor, target: float, reduce_max=None, reduce_sum=None) -> float:
    """``features.tensor_scale`` for a contiguous CPU float32 gradient (see ``tensor_rms``): target / RMS,
    1 where there is nothing to normalize, at most float32's largest value."""
    rms, _ = tensor_rms(grad, reduce_max, reduce_sum)
    return min(target / rms, FLOAT32_MAX) if rms > 0 else 1.0  # finite in float32, as features.tensor_scale
