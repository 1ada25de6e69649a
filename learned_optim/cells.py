"""Recurrent cells of the update rule, as plain functions of (inputs, state, weights).

LSTM (gate order i, f, g, o as in torch.nn.LSTMCell; one bias b = b_ih + b_hh):

    [a_i, a_f, a_g, a_o] = x W_ih^T + h W_hh^T + b
    c' = σ(a_f) ⊙ c + σ(a_i) ⊙ tanh(a_g)
    h' = σ(a_o) ⊙ tanh(c')

GRU (as torch.nn.GRUCell):

    [r_x, z_x, n_x] = x W_ih^T + b_ih,   [r_h, z_h, n_h] = h W_hh^T + b_hh
    r = σ(r_x + r_h),  z = σ(z_x + z_h),  n = tanh(n_x + r ⊙ n_h)
    h' = (1 - z) ⊙ n + z ⊙ h

Three implementations of the LSTM cell compute the same function:

- ``lstm_cell`` follows the equations line by line (and matches torch.nn.LSTMCell bit for bit);
- ``lstm_cell_fast`` folds both matmuls and the bias into one matmul on [x, h, 1] and gets all
  four gates from one sigmoid, using tanh(z) = 2σ(2z) − 1 (the g rows of the weights doubled):
  about 1.5× faster on a CPU, equal to float32 rounding (tested);
- ``lstm_cell_cpp`` is ``lstm_cell_fast`` with its element-wise work and its gradient in a C++
  kernel (csrc/lstm_cell.cpp, built on first use): the meta-trainer's cell on the CPU.
"""

from __future__ import annotations

import torch

from . import cpp_build


def lstm_cell(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # two matmuls instead of one on cat([x, h]): the cat of a narrow x costs more than it saves
    gates = torch.addmm(b, x, w_ih.t())
    gates = torch.addmm(gates, h, w_hh.t())
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
    h_new = torch.sigmoid(a_o) * torch.tanh(c_new)
    return h_new, c_new


def _folded(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor):
    """([x, h, 1], [W_ih, W_hh, b] with the g rows doubled, that doubling as a (4H, 1) column)."""
    hidden = h.shape[1]
    gate_scale = torch.ones(4 * hidden, 1, dtype=w_ih.dtype, device=w_ih.device)
    gate_scale[2 * hidden : 3 * hidden] = 2.0
    weight = torch.cat([w_ih, w_hh, b.unsqueeze(1)], dim=1) * gate_scale
    inputs = torch.cat([x, h, x.new_ones(x.shape[0], 1)], dim=1)
    return inputs, weight, gate_scale


def lstm_cell_fast(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # sigmoid(2 a_g) gives tanh(a_g) = 2 sigmoid(2 a_g) - 1
    inputs, weight, _ = _folded(x, h, w_ih, w_hh, b)
    s_i, s_f, s_g, s_o = torch.sigmoid(inputs @ weight.t()).chunk(4, dim=1)
    c_new = s_f * c + s_i * (2 * s_g - 1)
    h_new = s_o * (2 * torch.sigmoid(2 * c_new) - 1)
    return h_new, c_new


def gru_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
) -> torch.Tensor:
    r_x, z_x, n_x = torch.addmm(b_ih, x, w_ih.t()).chunk(3, dim=1)
    r_h, z_h, n_h = torch.addmm(b_hh, h, w_hh.t()).chunk(3, dim=1)
    r = torch.sigmoid(r_x + r_h)
    z = torch.sigmoid(z_x + z_h)
    n = torch.tanh(n_x + r * n_h)
    return (1 - z) * n + z * h


class _LSTMCellFunction(torch.autograd.Function):
    """lstm_cell_fast with the pointwise forward and backward in C++; the matmuls stay in BLAS."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b):
        inputs, weight, gate_scale = _folded(x, h, w_ih, w_hh, b)
        kernel = cpp_build.module("lstm_cell")
        h_new, c_new, s, t = kernel.lstm_pointwise_forward(inputs @ weight.t(), c.contiguous())
        ctx.save_for_backward(inputs, weight, gate_scale, c, s, t)
        ctx.n_in = x.shape[1]
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh, dc):
        inputs, weight, gate_scale, c, s, t = ctx.saved_tensors
        dh = torch.zeros_like(c) if dh is None else dh.contiguous()
        dc = torch.zeros_like(c) if dc is None else dc.contiguous()
        dz, dc_prev = cpp_build.module("lstm_cell").lstm_pointwise_backward(dh, dc, s, c.contiguous(), t)
        n_in, hidden = ctx.n_in, c.shape[1]
        d_inputs = dz @ weight[:, : n_in + hidden]
        d_weight = (dz.t() @ inputs) * gate_scale
        dx = d_inputs[:, :n_in] if ctx.needs_input_grad[0] else None
        return dx, d_inputs[:, n_in:], dc_prev, d_weight[:, :n_in], d_weight[:, n_in : n_in + hidden], d_weight[:, -1]


def lstm_cell_cpp(x, h, c, w_ih, w_hh, b):
    """lstm_cell_fast with the element-wise work in C++ (CPU float32 where the kernel builds), else lstm_cell_fast."""
    tensors = (x, h, c, w_ih, w_hh, b)
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and cpp_build.available("lstm_cell"):
        return _LSTMCellFunction.apply(*tensors)
    return lstm_cell_fast(*tensors)


LSTM_CELLS = {"reference": lstm_cell, "fast": lstm_cell_fast, "cpp": lstm_cell_cpp}
