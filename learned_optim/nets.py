"""Update-rule networks: a coordinatewise recurrent net written as one pure step.

Every scalar coordinate of every optimizee parameter is one row of a batch that
goes through the same small network (shared weights ``theta``). For N rows:

    step(theta, x, state, config) -> (update, new_state)
        x       (N, F)  the rule's inputs (features.rule_inputs, or moment_features for a "moments" rule)
        state   tuple of (N, H) tensors, one per recurrent quantity per layer
        update  (N,)    added to the coordinates (times the optimizer's lr)

The function writes nothing in place, so the optimizer calls it under
``torch.no_grad()``, the meta-trainer calls it with autograd on ``theta``, and
the analysis tools call it to read off F(h, g) and the readout. The cells are in
cells.py. ``rule_step`` is the whole rule around it: from the (scaled) gradient and
the rule's state to its inputs (features.py), the network, and the update.

Readouts of the last layer's h (``output``):

    "linear"    update = output_scale · (h w^T + b)
    "residual"  [d, s] = h W^T + b,   update = −output_scale · exp(clamp(s, ±RESIDUAL_CLAMP)) · (x_1 + a · d)
                (a: features.moment_gate, 1 wherever the coordinate has had a gradient, 0 where it never has;
                with ``flip_gate``, also falling to 0 where the gradient keeps flipping sign)
    "scale"     s = h w^T + b,        update = −output_scale · exp(clamp(s, ±RESIDUAL_CLAMP)) · x_1

"residual" steps along the rule's first input (for the "moments" features, Adam's direction m̂/√v̂) with a nominal
step ``output_scale``: untrained (W, b = 0), it is Adam at that learning rate; trained, it learns how much to move
the direction (d) and how far to step (s), per coordinate and step. "scale" is "residual" without d: it only learns
how far to step along Adam's direction, so its step shrinks wherever m̂/√v̂ does (where the gradient is noise, or
oscillates about a minimum).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from . import features as features_lib
from .cells import LSTM_CELLS, gru_cell

CELLS = ("lstm", "gru")
OUTPUTS = ("linear", "residual", "scale")
ADAM_DIRECTION_OUTPUTS = ("residual", "scale")  # readouts that step along the first input, Adam's direction
RESIDUAL_CLAMP = 5.0  # a "residual" or "scale" readout scales the nominal step by at most e^5 up or down
# the per-tensor inputs a rule may have, in the order of their input columns (after the gradient features)
TENSOR_INPUTS = ("tensor_rms_input", "tensor_count_input")
# rule settings of earlier versions that no shipped rule uses (docs/research/retired-rule-inputs.md): a weight file
# may still name them at these values, which change nothing; any other value is refused
RETIRED = {"grad_norm_power": 1.0, "net_scale_input": False, "grad_noise_input": False, "tensor_input_scale": 0.0,
           "relative_step": 0.0, "grad_relative_step": 0.0}

Theta = Mapping[str, torch.Tensor]
State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild an update-rule network from its weights (a weight file's card holds it)."""

    cell: str = "lstm"  # recurrent cell: "lstm" or "gru"
    num_layers: int = 2  # stacked recurrent layers
    hidden_size: int = 20  # units per layer, per coordinate
    preprocess: str = "log_sign"  # gradient features: "log_sign" (2 inputs) or "none" (1)
    p: float = 10.0  # log_sign threshold exponent: |g| < e^-p takes the linear branch
    output_scale: float = 0.1  # the readout is multiplied by this
    grad_norm: str = "none"  # "tensor": each parameter tensor's gradient rescaled to RMS grad_norm_target first
    grad_norm_target: float = 1e-3  # the RMS the rule sees under grad_norm="tensor"
    tensor_rms_input: bool = False  # one more input: log(RMS_tensor / RMS_net) / p of the raw gradient (features.py)
    tensor_count_input: bool = False  # one more input: log of how many tensors the step updates (features.py)
    tensor_count_min: int = 1  # the count input reads log(T) for T clipped to [tensor_count_min, tensor_count_max]
    tensor_count_max: int = 0  # 0: no upper bound
    output: str = "linear"  # the readout: "linear", "residual" or "scale" (see the module docstring)
    step_decay_steps: float = 0.0  # tau > 0: the nominal step at update t is output_scale / (1 + (t - 1) / tau)^power
    step_decay_power: float = 1.0  # (0: no decay; "moments" rules only, the ones that count their updates)
    flip_gate: bool = False  # "residual" only: its correction also closes where the gradient keeps flipping sign

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
        for name in TENSOR_INPUTS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} (must be True or False)")
        if self.output not in OUTPUTS:
            raise ValueError(f"Invalid output: {self.output!r} (allowed: {', '.join(OUTPUTS)})")
        if self.output in ADAM_DIRECTION_OUTPUTS and self.preprocess != "moments":
            raise ValueError(f"Invalid output: {self.output!r} steps along the moments' direction: it needs "
                             "preprocess 'moments'")
        if not (isinstance(self.step_decay_steps, (int, float)) and math.isfinite(self.step_decay_steps)
                and self.step_decay_steps >= 0):
            raise ValueError(f"Invalid step_decay_steps: {self.step_decay_steps!r} (must be a finite number >= 0)")
        if not (isinstance(self.step_decay_power, (int, float)) and math.isfinite(self.step_decay_power)
                and self.step_decay_power > 0):
            raise ValueError(f"Invalid step_decay_power: {self.step_decay_power!r} (must be a finite number > 0)")
        if self.step_decay_steps and self.preprocess != "moments":
            raise ValueError("Invalid step_decay_steps: a decaying nominal step needs the update count that only "
                             "preprocess 'moments' keeps")
        if not isinstance(self.flip_gate, bool):
            raise ValueError(f"Invalid flip_gate: {self.flip_gate!r} (must be True or False)")
        if self.flip_gate and self.output != "residual":
            raise ValueError(f"Invalid flip_gate: it gates a 'residual' readout's correction; output is {self.output!r}")
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
        """How many of the inputs are one number per tensor (tensor_rms_input, tensor_count_input; in that order,
        after the gradient features)."""
        return sum(getattr(self, name) for name in TENSOR_INPUTS)

    @functools.cached_property  # asked for every tensor at every step; a frozen config's names never change
    def state_names(self) -> tuple[str, ...]:
        """Names of the per-coordinate state tensors, in the order rule_step uses: the features' state (the
        "moments" features' moving averages), then the network's (per layer h, and c for an LSTM)."""
        per_layer = ("h", "c") if self.cell == "lstm" else ("h",)
        network = tuple(f"{name}{layer}" for layer in range(self.num_layers) for name in per_layer)
        return ("moments",) * bool(features_lib.feature_state_width(self.preprocess)) + network

    def state_width(self, name: str) -> int:
        """Numbers per coordinate in the state tensor ``name``."""
        if name == "moments":
            return features_lib.feature_state_width(self.preprocess, self.flip_gate)
        return self.hidden_size

    @property
    def state_size(self) -> int:
        """Numbers of state kept per coordinate."""
        return sum(self.state_width(name) for name in self.state_names)

    @property
    def feature_states(self) -> int:
        """How many of the state tensors are the features' (they come first)."""
        return int(bool(features_lib.feature_state_width(self.preprocess)))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # the count input, its bounds and the readout are written only where they differ from their defaults (as
        # cards written before the fields existed read)
        for name, default in (("tensor_count_input", False), ("tensor_count_min", 1), ("tensor_count_max", 0),
                              ("output", "linear"), ("step_decay_steps", 0.0), ("step_decay_power", 1.0),
                              ("flip_gate", False)):
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetConfig":
        data = dict(data)
        for name, inert in RETIRED.items():
            if name in data:
                value = data.pop(name)
                if value != inert:
                    raise ValueError(f"This rule uses {name}={value!r}, a rule setting this version of learned_optim "
                                     f"no longer supports (see docs/research/retired-rule-inputs.md; the last "
                                     f"version with it is 0.1.0)")
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
    outputs = 2 if config.output == "residual" else 1
    shapes["readout.w"] = (outputs, hidden)
    shapes["readout.b"] = (outputs,)
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
    """The initial (all-zero) state of n coordinates: the features' and the network's, in config.state_names order."""
    return tuple(torch.zeros(n, config.state_width(name), dtype=dtype, device=device) for name in config.state_names)


CELL_IMPLS = tuple(LSTM_CELLS)


def step(
    theta: Theta, x: torch.Tensor, state: State, config: NetConfig, *, impl: str = "reference", gate=None, scale=None
) -> tuple[torch.Tensor, State]:
    """One application of the update rule to N coordinates (see the module docstring).

    ``impl`` picks the LSTM cell (cells.py): ``"reference"`` (lstm_cell), ``"fast"`` (lstm_cell_fast)
    or ``"cpp"`` (lstm_cell_cpp, the fast cell with its element-wise work in C++). ``gate`` (N,): what a "residual"
    readout's correction d is multiplied by (features.moment_gate; rule_step passes it). ``scale``: the nominal step,
    a number or one per row (default ``config.output_scale``; rule_step passes ``nominal_step``'s).
    """
    scale = config.output_scale if scale is None else scale
    cell = LSTM_CELLS.get(impl)
    if cell is None:
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
    if config.output == "residual":
        direction, size = readout.unbind(1)
        if gate is not None:
            direction = direction * gate
        step_size = scale * size.clamp(-RESIDUAL_CLAMP, RESIDUAL_CLAMP).exp()
        return -step_size * (x[:, 0] + direction), tuple(new_state)
    if config.output == "scale":
        step_size = scale * readout.squeeze(1).clamp(-RESIDUAL_CLAMP, RESIDUAL_CLAMP).exp()
        return -step_size * x[:, 0], tuple(new_state)
    return readout.squeeze(1) * scale, tuple(new_state)


def nominal_step(config: NetConfig, step_count=1):
    """The rule's nominal step at update ``step_count`` (from 1; an int, or a tensor of one per row):
    ``output_scale`` / (1 + (t - 1) / step_decay_steps)^step_decay_power, ``output_scale`` itself without a decay.
    A number for an int count (computed in float64, as the C++ kernel receives it); a tensor of the count's shape
    (float32) otherwise."""
    if not config.step_decay_steps:
        return config.output_scale
    t = step_count.to(torch.float64) if isinstance(step_count, torch.Tensor) else int(step_count)
    scale = config.output_scale * (1 + (t - 1) / config.step_decay_steps) ** -config.step_decay_power
    return scale.float() if isinstance(scale, torch.Tensor) else scale


def readout(theta: Theta, state: State, config: NetConfig) -> torch.Tensor:
    """The update that a linear rule's network state gives, w^T h + b (times the scale)."""
    last_h = state[len(state) - (2 if config.cell == "lstm" else 1)]
    return torch.addmm(theta["readout.b"], last_h, theta["readout.w"].t()).squeeze(1) * config.output_scale


def rule_step(theta: Theta, grad: torch.Tensor, state: State, config: NetConfig, *, column=None, step_count=1,
              impl: str = "reference") -> tuple[torch.Tensor, State]:
    """The whole rule on a flat gradient (already scaled by its tensor's factor, where the rule has one): its inputs
    (features.py; the "moments" features update their moving averages), then the network's step.

    ``state``: config.state_names's tensors, the features' first; ``column``: the per-tensor inputs of every row
    (N, config.tensor_inputs), for a rule that has them; ``step_count``: the count of this update (>= 1), an int or
    one per row, for the moving averages' bias correction. Returns the update and the new state, nothing written in
    place.
    """
    k = config.feature_states
    gate = None
    if k:
        x, moments = features_lib.moment_features(grad, state[0], step_count)
        x, feature_state = features_lib.beside_column(x, config, column), (moments,)
        if config.output == "residual":
            gate = features_lib.moment_gate(moments, step_count)
    else:
        x, feature_state = features_lib.rule_inputs(grad, config, column), ()
    scale = nominal_step(config, step_count)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(device=grad.device, dtype=grad.dtype).reshape(-1)
    update, network_state = step(theta, x, state[k:], config, impl=impl, gate=gate, scale=scale)
    return update, (*feature_state, *network_state)
