"""Update-rule networks: a coordinatewise recurrent net written as one pure step.

Every scalar coordinate of every optimizee parameter is one row of a batch that
goes through the same small network (shared weights ``theta``). For N rows:

    step(theta, x, state, config) -> (update, new_state)
        x       (N, F)  gradient features (see features.py)
        state   tuple of (N, H) tensors, one per recurrent quantity per layer
        update  (N,)    added to the coordinates (times the optimizer's lr)

The function writes nothing in place, so the optimizer calls it under
``torch.no_grad()``, the meta-trainer calls it with autograd on ``theta``, and
the analysis tools call it to read off F(h, g) and the readout.

LSTM layer (gate order i, f, g, o as in torch.nn.LSTMCell; one bias b = b_ih + b_hh):

    [a_i, a_f, a_g, a_o] = x W_ih^T + h W_hh^T + b
    c' = σ(a_f) ⊙ c + σ(a_i) ⊙ tanh(a_g)
    h' = σ(a_o) ⊙ tanh(c')

GRU layer (as torch.nn.GRUCell):

    [r_x, z_x, n_x] = x W_ih^T + b_ih,   [r_h, z_h, n_h] = h W_hh^T + b_hh
    r = σ(r_x + r_h),  z = σ(z_x + z_h),  n = tanh(n_x + r ⊙ n_h)
    h' = (1 - z) ⊙ n + z ⊙ h

Readout of the last layer's h:  update = output_scale · (h w_out^T + b_out).

Two implementations of the LSTM cell compute the same function: ``lstm_cell``
follows the equations line by line (and matches torch.nn.LSTMCell bit for bit);
``lstm_cell_fast`` folds both matmuls and the bias into one matmul on
[x, h, 1] and gets all four gates from a single sigmoid, using
tanh(z) = 2σ(2z) − 1 (the g rows of the weights are doubled). On a CPU this
runs the forward about 1.5× faster; the two agree to float32 rounding (tested).
``step(..., impl="fast")`` picks the fast cell, ``impl="cpp"`` the same cell with
its element-wise work in a C++ kernel (kernels.py); the optimizer's reference
path uses ``impl="reference"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from . import features as features_lib

CELLS = ("lstm", "gru")
# NetConfig's per-tensor inputs, in the order of their input columns (after the gradient features); the first two
# are log ratios of gradient RMS, which tensor_input_scale scales
TENSOR_INPUTS = ("tensor_rms_input", "net_scale_input", "tensor_count_input", "grad_noise_input")
SCALED_TENSOR_INPUTS = TENSOR_INPUTS[:2]

Theta = Mapping[str, torch.Tensor]
State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild an update-rule network from its weights."""

    cell: str = "lstm"  # recurrent cell: "lstm" or "gru"
    num_layers: int = 2  # stacked recurrent layers
    hidden_size: int = 20  # units per layer, per coordinate
    preprocess: str = "log_sign"  # gradient features: "log_sign" (2 inputs) or "none" (1)
    p: float = 10.0  # log_sign threshold exponent: |g| < e^-p takes the linear branch
    output_scale: float = 0.1  # the readout is multiplied by this
    grad_norm: str = "none"  # "tensor": each parameter tensor's gradient rescaled to RMS grad_norm_target first
    grad_norm_target: float = 1e-3  # the RMS the rule sees under grad_norm="tensor"
    grad_norm_power: float = 1.0  # under "tensor": target / (RMS_tensor^a RMS_net^(1-a)), see features.py
    tensor_rms_input: bool = False  # one more input: log(RMS_tensor / RMS_net) / p of the raw gradient, see features.py
    net_scale_input: bool = False  # one more input: how unequal the net's tensors' gradient scales are, see features.py
    tensor_count_input: bool = False  # one more input: log of how many tensors the step updates (depth), see features.py
    grad_noise_input: bool = False  # one more input: log(RMS(EMA of g) / RMS(g)) per tensor, centred (noise), features.py
    tensor_count_min: int = 1  # the count input reads log(T) for T clipped to [tensor_count_min, tensor_count_max]
    tensor_count_max: int = 0  # 0: no upper bound; see features.py
    tensor_input_scale: float = 0.0  # the per-tensor inputs' log ratios times this; 0: divided by p (see features.py)
    relative_step: float = 0.0  # b: each tensor's update times (RMS(weights)_tensor / RMS(weights)_net)^b, features.py
    grad_relative_step: float = 0.0  # c: each tensor's update times (RMS(grad)_tensor / RMS(grad)_net)^c, features.py

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"Invalid cell: {self.cell!r} (allowed: {', '.join(CELLS)})")
        if not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ValueError(f"Invalid num_layers: {self.num_layers!r} (must be an int >= 1)")
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"Invalid hidden_size: {self.hidden_size!r} (must be an int >= 1)")
        features_lib.num_features(self.preprocess)  # raises ValueError naming it
        if not (isinstance(self.p, (int, float)) and math.isfinite(self.p) and self.p > 0):
            raise ValueError(f"Invalid p: {self.p!r} (must be a finite number > 0)")
        if not (isinstance(self.output_scale, (int, float)) and math.isfinite(self.output_scale)):
            raise ValueError(f"Invalid output_scale: {self.output_scale!r} (must be finite)")
        if self.grad_norm not in features_lib.GRAD_NORMS:
            raise ValueError(f"Invalid grad_norm: {self.grad_norm!r} (allowed: {', '.join(features_lib.GRAD_NORMS)})")
        if not (isinstance(self.grad_norm_target, (int, float)) and math.isfinite(self.grad_norm_target)
                and self.grad_norm_target > 0):
            raise ValueError(f"Invalid grad_norm_target: {self.grad_norm_target!r} (must be a finite number > 0)")
        if not (isinstance(self.grad_norm_power, (int, float)) and not isinstance(self.grad_norm_power, bool)
                and 0 <= self.grad_norm_power <= 1):
            raise ValueError(f"Invalid grad_norm_power: {self.grad_norm_power!r} (must be a number in [0, 1])")
        for name in ("relative_step", "grad_relative_step"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 2):
                raise ValueError(f"Invalid {name}: {value!r} (must be a number in [0, 2])")
        scale = self.tensor_input_scale
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale >= 0):
            raise ValueError(f"Invalid tensor_input_scale: {scale!r} (must be a finite number >= 0; 0: 1 / p)")
        for name in TENSOR_INPUTS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} (must be True or False)")
        low, high = self.tensor_count_min, self.tensor_count_max
        if not (isinstance(low, int) and not isinstance(low, bool) and low >= 1):
            raise ValueError(f"Invalid tensor_count_min: {low!r} (must be an int >= 1)")
        if not (isinstance(high, int) and not isinstance(high, bool) and (high == 0 or high >= low)):
            raise ValueError(f"Invalid tensor_count_max: {high!r} (must be 0, no bound, or an int >= tensor_count_min)")

    @property
    def input_size(self) -> int:
        return features_lib.num_features(self.preprocess) + self.tensor_inputs

    @property
    def tensor_inputs(self) -> int:
        """How many of the inputs are one number per tensor (tensor_rms_input, net_scale_input, tensor_count_input,
        grad_noise_input; in that order, after the gradient features)."""
        return sum(getattr(self, name) for name in TENSOR_INPUTS)

    @functools.cached_property  # asked for every tensor at every step; a frozen config's names never change
    def state_names(self) -> tuple[str, ...]:
        """Names of the per-coordinate state tensors, in the order step() uses."""
        per_layer = ("h", "c") if self.cell == "lstm" else ("h",)
        return tuple(f"{name}{layer}" for layer in range(self.num_layers) for name in per_layer)

    @property
    def state_size(self) -> int:
        """Numbers of recurrent state kept per coordinate."""
        return len(self.state_names) * self.hidden_size

    @property
    def tensor_input_divisor(self) -> float:
        """What the per-tensor inputs' log ratios are divided by: p (the original scale), or 1 / tensor_input_scale."""
        return 1.0 / self.tensor_input_scale if self.tensor_input_scale else self.p

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.tensor_input_scale:  # the original scale: written as cards before the field were
            del data["tensor_input_scale"]
        for name in ("tensor_count_input", "grad_noise_input"):  # likewise for the inputs added later
            if not getattr(self, name):
                del data[name]
        for name, unbounded in (("tensor_count_min", 1), ("tensor_count_max", 0)):  # and the count's bounds
            if data[name] == unbounded:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown network config keys: {unknown} (known: {sorted(known)})")
        return cls(**data)


def theta_shapes(config: NetConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight tensor the network needs."""
    hidden, gates = config.hidden_size, 4 if config.cell == "lstm" else 3
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(config.num_layers):
        fan_in = config.input_size if layer == 0 else hidden
        shapes[f"cells.{layer}.w_ih"] = (gates * hidden, fan_in)
        shapes[f"cells.{layer}.w_hh"] = (gates * hidden, hidden)
        if config.cell == "lstm":
            shapes[f"cells.{layer}.b"] = (gates * hidden,)
        else:
            shapes[f"cells.{layer}.b_ih"] = (gates * hidden,)
            shapes[f"cells.{layer}.b_hh"] = (gates * hidden,)
    shapes["readout.w"] = (1, hidden)
    shapes["readout.b"] = (1,)
    return shapes


def init_theta(
    config: NetConfig,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Fresh weights, drawn as torch.nn's default init: U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(config.hidden_size)
    theta = {}
    for name, shape in theta_shapes(config).items():
        # drawn on the CPU so that a seed gives the same weights on every device
        values = torch.rand(shape, generator=generator, dtype=torch.float64) * (2 * bound) - bound
        theta[name] = values.to(dtype=dtype, device=device)
    return theta


def init_state(
    config: NetConfig,
    n: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> State:
    """The initial (all-zero) recurrent state of n coordinates."""
    return tuple(
        torch.zeros(n, config.hidden_size, dtype=dtype, device=device) for _ in config.state_names
    )


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


def lstm_cell_fast(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = h.shape[1]
    # [W_ih, W_hh, b] with the g rows doubled, so that sigmoid(2 a_g) gives tanh(a_g) = 2 sigmoid(2 a_g) - 1
    gate_scale = torch.ones(4 * hidden, 1, dtype=w_ih.dtype, device=w_ih.device)
    gate_scale[2 * hidden : 3 * hidden] = 2.0
    weight = torch.cat([w_ih, w_hh, b.unsqueeze(1)], dim=1) * gate_scale
    inputs = torch.cat([x, h, x.new_ones(x.shape[0], 1)], dim=1)
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


CELL_IMPLS = ("reference", "fast", "cpp")


def step(
    theta: Theta, x: torch.Tensor, state: State, config: NetConfig, *, impl: str = "reference"
) -> tuple[torch.Tensor, State]:
    """One application of the update rule to N coordinates (see the module docstring).

    ``impl`` picks the LSTM cell: ``"reference"`` (lstm_cell), ``"fast"`` (lstm_cell_fast)
    or ``"cpp"`` (kernels.lstm_cell_cpp, the fast cell with its element-wise work in C++).
    """
    if impl == "reference":
        cell = lstm_cell
    elif impl == "fast":
        cell = lstm_cell_fast
    elif impl == "cpp":
        from .kernels import lstm_cell_cpp as cell
    else:
        raise ValueError(f"Invalid impl: {impl!r} (allowed: {', '.join(CELL_IMPLS)})")
    new_state: list[torch.Tensor] = []
    layer_input = x
    for layer in range(config.num_layers):
        prefix = f"cells.{layer}."
        if config.cell == "lstm":
            h, c = state[2 * layer], state[2 * layer + 1]
            h, c = cell(layer_input, h, c, theta[prefix + "w_ih"], theta[prefix + "w_hh"], theta[prefix + "b"])
            new_state += [h, c]
        else:
            h = gru_cell(
                layer_input,
                state[layer],
                theta[prefix + "w_ih"],
                theta[prefix + "w_hh"],
                theta[prefix + "b_ih"],
                theta[prefix + "b_hh"],
            )
            new_state.append(h)
        layer_input = h
    readout = torch.addmm(theta["readout.b"], layer_input, theta["readout.w"].t())
    return readout.squeeze(1) * config.output_scale, tuple(new_state)


def readout(theta: Theta, state: State, config: NetConfig) -> torch.Tensor:
    """The update that a state gives, w^T h + b (times the scale): the analysis tools' readout."""
    last_h = state[len(config.state_names) - (2 if config.cell == "lstm" else 1)]
    return torch.addmm(theta["readout.b"], last_h, theta["readout.w"].t()).squeeze(1) * config.output_scale
