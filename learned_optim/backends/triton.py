"""The Triton backend (CUDA; the Triton interpreter on the CPU): the optimizer's step of an LSTM rule as one kernel.

The same contract as ``backends.cpp.lstm_rule_step`` (the C++ CPU kernel): for a flat float32
gradient ``grad`` (N,) and the rule's state ``[h0, c0, h1, c1, ...]`` (N, H each; float32,
bfloat16 or float16, updated in place),

    g = sign * grad
    x = features.preprocess(g, config.preprocess, config.p)     log_sign: 2 inputs, none: 1
    for each layer:  [a_i, a_f, a_g, a_o] = x W_ih^T + h W_hh^T + b
                     c' = σ(a_f) c + σ(a_i) tanh(a_g),   h' = σ(a_o) tanh(c'),   x = h'
    update = output_scale * (h' w_out^T + b_out)

with the math in float32 and the new state rounded to the storage dtype on store. A coordinate
whose (signed) gradient is not finite gets update 0 and keeps its state.

Layout. One program computes BLOCK coordinates. Per layer it loads h and c as (BLOCK, HP) tiles
(HP = H rounded up to 16 or 32, columns past H masked to 0) and computes the four gates'
pre-activations in one product ``tl.dot(h, W_hh)`` with a (HP, 4 HP) matrix (columns gate-major,
[i f g o] x HP), plus the input term: on layer 0 the 1 or 2 features as broadcast outer products,
on deeper layers ``tl.dot(h_prev', W_ih)``; the (BLOCK, 4 HP) result is split into the gates
(reshape, permute, split). One product of width 4 HP rather than four of width HP: with "ieee"
products (FMA units, operands in registers) the four per-gate products spilled registers at every
block size tried, the single one does not at block / num_warps <= 4 (ptxas for sm_90).
``pack`` prepares the weights once per rule: transposed (input by column) and zero-padded to HP,
so padding units get pre-activations 0, hence c' = c / 2 = 0 and h' = 0, and they never reach a
product or the readout. The state is read and written once; the gates live in registers.

``input_precision`` picks the precision of ``tl.dot`` on float32: "ieee" (the default; agrees
with the float32 reference to about 1e-6) or "tf32" / "tf32x3" (tensor cores; faster, "tf32"
about 1e-3 relative). The interpreter ignores it (numpy matmul).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import torch

from . import Context, Entry, add_update, torch_grad_stats
from .cpp import fold_tensor_inputs

try:  # optional: the package works without triton
    import triton
    import triton.language as tl

    _TRITON = True
except Exception:  # ImportError, or a broken install
    triton = None
    tl = None
    _TRITON = False

MAX_LAYERS = 4
MAX_HIDDEN = 32
PRECISIONS = ("ieee", "tf32", "tf32x3")
# per precision, the (block, num_warps) fastest on an H100 for the 2x20 rule at 1e6-1e8 coordinates
# (benchmarks/results/cuda_h100/triton_probe.log): "ieee" 16 / 4, the tensor-core products 32 / 4
DEFAULT_LAUNCH = {"ieee": (16, 4), "tf32": (32, 4), "tf32x3": (32, 4)}
DEFAULT_BLOCK = DEFAULT_LAUNCH["ieee"][0]


def default_num_warps(block: int, input_precision: str) -> int:
    """Warps per program for a block size: the measured choice at the default block, else for "ieee" (products
    on FMA units, operands in registers) block / 4 (at most 16 pre-activations per thread keeps the (BLOCK, 128)
    product from spilling, ptxas for sm_90), and 4 for the tensor-core products."""
    default_block, warps = DEFAULT_LAUNCH[input_precision]
    if block == default_block:
        return warps
    if input_precision == "ieee":
        return max(1, min(16, block // 4))
    return 4


def torch_precision() -> str:
    """The products' precision that follows torch's float32 matmul setting: "ieee" under "highest" (torch's
    default), "tf32" under "high" or "medium" (``torch.set_float32_matmul_precision``), as torch's own matmuls."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available() -> bool:
    """Whether the kernel can run here: triton imports, and there is a CUDA device or the interpreter is on."""
    return _TRITON and (torch.cuda.is_available() or _interpreting())


def supports(config) -> bool:
    """Whether ``lstm_rule_step`` computes this rule: an LSTM of at most 4 layers of at most 32 units."""
    return (
        config.cell == "lstm"
        and 1 <= config.num_layers <= MAX_LAYERS
        and 1 <= config.hidden_size <= MAX_HIDDEN
        and config.preprocess in ("log_sign", "none")
        and config.output == "linear"
    )


@dataclass(frozen=True)
class PackedLSTM:
    """An LSTM rule's weights laid out for the kernel (see ``pack``); all float32, on ``device``."""

    # columns gate-major: column q * HP + j holds gate q (i, f, g, o) of unit j; padding zero
    w_x: torch.Tensor  # (2, 4 HP): layer 0's input weights, [feature, column] (row 1 zero under "none")
    w_ih: torch.Tensor  # (L, HP, 4 HP): deeper layers' input weights, [layer, input unit, column] (layer 0's zero)
    w_hh: torch.Tensor  # (L, HP, 4 HP): recurrent weights, [layer, input unit, column]
    bias: torch.Tensor  # (L, 4 HP)
    w_out: torch.Tensor  # (HP,): the readout's weights
    b_out: float
    hidden: int
    hp: int  # H padded: 16 or 32
    num_layers: int
    nin: int  # layer 0's inputs: 2 (log_sign) or 1 (none)
    preprocess: str
    p: float
    output_scale: float
    device: torch.device


def padded_hidden(hidden: int) -> int:
    """The tile width for H units: 16 or 32 (tl.dot needs at least 16)."""
    return 16 if hidden <= 16 else 32


def pack(theta, config, device) -> PackedLSTM:
    """The rule's weights for the kernel: per layer (HP, 4 HP) matrices, inputs by gate-major columns,
    zero-padded, float32 on ``device``. Made once per rule (and device)."""
    if not supports(config):
        raise ValueError(f"the Triton kernel supports LSTM rules of <= {MAX_LAYERS} layers of <= {MAX_HIDDEN} units "
                         f"with log_sign or none features, not {config}")
    hidden, layers = config.hidden_size, config.num_layers
    hp, nin = padded_hidden(hidden), config.input_size

    def cpu(name):
        return theta[name].detach().to(device="cpu", dtype=torch.float32)

    # columns gate-major: column q * HP + j is gate q (i, f, g, o) of unit j; rows are the inputs
    w_x = torch.zeros(2, 4, hp)
    w_ih = torch.zeros(layers, hp, 4, hp)
    w_hh = torch.zeros(layers, hp, 4, hp)
    bias = torch.zeros(layers, 4, hp)
    for layer in range(layers):
        prefix = f"cells.{layer}."
        wi = cpu(prefix + "w_ih").reshape(4, hidden, -1).permute(2, 0, 1)  # [input, gate, unit]
        wh = cpu(prefix + "w_hh").reshape(4, hidden, hidden).permute(2, 0, 1)
        if layer == 0:
            w_x[:nin, :, :hidden] = wi
        else:
            w_ih[layer, :hidden, :, :hidden] = wi
        w_hh[layer, :hidden, :, :hidden] = wh
        bias[layer, :, :hidden] = cpu(prefix + "b").reshape(4, hidden)
    w_x, w_ih, w_hh = w_x.reshape(2, 4 * hp), w_ih.reshape(layers, hp, 4 * hp), w_hh.reshape(layers, hp, 4 * hp)
    bias = bias.reshape(layers, 4 * hp)
    w_out = torch.zeros(hp)
    w_out[:hidden] = cpu("readout.w").reshape(-1)
    w_x, w_ih, w_hh, bias, w_out = (t.to(device).contiguous() for t in (w_x, w_ih, w_hh, bias, w_out))
    return PackedLSTM(
        w_x=w_x,
        w_ih=w_ih,
        w_hh=w_hh,
        bias=bias,
        w_out=w_out,
        b_out=float(cpu("readout.b").reshape(())),
        hidden=hidden,
        hp=hp,
        num_layers=layers,
        nin=nin,
        preprocess=config.preprocess,
        p=float(config.p),
        output_scale=float(config.output_scale),
        device=w_x.device,  # "cuda" made concrete: cuda:0
    )


def pack_bias_shift(column: torch.Tensor, config, device) -> torch.Tensor:
    """A (4 H,) vector added to layer 0's gate biases, laid out as ``PackedLSTM.bias`` (L, 4 HP): adding ``x`` times
    this to ``bias`` is adding ``x * column`` to layer 0's biases."""
    hidden, hp = config.hidden_size, padded_hidden(config.hidden_size)
    shift = torch.zeros(config.num_layers, 4, hp)
    shift[0, :, :hidden] = column.detach().to(device="cpu", dtype=torch.float32).reshape(4, hidden)
    return shift.reshape(config.num_layers, 4 * hp).to(device).contiguous()


if _TRITON:

    @triton.jit
    def _tanh(x):
        # tanh(x) = 2 sigmoid(2x) - 1: exact at the limits (±1 for |x| large, never NaN), about 1e-7 absolute error
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _to_storage(x, ptr, BF16_BITS: tl.constexpr):
        """x (float32) rounded to the state's dtype, to nearest even."""
        if BF16_BITS:
            # round half to even on the 16 dropped bits (finite values), as rule_step.cpp does: the
            # interpreter's own float32 -> bfloat16 cast truncates
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            return x.to(ptr.dtype.element_ty)  # cvt.rn: round to nearest even

    @triton.jit
    def _split_gates(acc, BLOCK: tl.constexpr, HP: tl.constexpr):
        """The (BLOCK, 4 HP) pre-activations, columns gate-major [i f g o], as four (BLOCK, HP) tiles."""
        t = tl.permute(tl.reshape(acc, (BLOCK, 2, 2, HP)), (0, 3, 1, 2))  # [row, unit, gate // 2, gate % 2]
        even, odd = tl.split(t)
        a_i, a_g = tl.split(even)
        a_f, a_o = tl.split(odd)
        return a_i, a_f, a_g, a_o

    @triton.jit
    def _lstm_rule_step_kernel(
        grad_ptr, update_ptr, states, w_x_ptr, w_ih_ptr, w_hh_ptr, b_ptr, w_out_ptr,
        n, sign, threshold, p, exp_p, b_out, out_scale, scale_ptr, param_ptr, lr,
        H: tl.constexpr, HP: tl.constexpr, NUM_LAYERS: tl.constexpr, NIN: tl.constexpr,
        LOG_SIGN: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr, BF16_BITS: tl.constexpr,
        HAS_SCALE: tl.constexpr, FUSED: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        row_ok = rows < n
        g = tl.load(grad_ptr + rows, mask=row_ok, other=0.0)
        if HAS_SCALE:  # grad_norm's per-tensor factor, read on the device (no host sync)
            g = g * tl.load(scale_ptr)
        g = g * sign
        finite = tl.abs(g) < float("inf")  # false for NaN and ±inf
        g = tl.where(finite, g, 0.0)
        if LOG_SIGN:
            m = tl.abs(g)
            large = m >= threshold
            x0 = tl.where(large, tl.log(tl.maximum(m, threshold)) / p, -1.0)
            x1 = tl.where(large, tl.where(g > 0.0, 1.0, -1.0), g * exp_p)
        else:
            x0 = g
            x1 = g  # unused

        cols = tl.arange(0, HP)
        G: tl.constexpr = 4 * HP
        gate_cols = tl.arange(0, G)
        tile = cols[:, None] * G + gate_cols[None, :]  # a (HP, 4 HP) weight matrix
        offsets = rows[:, None] * H + cols[None, :]
        load_mask = row_ok[:, None] & (cols[None, :] < H)
        store_mask = load_mask & finite[:, None]
        inp = tl.zeros((BLOCK, HP), dtype=tl.float32)
        for layer in tl.static_range(NUM_LAYERS):
            h_ptr = states[2 * layer]
            c_ptr = states[2 * layer + 1]
            h = tl.load(h_ptr + offsets, mask=load_mask, other=0.0).to(tl.float32)
            c = tl.load(c_ptr + offsets, mask=load_mask, other=0.0).to(tl.float32)
            # all four gates in one product: (BLOCK, HP) x (HP, 4 HP)
            bias = tl.load(b_ptr + layer * G + gate_cols)
            acc = tl.dot(h, tl.load(w_hh_ptr + layer * HP * G + tile), input_precision=PRECISION) + bias[None, :]
            if layer == 0:
                acc += x0[:, None] * tl.load(w_x_ptr + gate_cols)[None, :]
                if NIN == 2:
                    acc += x1[:, None] * tl.load(w_x_ptr + G + gate_cols)[None, :]
            else:
                acc = tl.dot(inp, tl.load(w_ih_ptr + layer * HP * G + tile), acc, input_precision=PRECISION)
            a_i, a_f, a_g, a_o = _split_gates(acc, BLOCK, HP)
            c_new = _sigmoid(a_f) * c + _sigmoid(a_i) * _tanh(a_g)
            h_new = _sigmoid(a_o) * _tanh(c_new)
            tl.store(h_ptr + offsets, _to_storage(h_new, h_ptr, BF16_BITS), mask=store_mask)
            tl.store(c_ptr + offsets, _to_storage(c_new, c_ptr, BF16_BITS), mask=store_mask)
            inp = h_new
        w_out = tl.load(w_out_ptr + cols)
        u = tl.where(finite, (tl.sum(inp * w_out[None, :], axis=1) + b_out) * out_scale, 0.0)
        if FUSED:  # param += lr * update, without writing the update out
            theta = tl.load(param_ptr + rows, mask=row_ok, other=0.0)
            tl.store(param_ptr + rows, theta + lr * u, mask=row_ok)
        else:
            tl.store(update_ptr + rows, u, mask=row_ok)


    @triton.jit
    def _square_sum_kernel(grad_ptr, sums_ptr, counts_ptr, n, rounds, BLOCK: tl.constexpr):
        """Per program: the sum of g^2 (in float64) and the count of the finite entries of its blocks, which are
        every programs-th block of BLOCK entries from its own (``rounds`` of them)."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        total = tl.zeros((BLOCK,), dtype=tl.float64)
        count = tl.zeros((BLOCK,), dtype=tl.int32)  # per lane at most `rounds`
        for r in range(rounds):
            rows = (r * programs + pid).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            inside = rows < n
            g = tl.load(grad_ptr + rows, mask=inside, other=0.0)
            finite = (tl.abs(g) < float("inf")) & inside  # false for NaN and ±inf
            g = tl.where(finite, g, 0.0).to(tl.float64)
            total += g * g
            count += finite.to(tl.int32)
        tl.store(sums_ptr + pid, tl.sum(total, axis=0))
        tl.store(counts_ptr + pid, tl.sum(count.to(tl.int64), axis=0))


SCALE_BLOCK = 1024  # gradient entries per block of the RMS reduction (8 float64 sums per thread at 4 warps)
SCALE_PROGRAMS = 1024  # at most this many programs (and partial sums): the extra memory does not grow with the tensor


def tensor_rms(grad: torch.Tensor, reduce_sum=None, block: int = SCALE_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """``features.tensor_rms`` of a flat contiguous float32 gradient in one pass and no host sync.

    (RMS, count) over the finite entries, 0-dim float64 and int64 tensors on the gradient's device. The
    squares are summed in float64, where no float32 value's square overflows or underflows (so no rescaling
    by the largest entry and no second pass), per program (at most ``SCALE_PROGRAMS``, each over every
    programs-th block) and then over the programs' partial sums in a fixed order (the same bits on every
    run). ``reduce_sum``: an in-place sum of a 0-dim tensor across the shards of a sharded gradient (see
    features.tensor_rms).
    """
    if not _TRITON:
        raise RuntimeError("triton is not installed")
    if grad.dtype != torch.float32 or grad.dim() != 1 or not grad.is_contiguous():
        raise ValueError("grad: a contiguous flat float32 tensor is needed")
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    blocks = max(1, triton.cdiv(grad.numel(), block))
    programs = min(blocks, SCALE_PROGRAMS)
    sums = torch.zeros(programs, dtype=torch.float64, device=grad.device)
    counts = torch.zeros(programs, dtype=torch.int64, device=grad.device)
    if grad.numel() > 0:
        _square_sum_kernel[(programs,)](grad, sums, counts, grad.numel(), triton.cdiv(blocks, programs), BLOCK=block)
    total, count = sums.sum(), counts.sum()
    if reduce_sum is not None:
        reduce_sum(total)
        reduce_sum(count)
    return (total / count.clamp_min(1)).sqrt(), count


_STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def lstm_rule_step(grad, states, packed: PackedLSTM, config, sign: float = 1.0, *,
                   scale: "torch.Tensor | None" = None, param: "torch.Tensor | None" = None, lr: float = 1.0,
                   block: int | None = None, num_warps: int | None = None,
                   input_precision: str = "ieee") -> "torch.Tensor | None":
    """The rule's update (N,) float32 for a flat float32 gradient; ``states`` (N, H each) are updated in place.

    Coordinates with a non-finite ``sign * grad`` get update 0 and keep their state.
    ``scale``: a one-element float32 tensor on the device multiplying the gradient first (grad_norm's factor).
    ``param``: a flat contiguous float32 tensor (N,) to update in place, ``param += lr * update``; the update is
    then not written out and None is returned.
    ``block``: coordinates per program (a power of two >= 16; default per precision, ``DEFAULT_LAUNCH``);
    ``num_warps``: warps per program (default: ``default_num_warps``);
    ``input_precision``: "ieee" (default), "tf32" or "tf32x3" for the products (see the module docstring).
    """
    if not _TRITON:
        raise RuntimeError("triton is not installed")
    if not supports(config):
        raise ValueError(f"the Triton kernel does not support this rule: {config}")
    if (packed.hidden, packed.num_layers, packed.preprocess) != (config.hidden_size, config.num_layers, config.preprocess):
        raise ValueError("packed weights were made for another rule config")
    if input_precision not in PRECISIONS:
        raise ValueError(f"Invalid input_precision: {input_precision!r} (allowed: {', '.join(PRECISIONS)})")
    if input_precision in PRECISIONS and block is None:
        block = DEFAULT_LAUNCH[input_precision][0]
    if block is None or block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    hidden, layers = config.hidden_size, config.num_layers
    if grad.dtype != torch.float32 or grad.dim() != 1 or not grad.is_contiguous():
        raise ValueError("grad: a contiguous flat float32 tensor is needed")
    n = grad.numel()
    if len(states) != 2 * layers:
        raise ValueError(f"states: h and c of every layer ({2 * layers} tensors), got {len(states)}")
    dtype = states[0].dtype
    if dtype not in _STATE_DTYPES:
        raise ValueError(f"state dtype must be float32, bfloat16 or float16, got {dtype}")
    for s in states:
        if s.dtype != dtype or tuple(s.shape) != (n, hidden) or not s.is_contiguous() or s.device != grad.device:
            raise ValueError(f"states: contiguous (N, H) = ({n}, {hidden}) tensors of one dtype on {grad.device}")
    if packed.device != grad.device:
        raise ValueError(f"packed weights are on {packed.device}, the gradient on {grad.device}")
    if scale is not None and (scale.numel() != 1 or scale.dtype != torch.float32 or scale.device != grad.device):
        raise ValueError("scale: a one-element float32 tensor on the gradient's device")
    if param is not None and (param.dtype != torch.float32 or tuple(param.shape) != (n,) or not param.is_contiguous()
                              or param.device != grad.device):
        raise ValueError(f"param: a contiguous flat float32 tensor of {n} elements on {grad.device}")
    if num_warps is None:
        num_warps = default_num_warps(block, input_precision)
    update = torch.empty_like(grad) if param is None else None
    if n == 0:
        return update
    p = packed.p
    grid = (triton.cdiv(n, block),)
    _lstm_rule_step_kernel[grid](
        grad, grad if update is None else update, tuple(states), packed.w_x, packed.w_ih, packed.w_hh, packed.bias,
        packed.w_out, n, float(sign), math.exp(-p), p, math.exp(p), packed.b_out, packed.output_scale,
        grad if scale is None else scale, grad if param is None else param, float(lr),
        H=hidden, HP=packed.hp, NUM_LAYERS=layers, NIN=packed.nin, LOG_SIGN=packed.preprocess == "log_sign",
        BLOCK=block, PRECISION=input_precision, BF16_BITS=dtype == torch.bfloat16 and _interpreting(),
        HAS_SCALE=scale is not None, FUSED=param is not None,
        num_warps=num_warps,
    )
    return update


class TritonBackend:
    """The Triton kernel, tensor by tensor, state updated in place; whole when it can write the parameter itself (no
    extra memory), else in slices of ``chunk_size``. Its products follow torch's float32 matmul setting
    (``torch_precision``); ``LEARNED_OPTIM_TRITON=0`` turns the backend off (for debugging and comparisons)."""

    name = "triton"
    scalar_dtype = torch.float32

    @staticmethod
    def covers(context: Context, device: torch.device) -> bool:
        if device.type != "cuda" or context.state_dtype == torch.float64:
            return False
        if os.environ.get("LEARNED_OPTIM_TRITON", "1") == "0":
            return False
        return supports(context.config) and available()

    def __init__(self, context: Context) -> None:
        self.context = context
        theta, self.config, self.columns = fold_tensor_inputs(context.rule.theta, context.config)
        self.theta = theta
        self.packed: dict = {}

    def _packed(self, device: torch.device):
        if device not in self.packed:
            packed = pack(self.theta, self.config, device)
            self.packed[device] = (packed, [pack_bias_shift(column, self.config, device) for column in self.columns])
        return self.packed[device]

    def grad_stats(self, grad, reduce_max=None, reduce_sum=None):
        if grad.dtype == torch.float32 and grad.is_contiguous():
            return tensor_rms(grad.reshape(-1), reduce_sum)
        return torch_grad_stats(self.context, grad, reduce_max, reduce_sum)

    def update(self, entries: list[Entry], maximize: bool) -> None:
        names, config = self.config.state_names, self.config
        chunk, precision = None, torch_precision()
        for entry in entries:
            p, state, scale = entry.param, entry.state, entry.scale
            if p.numel() == 0:
                continue
            device = p.device
            packed, shift_rows = self._packed(device)
            chunk = chunk or self.context.chunk_for(device)
            # each per-tensor input is one number for the whole tensor: a shift of layer 0's gate biases
            tensor_packed = packed if entry.inputs is None else dataclasses.replace(
                packed, bias=packed.bias + sum(torch.as_tensor(v, dtype=torch.float32).to(device) * row
                                               for v, row in zip(entry.inputs, shift_rows)))
            for name in names:
                if not state[name].is_contiguous():
                    state[name] = state[name].contiguous()
            flat_grad, target = entry.grad.reshape(-1), p.view(-1)
            sign = -1.0 if maximize else 1.0
            if isinstance(scale, float):
                sign, scale = sign * scale, None
            fused = target.dtype == torch.float32  # the kernel adds lr * update to the parameter itself
            # slices bound the memory of a float32 copy of the gradient and of the update; with neither
            # (a float32 gradient, the update fused into the parameter) the whole tensor is one launch
            step = p.numel() if fused and flat_grad.dtype == torch.float32 and flat_grad.is_contiguous() else chunk
            for start in range(0, p.numel(), step):
                end = min(start + step, p.numel())
                g = flat_grad[start:end].to(torch.float32).contiguous()
                states = [state[n][start:end] for n in names]
                update = lstm_rule_step(g, states, tensor_packed, config, sign, scale=scale, lr=entry.lr,
                                        param=target[start:end] if fused else None, input_precision=precision)
                if not fused:
                    add_update(target[start:end], update, entry.lr)
