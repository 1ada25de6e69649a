"""How LearnedOptimizer runs the rule: one interface, one module per implementation.

    reference.py   one tensor at a time through ``nets.step`` with the line-by-line LSTM cell (the readable
                   reference every other backend is tested against)
    batched.py     all coordinates of a device in chunks of ``chunk_size`` through ``nets.step`` with the
                   fused PyTorch cell; optionally through ``torch.compile`` ("torch", "compiled")
    cpp.py         the C++ kernels (csrc/rule_step.cpp, csrc/moments_step.cpp): the whole step per coordinate in
                   vector registers, state and float32 parameters updated in place (CPU)
    triton.py      the same step as one Triton kernel (CUDA)

Every backend takes a list of ``Entry`` (a parameter, its gradient, its state and what the step
computed for its tensor) and updates parameters and state in place; ``grad_stats`` gives a
gradient's (RMS, count) by the backend's own reduction. ``for_device`` picks the backend that
an ``implementation`` name comes to on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import features, nets
from ..pretrained import RuleWeights

LOW_PRECISION = (torch.float16, torch.bfloat16)
CPU_CHUNK = 32768  # coordinates per batch on the CPU (sized to its caches; see benchmarks.step_cost)
ACCELERATOR_CHUNK = 1 << 20  # on a GPU, where batches of 32768 leave the step bound by kernel launches


@dataclass
class Entry:
    """One parameter tensor in one step."""

    param: torch.Tensor  # the tensor to update (a sharded parameter's local shard)
    grad: torch.Tensor  # its gradient (likewise local)
    state: dict  # optimizer.state[param]: the recurrent state tensors and the step count
    scale: Any  # the factor on its gradient (features.TensorTerms.scale): None, a float or a 0-dim tensor
    inputs: Any  # its per-tensor input values (features.TensorTerms.inputs): None or a tuple
    lr: float  # the group's lr


def state_dtype_of(name: str, state_dtype: torch.dtype) -> torch.dtype:
    """The dtype the state tensor ``name`` is kept in: ``state_dtype``, except that a moments rule's moving averages
    stay float32 under a float16 state (the square of a gradient below about 2.4e-4 underflows float16's smallest
    step, 6e-8, in v while m keeps the gradient, and m/sqrt(v) would read 10^12). bfloat16 has float32's range."""
    return torch.float32 if name == "moments" and state_dtype == torch.float16 else state_dtype


class Context:
    """What every backend shares: the rule, the dtypes, the chunk size and the rule's weights per device."""

    def __init__(self, rule: RuleWeights, state_dtype: torch.dtype, chunk_size: "int | None") -> None:
        self.rule, self.config = rule, rule.config
        self.state_dtype = state_dtype
        # the dtype the network computes in: the state's, but float32 for a half-precision state
        self.compute_dtype = torch.float32 if state_dtype in LOW_PRECISION else state_dtype
        self.chunk_size = chunk_size
        self._theta: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

    def theta(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = (device, self.compute_dtype)
        if key not in self._theta:
            self._theta[key] = {k: v.to(device=device, dtype=self.compute_dtype) for k, v in self.rule.theta.items()}
        return self._theta[key]

    def chunk_for(self, device: torch.device) -> int:
        """Coordinates per batch on ``device``: ``chunk_size`` if given, else the device's default."""
        if self.chunk_size is not None:
            return self.chunk_size
        return CPU_CHUNK if torch.device(device).type == "cpu" else ACCELERATOR_CHUNK

    def flat_grad(self, grad: torch.Tensor, maximize: bool, scale=None) -> torch.Tensor:
        """A gradient as the network takes it: flat, in the compute dtype, scaled, negated to maximize."""
        flat = grad.reshape(-1).to(self.compute_dtype)
        if scale is not None:
            flat = flat * scale
        return -flat if maximize else flat

    def column(self, inputs, rows: int, device: torch.device) -> "torch.Tensor | None":
        """A tensor's per-tensor input values as the network's extra input columns, (rows, k); None without."""
        if inputs is None:
            return None
        values = torch.stack([torch.as_tensor(v, dtype=self.compute_dtype).to(device) for v in inputs])
        return values.expand(rows, len(inputs))

    def run(self, grad: torch.Tensor, state: nets.State, column, impl: str, network=None, step_count=1):
        """The rule on a flat gradient (in the compute dtype) with the non-finite policy: a coordinate whose gradient
        is not finite gets update 0 and keeps its state. ``step_count``: the count of this update per row (an int, or
        a tensor where a chunk mixes tensors). Returns (update, new state in the compute dtype)."""
        network = network or run_network
        theta = self.theta(grad.device)
        state = tuple(s.to(self.compute_dtype) for s in state)
        finite = torch.isfinite(grad)
        # on the CPU the check is cheap; on accelerators the masked form avoids a sync
        if grad.device.type == "cpu" and bool(finite.all()):
            return network(theta, grad, state, self.config, impl, column, step_count)
        clean = torch.where(finite, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        update, new_state = network(theta, clean, state, self.config, impl, column, step_count)
        update = torch.where(finite, update, torch.zeros((), dtype=update.dtype, device=update.device))
        keep = finite.unsqueeze(1)
        return update, tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))


def run_network(theta, grad, state, config, impl, column=None, step_count=1):
    """The rule on a flat, finite gradient: its inputs, then the network's step (nets.rule_step)."""
    return nets.rule_step(theta, grad, state, config, column=column, step_count=step_count, impl=impl)


def add_update(target: torch.Tensor, update: torch.Tensor, lr: float) -> None:
    """target += lr * update, computed in the update's precision for half-precision targets."""
    if target.dtype in LOW_PRECISION:
        target.copy_(target.to(update.dtype).add_(update, alpha=lr))
    elif target.dtype == update.dtype:
        target.add_(update, alpha=lr)
    else:
        target.add_(update.to(target.dtype), alpha=lr)


def torch_grad_stats(context: Context, grad: torch.Tensor, reduce_max=None, reduce_sum=None):
    """(RMS, count) of a gradient's finite entries by chunked torch ops (bounded temporaries): floats on the CPU,
    0-dim tensors elsewhere (no sync)."""
    rms, count = features.tensor_rms(grad, context.chunk_for(grad.device), context.compute_dtype, reduce_max,
                                     reduce_sum)
    return (float(rms), int(count)) if grad.device.type == "cpu" else (rms, count)


IMPLEMENTATIONS = ("fast", "torch", "compiled", "reference")


def for_device(context: Context, implementation: str, device: torch.device, cache: dict):
    """The backend an ``implementation`` comes to on ``device`` (made once per device and kept in ``cache``):
    "fast" is the C++ kernel on the CPU and the Triton kernel on CUDA where they cover the rule and the state dtype
    (else "torch"); "torch" and "compiled" the batched PyTorch network, eager or through torch.compile;
    "reference" the line-by-line one."""
    key = (implementation, device)
    if key not in cache:
        from . import batched, cpp, reference, triton

        if implementation == "reference":
            backend = reference.ReferenceBackend(context)
        elif implementation == "fast" and cpp.CppBackend.covers(context, device):
            backend = cpp.CppBackend(context)
        elif implementation == "fast" and cpp.CppMomentsBackend.covers(context, device):
            backend = cpp.CppMomentsBackend(context)
        elif implementation == "fast" and triton.TritonBackend.covers(context, device):
            backend = triton.TritonBackend(context)
        else:
            backend = batched.BatchedBackend(context, compiled=implementation == "compiled")
        cache[key] = backend
    return cache[key]
