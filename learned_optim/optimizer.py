"""LearnedOptimizer: a coordinatewise learned update rule as a torch.optim.Optimizer."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Iterable, Optional

import torch
from torch.optim import Optimizer

from . import kernels, nets
from .features import (GRAD_NORMS, grad_noise_value, net_rms, partial_scale, relative_step_factors, rule_inputs,
                       tensor_input_values, tensor_rms, tensor_scale, update_grad_ema)
from .pretrained import RuleWeights, load_weights

IMPLEMENTATIONS = ("fast", "torch", "reference")
NONFINITE_POLICIES = ("skip", "raise")
CPU_CHUNK = 32768  # coordinates per batch on the CPU (sized to its caches; see benchmarks.step_cost)
ACCELERATOR_CHUNK = 1 << 20  # on a GPU, where batches of 32768 leave the step bound by kernel launches
STATE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOW_PRECISION = (torch.float16, torch.bfloat16)

try:  # sharded parameters (FSDP2's fully_shard, tensor parallelism) are DTensors
    from torch.distributed.tensor import DTensor as _DTensor
except Exception:  # a torch built without distributed support
    _DTensor = None


def _shard_reductions(tensor: "torch.Tensor | None"):
    """In-place (max, sum) all-reduces of a 0-dim tensor over the mesh dims a DTensor is sharded on.

    (None, None) for a plain tensor or one replicated on every mesh dim.
    """
    if _DTensor is None or not isinstance(tensor, _DTensor):
        return None, None
    import torch.distributed as dist

    mesh = tensor.device_mesh
    groups = [mesh.get_group(dim) for dim, placement in enumerate(tensor.placements) if placement.is_shard()]
    if not groups:
        return None, None

    def reducer(op):
        def reduce(value: torch.Tensor) -> None:
            for group in groups:
                dist.all_reduce(value, op=op, group=group)
        return reduce

    return reducer(dist.ReduceOp.MAX), reducer(dist.ReduceOp.SUM)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The shard this process holds: the rule is coordinatewise, so each rank steps its own coordinates."""
    if _DTensor is not None and isinstance(tensor, _DTensor):
        return tensor.to_local()
    return tensor


class LearnedOptimizer(Optimizer):
    r"""Applies a learned, coordinatewise recurrent update rule (Andrychowicz et al., 2016).

    For every scalar coordinate :math:`\theta_i` of every parameter, with gradient
    :math:`g_{i,t}` and the coordinate's own recurrent state :math:`s_{i,t}`:

    .. math::
        x_{i,t} &= \mathrm{preprocess}(g_{i,t})
            \quad\text{(e.g. } (\log|g|/p,\ \mathrm{sign}\, g) \text{, see features.py)} \\
        (u_{i,t},\ s_{i,t+1}) &= m_\phi(x_{i,t},\ s_{i,t})
            \quad\text{(shared network with weights } \phi\text{, see nets.py)} \\
        \theta_{i,t+1} &= \theta_{i,t} + \mathrm{lr} \cdot u_{i,t}

    The weights :math:`\phi` come from a weight file (``weights``); the state of each
    parameter (the hidden and cell states of every layer, shape ``(numel, hidden)``,
    and the step count) lives in ``self.state[p]`` and goes through
    ``state_dict()``/``load_state_dict()`` like any optimizer's.

    Non-finite gradients: under ``nonfinite="skip"`` (default) a coordinate whose
    gradient is NaN or ±inf is frozen for that step: neither its value nor its
    recurrent state changes, while the finite coordinates update as usual. Under
    ``"raise"`` the step raises ``FloatingPointError`` before changing anything.

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        weights: a shipped rule name (see ``list_pretrained()``), ``"default"``, the
            path of a ``.safetensors`` file with its ``.json`` card beside it, or a
            loaded :class:`RuleWeights` (default: ``"default"``).
        lr: multiplies the network's update; schedulers act on it (default: 1.0).
        maximize: maximize the objective instead of minimizing (default: False).
        chunk_size: coordinates per batch of the fast path; bounds the extra memory
            of a step (default: None, which is 32768 on the CPU, sized to its caches,
            and 2**20 on an accelerator, where small batches leave the step bound by
            kernel launches: on an H100, 2**20 made a 1e7-parameter step 6.8x faster
            than 32768).
        implementation: ``"fast"``, ``"torch"`` or ``"reference"`` (default: ``"fast"``).
            ``"torch"`` batches all coordinates of a group in chunks through
            ``nets.lstm_cell_fast``. ``"fast"`` is the C++ kernel ``kernels.lstm_rule_step``
            (one coordinate at a time, gates in vector registers, state updated in place,
            float32 parameters updated in the same pass, the grad-norm RMS in C++ too)
            for CPU parameters with float32 state and an LSTM rule of at most 32 hidden
            units; on CUDA the Triton kernel ``triton_step.lstm_rule_step`` (where triton
            imports; its products in float32, or TF32 under
            ``torch.set_float32_matmul_precision("high")``; ``LEARNED_OPTIM_TRITON=0`` turns it
            off), and ``"torch"`` elsewhere; the C++ kernel is compiled on first use (about
            40 s, then cached) and where it cannot be built ``"torch"`` runs instead.
            ``"reference"`` goes one tensor at a time through the line-by-line
            ``nets.lstm_cell``. All three agree to about 1e-5 (tested; the kernel's tanh is a
            rational approximation good to 1.2e-6).
        nonfinite: ``"skip"`` or ``"raise"`` (default: ``"skip"``).
        state_dtype: dtype in which the recurrent state is kept: float32, float64, or
            bfloat16 / float16 to halve the state's memory (the network then still runs in
            float32 and each step's new state is rounded to nearest on storing; the quality
            cost is measured by ``benchmarks/state_precision.py``). With float32 or float64 the network
            runs in this dtype whatever the parameters' dtype (default: float32).
        grad_norm: ``"none"`` or ``"tensor"``: rescale each parameter tensor's gradient to a
            root mean square of ``grad_norm_target`` before the rule sees it (the update is
            not rescaled back). Default (None): what the rule was meta-trained with (its
            card's ``grad_norm``); setting it overrides the rule's own. For a sharded
            (DTensor) parameter the RMS is the whole tensor's, reduced across its shards.
        grad_norm_target: the RMS under ``grad_norm="tensor"`` (default None: the rule's).
        grad_norm_power: under ``grad_norm="tensor"``, each tensor's factor is
            ``target / (RMS_tensor^a · RMS_net^(1-a))``, RMS_net over all the gradients of the
            step (every param group): 1 rescales each tensor alone, 0 the whole net by one
            factor (default None: the rule's). RMS_net is combined from the per-tensor RMS
            and finite counts the step reads anyway (no extra pass over the gradients).
            A rule meta-trained with ``tensor_rms_input`` (set in its card, not here) also sees,
            beside each coordinate's gradient, log(RMS_tensor / RMS_net) / p of its tensor's raw
            gradient, from the same per-tensor RMS; one with ``net_scale_input`` sees how unequal
            those are over the net, one with ``tensor_count_input`` log of how many tensors the
            step updates (those with a gradient, clipped to the card's tensor_count_min /
            tensor_count_max; features.py), one with ``grad_noise_input``
            log(RMS(m) / RMS(g)) of its tensor centred on independent noise, m an EMA of the
            gradient kept in the state (``grad_ema``, one number per coordinate). The C++ and Triton kernels take such inputs,
            constant over a tensor, as a shift of layer 0's gate biases.
        relative_step: b in [0, 2]: each tensor's update is multiplied by
            ``clamp(RMS(p) / RMS(net), 0.1, 10)^b``, RMS(net) over every parameter the step
            updates (all param groups), so tensors whose weights are larger take larger steps
            (features.py; as the group's lr, the kernels take it as a per-tensor lr). Default
            (None): the rule's (its card's ``relative_step``, 0 for the shipped rules).
        grad_relative_step: c in [0, 2]: each tensor's update is multiplied by
            ``clamp(RMS(grad) / RMS(net's grad), 0.1, 10)^c`` (RMS of the raw gradients, the net's
            over every tensor of the step), so tensors whose gradients are larger take larger
            steps, as under SGD, while the rule still sees each tensor at one scale; with
            ``relative_step`` the two factors multiply. Default (None): the rule's.
        compile: run the ``"torch"`` path's network through ``torch.compile`` (with
            ``"fast"`` this replaces the C++ kernel). The first
            steps pay the compilation (seconds; it needs a C++ compiler on the CPU), later
            ones run faster: see ``benchmarks/compile_step.py`` (default: False).
    """

    def __init__(
        self,
        params: Iterable[Any],
        weights: "str | RuleWeights | None" = "default",
        lr: float = 1.0,
        *,
        maximize: bool = False,
        chunk_size: Optional[int] = None,
        implementation: str = "fast",
        nonfinite: str = "skip",
        state_dtype: torch.dtype = torch.float32,
        grad_norm: Optional[str] = None,
        grad_norm_target: Optional[float] = None,
        grad_norm_power: Optional[float] = None,
        relative_step: Optional[float] = None,
        grad_relative_step: Optional[float] = None,
        compile: bool = False,
    ) -> None:
        if isinstance(lr, torch.Tensor):
            if lr.numel() != 1:
                raise ValueError(f"Invalid learning rate: tensor lr must have one element, got shape {tuple(lr.shape)}")
            lr_value = float(lr)
        elif isinstance(lr, (int, float)) and not isinstance(lr, bool):
            lr_value = float(lr)
        else:
            raise ValueError(f"Invalid learning rate: {lr!r}")
        if not (lr_value >= 0.0 and lr_value != float("inf")):
            raise ValueError(f"Invalid learning rate: {lr}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"Invalid chunk_size: {chunk_size!r} (must be an int >= 1)")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"Invalid implementation: {implementation!r} (allowed: {', '.join(IMPLEMENTATIONS)})")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} (allowed: {', '.join(NONFINITE_POLICIES)})")
        if state_dtype not in STATE_DTYPES:
            raise ValueError(
                f"Invalid state_dtype: {state_dtype} (allowed: torch.float32, torch.float64, torch.bfloat16, torch.float16)"
            )
        if not isinstance(maximize, bool):
            raise ValueError(f"Invalid maximize: {maximize!r} (must be a bool)")
        if not isinstance(compile, bool):
            raise ValueError(f"Invalid compile: {compile!r} (must be a bool)")
        if compile and implementation == "reference":
            raise ValueError("Invalid compile: True needs implementation='fast' or 'torch', got 'reference'")

        if grad_norm is not None and grad_norm not in GRAD_NORMS:
            raise ValueError(f"Invalid grad_norm: {grad_norm!r} (allowed: {', '.join(GRAD_NORMS)})")
        self.rule = load_weights(weights)
        overrides = {k: v for k, v in (("grad_norm", grad_norm), ("grad_norm_target", grad_norm_target),
                                       ("grad_norm_power", grad_norm_power), ("relative_step", relative_step),
                                       ("grad_relative_step", grad_relative_step))
                     if v is not None}
        # the rule's config with the overrides; NetConfig checks the target
        self.config = dataclasses.replace(self.rule.config, **overrides) if overrides else self.rule.config
        self.chunk_size = chunk_size
        self.implementation = implementation
        self.nonfinite = nonfinite
        self.state_dtype = state_dtype
        # the dtype the network computes in: the state's, but float32 for a half-precision state
        self._compute_dtype = torch.float32 if state_dtype in _LOW_PRECISION else state_dtype
        self.compile = compile
        self._network = _compiled_network() if compile else _network
        self._theta_cache: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        self._packed: "tuple[list[torch.Tensor], tuple[torch.Tensor, float]] | None" = None  # the C++ kernel's weights
        self._triton_packed: dict[torch.device, Any] = {}
        super().__init__(params, dict(lr=lr, maximize=maximize))

    # -- copies and pickles ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer keeps only defaults, state and param_groups: copy.deepcopy
        # and pickle would lose the rule. The device cache is rebuilt on demand.
        return {
            **super().__getstate__(),
            **{k: getattr(self, k) for k in ("rule", "config", "chunk_size", "implementation", "nonfinite", "state_dtype")},
            "compile": self.compile,
            "_theta_cache": {},
            "_packed": None,
            "_triton_packed": {},
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._network = _compiled_network() if self.__dict__.get("compile") else _network
        self._compute_dtype = torch.float32 if self.state_dtype in _LOW_PRECISION else self.state_dtype

    # -- parameters and state ----------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif not isinstance(params, set):  # a set is refused by the base class, with its message
            params = list(params)  # a generator can be read once: keep what we read
            param_group = {**param_group, "params": params}
        for p in params:
            if isinstance(p, torch.Tensor) and p.is_complex():
                raise ValueError(
                    "LearnedOptimizer does not support complex parameters; "
                    "pass torch.view_as_real(p) as a real parameter instead"
                )
            if isinstance(p, torch.Tensor) and not p.is_floating_point():
                raise ValueError(f"LearnedOptimizer can only optimize floating-point parameters, got {p.dtype}")
        if "lr" in param_group:
            lr = param_group["lr"]
            if not isinstance(lr, torch.Tensor) and not (float(lr) >= 0.0):
                raise ValueError(f"Invalid learning rate: {lr}")
        super().add_param_group(param_group)

    def _theta(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = (device, self._compute_dtype)
        if key not in self._theta_cache:
            self._theta_cache[key] = {
                k: v.to(device=device, dtype=self._compute_dtype) for k, v in self.rule.theta.items()
            }
        return self._theta_cache[key]

    def _init_group(self, group: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        """(param, grad, state) of every parameter of the group that has a gradient.

        For a sharded (DTensor) parameter these are the local shard, its gradient's
        local shard, and a state sized to the shard.
        """
        entries = []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("LearnedOptimizer does not support sparse gradients")
            state = self.state[param]
            p, grad = _local(param), _local(param.grad)
            if len(state) == 0:
                state["step"] = 0
                for name in self.config.state_names:
                    state[name] = torch.zeros(
                        p.numel(), self.config.hidden_size, dtype=self.state_dtype, device=p.device
                    )
            else:
                self._check_state_fits(p, state)
            factor = self._tensor_rms(grad, param.grad) if self._needs_net_rms else self._grad_scale(grad, param.grad)
            entries.append((p, grad, state, factor))
        return entries

    @property
    def _needs_net_rms(self) -> bool:
        """Whether the step needs the whole net's RMS: for each tensor's factor (grad_norm_power below 1), for
        the rule's per-tensor inputs or for its ``grad_relative_step``."""
        partial = self.config.grad_norm == "tensor" and self.config.grad_norm_power != 1
        return partial or bool(self.config.tensor_inputs) or bool(self.config.grad_relative_step)

    def _tensor_rms(self, grad: torch.Tensor, whole: "torch.Tensor | None" = None):
        """(RMS, count) of this tensor's finite entries (a gradient's; a parameter's for ``relative_step``), by the
        fastest path on its device.

        Floats on the CPU, 0-dim tensors elsewhere (no sync); for a sharded (DTensor) tensor
        the whole tensor's, as in ``_grad_scale``.
        """
        reduce_max, reduce_sum = _shard_reductions(whole)
        path = self._reduction_path(grad)
        if path == "cpp":
            return kernels.tensor_rms(grad.reshape(-1), reduce_max, reduce_sum)
        if path == "triton":
            from . import triton_step

            return triton_step.tensor_rms(grad.reshape(-1), reduce_sum)
        rms, count = tensor_rms(grad, self.chunk_for(grad.device), self._compute_dtype, reduce_max, reduce_sum)
        return (float(rms), int(count)) if grad.device.type == "cpu" else (rms, count)

    def _reduction_path(self, grad: torch.Tensor) -> str:
        """Which reduction reads a gradient's RMS: "cpp" (two passes of C++ over a CPU float32 gradient, no
        temporaries), "triton" (one pass on CUDA, squares summed in float64, no sync), or "torch" (chunked
        torch ops: the step's extra memory stays bounded by chunk_size)."""
        if grad.dtype == torch.float32 and grad.is_contiguous():
            if grad.device.type == "cpu" and self._use_kernel(grad.device):
                return "cpp"
            if grad.device.type == "cuda" and self._use_triton(grad.device):
                return "triton"
        return "torch"

    def _net_terms(self, groups):
        """The groups' entries with each tensor's (RMS, count) replaced by its factor (None without grad_norm) and
        its shift: the rule's per-tensor inputs (features.tensor_input_values: log(RMS_tensor / RMS_net) / p and / or
        the net's spread of those), a tuple, None for a rule without them."""
        stats = [entry[3] for _, entries in groups for entry in entries]
        if not stats:
            return groups
        whole = net_rms(stats)
        config = self.config
        target, power = config.grad_norm_target, config.grad_norm_power

        def on(value, device: torch.device):
            if device.type == "cpu":
                return float(value)
            return torch.as_tensor(value).to(torch.float32 if self._use_triton(device) else self._compute_dtype)

        noise = self._noise_values(stats) if config.grad_noise_input else None
        inputs = iter(tensor_input_values(stats, config, whole, noise) or ())

        def terms(rms, device: torch.device):
            factor = on(partial_scale(rms, whole, target, power), device) if config.grad_norm == "tensor" else None
            shift = tuple(on(v, device) for v in next(inputs)) if config.tensor_inputs else None
            return factor, shift

        return [(group, [(p, grad, state, *terms(stat[0], p.device)) for p, grad, state, stat in entries])
                for group, entries in groups]

    def _noise_values(self, stats) -> list:
        """Each updated tensor's grad_noise_input value (features.grad_noise_value) from its gradient's (RMS, count)
        in ``stats`` (the step's entries, in order), its EMA of the gradient (state ``grad_ema``, float32, float64
        for a float64 gradient) updated with this step's gradient first; the value stays in the state
        (``grad_noise``) for whoever studies the rule."""
        values, stats = [], iter(stats)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state, grad = self.state[param], _local(param.grad)
                dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
                ema = state.get("grad_ema")
                if ema is None:
                    ema = torch.zeros(grad.shape, dtype=dtype, device=grad.device)
                    state["grad_ema_updates"] = 0
                elif ema.dtype != dtype or ema.device != grad.device:  # loaded, or the parameter moved
                    ema = ema.to(device=grad.device, dtype=dtype)
                state["grad_ema"] = ema
                update_grad_ema(ema, grad, chunk_size=self.chunk_for(grad.device))
                state["grad_ema_updates"] = int(state.get("grad_ema_updates", 0)) + 1
                ema_rms, _ = self._tensor_rms(ema, param.grad)
                state["grad_noise"] = grad_noise_value(ema_rms, state["grad_ema_updates"], next(stats)[0])
                values.append(state["grad_noise"])
        return values

    def _grad_scale(self, grad: torch.Tensor, whole: "torch.Tensor | None" = None) -> "float | torch.Tensor | None":
        """The factor on this tensor's gradient under grad_norm="tensor" (None: no normalization).

        A float on the CPU (the kernel takes it as a scalar), a 0-dim tensor elsewhere (no sync).
        ``grad`` may be the local shard of ``whole``, a sharded (DTensor) gradient: the RMS is
        then the whole tensor's, reduced across the shards, as one process would compute it.
        """
        if self.config.grad_norm == "none":
            return None
        reduce_max, reduce_sum = _shard_reductions(whole)
        path = self._reduction_path(grad)
        if path == "cpp":
            return kernels.tensor_scale(grad.reshape(-1), self.config.grad_norm_target, reduce_max, reduce_sum)
        if path == "triton":
            from . import triton_step

            return triton_step.tensor_scale(grad.reshape(-1), self.config.grad_norm_target, reduce_sum)
        # read in chunks: the step's extra memory stays bounded by chunk_size
        scale = tensor_scale(grad, self.config.grad_norm_target, self.chunk_for(grad.device), self._compute_dtype,
                             reduce_max, reduce_sum)
        return float(scale) if grad.device.type == "cpu" else scale

    def _check_state_fits(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        numel, device, dtype = p.numel(), p.device, self.state_dtype
        for name in self.config.state_names:
            tensor = state[name]
            if tensor.shape[0] != numel:
                raise RuntimeError(
                    f"The state of a parameter of shape {tuple(p.shape)} holds {tensor.shape[0]} coordinates; "
                    "a parameter's size cannot change after its state exists"
                )
            if tensor.device != device or tensor.dtype != dtype:
                # the parameter moved (e.g. model.to("cuda") after a step): its state follows
                state[name] = tensor.to(device=device, dtype=dtype)

    # -- the step ------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Perform a single optimization step.

        Args:
            closure: a closure that reevaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        groups = [(group, self._init_group(group)) for group in self.param_groups]
        if self.nonfinite == "raise":
            for g_index, (_, entries) in enumerate(groups):
                for p, grad, *_ in entries:
                    if not torch.isfinite(grad).all():
                        raise FloatingPointError(
                            f"Non-finite gradient in a parameter of shape {tuple(p.shape)} "
                            f"(param group {g_index}); nothing was updated"
                        )
        grad_factors = None
        if self._needs_net_rms:
            if self.config.grad_relative_step:
                grad_factors = relative_step_factors([entry[3] for _, entries in groups for entry in entries],
                                                     self.config.grad_relative_step)
            groups = self._net_terms(groups)
        else:
            groups = [(group, [(*entry, None) for entry in entries]) for group, entries in groups]
        groups = self._step_sizes(groups, grad_factors)
        for group, entries in groups:
            if not entries:
                continue
            if self.implementation == "reference":
                self._reference_update(entries, group["maximize"])
            else:
                self._fast_update(entries, group["maximize"])
        return loss

    def _step_sizes(self, groups, grad_factors=None):
        """The groups' entries with each tensor's lr appended: the group's, times the tensor's relative step
        ``(RMS(p) / RMS(net))^b`` for a rule with ``relative_step`` b and times ``grad_factors``, its
        ``(RMS(grad) / RMS(net's grad))^c`` for one with ``grad_relative_step`` c (features.relative_step_factors;
        the net is every parameter the step updates, in all groups)."""
        power = self.config.relative_step
        if not power and grad_factors is None:
            return [(group, [(*entry, float(group["lr"])) for entry in entries]) for group, entries in groups]
        factors = []
        if power:
            params = [[param for param in group["params"] if param.grad is not None] for group in self.param_groups]
            stats = [self._tensor_rms(_local(param).detach(), param) for group_params in params for param in group_params]
            factors.append(relative_step_factors(stats, power))
        if grad_factors is not None:
            factors.append(grad_factors)
        factors = [math.prod(each) for each in zip(*factors)]  # floats on the CPU, 0-dim tensors elsewhere
        if factors and not isinstance(factors[0], float):  # one sync for the whole step: the kernels take a float lr
            factors = torch.stack([f.to(factors[0].device) for f in factors]).tolist()
        factors = iter(factors)
        return [(group, [(*entry, float(group["lr"]) * next(factors)) for entry in entries]) for group, entries in groups]

    def _rule(self, grad: torch.Tensor, state: nets.State, column: "torch.Tensor | None" = None
              ) -> tuple[torch.Tensor, nets.State]:
        """The rule on a flat gradient (already in the compute dtype), with the non-finite policy.

        ``column``: the per-tensor inputs of every row, (N, config.tensor_inputs), for a rule that has them.
        The new state comes back in the compute dtype; callers store it in the state dtype.
        """
        theta = self._theta(grad.device)
        state = tuple(s.to(self._compute_dtype) for s in state)
        config = self.config
        impl = "reference" if self.implementation == "reference" else "fast"
        finite = torch.isfinite(grad)
        # on the CPU the check is cheap; on accelerators the masked form avoids a sync
        if grad.device.type == "cpu" and bool(finite.all()):
            return self._network(theta, grad, state, config, impl, column)
        clean = torch.where(finite, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        update, new_state = self._network(theta, clean, state, config, impl, column)
        update = torch.where(finite, update, torch.zeros((), dtype=update.dtype, device=update.device))
        keep = finite.unsqueeze(1)
        return update, tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))

    def _flat_grad(self, grad: torch.Tensor, maximize: bool, scale=None) -> torch.Tensor:
        flat = grad.reshape(-1).to(self._compute_dtype)
        if scale is not None:
            flat = flat * scale
        return -flat if maximize else flat

    def _reference_update(self, entries, maximize: bool) -> None:
        """One tensor at a time, following the math: the readable reference."""
        for p, grad, state, scale, shift, lr in entries:
            state["step"] += 1
            self._update_tensor(p, grad, state, scale, shift, lr, maximize)

    def _column(self, shift, rows: int, device: torch.device) -> "torch.Tensor | None":
        """The per-tensor inputs of ``rows`` coordinates of one tensor, (rows, k) (None for a rule without them)."""
        if shift is None:
            return None
        values = torch.stack([torch.as_tensor(v, dtype=self._compute_dtype).to(device) for v in shift])
        return values.expand(rows, len(shift))

    def _update_tensor(self, p, grad, state, scale, shift, lr: float, maximize: bool) -> None:
        names = self.config.state_names
        if p.numel() == 0:
            return
        update, new_state = self._rule(self._flat_grad(grad, maximize, scale), tuple(state[n] for n in names),
                                       self._column(shift, p.numel(), p.device))
        for name, tensor in zip(names, new_state):
            state[name] = tensor.to(self.state_dtype)
        _add_update(p, update.view(p.shape), lr)

    def _fast_update(self, entries, maximize: bool) -> None:
        """All coordinates of the group through the network in chunks of ``chunk_size``.

        Small tensors are packed together into one chunk and large ones are cut into
        several, so the network always runs on batches of about ``chunk_size`` rows
        and the extra memory of a step is bounded by the chunk, not the model.
        """
        names = self.config.state_names
        by_device: dict[torch.device, list] = {}
        for p, grad, state, scale, shift, lr in entries:
            state["step"] += 1
            if p.numel() == 0:
                continue
            if not p.is_contiguous():
                # no flat view to write into: this tensor goes the reference way
                self._update_tensor(p, grad, state, scale, shift, lr, maximize)
                continue
            by_device.setdefault(p.device, []).append((p, grad, state, scale, shift, lr))

        for device, device_entries in by_device.items():
            if self._use_kernel(device):
                self._kernel_update(device_entries, maximize)
                continue
            if self._use_triton(device):
                self._triton_update(device_entries, maximize)
                continue
            pending: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any], Any, Any, float, int, int]] = []
            filled, chunk = 0, self.chunk_for(device)
            for p, grad, state, scale, shift, lr in device_entries:
                flat_grad = grad.reshape(-1)
                start, numel = 0, p.numel()
                while start < numel:
                    take = min(numel - start, chunk - filled)
                    pending.append((p, flat_grad, state, scale, shift, lr, start, start + take))
                    filled += take
                    start += take
                    if filled == chunk:
                        self._run_chunk(pending, names, maximize)
                        pending, filled = [], 0
            if pending:
                self._run_chunk(pending, names, maximize)

    def chunk_for(self, device: torch.device) -> int:
        """Coordinates per batch on ``device``: ``chunk_size`` if given, else the device's default."""
        if self.chunk_size is not None:
            return self.chunk_size
        return CPU_CHUNK if torch.device(device).type == "cpu" else ACCELERATOR_CHUNK

    def _use_kernel(self, device: torch.device) -> bool:
        if self.implementation != "fast" or self.compile or device.type != "cpu" or self.state_dtype == torch.float64:
            return False
        return kernels.rule_step_supports(self.config) and kernels.cpp_available("rule_step")

    def _use_triton(self, device: torch.device) -> bool:
        if self.implementation != "fast" or self.compile or device.type != "cuda" or self.state_dtype == torch.float64:
            return False
        if os.environ.get("LEARNED_OPTIM_TRITON", "1") == "0":  # a switch for debugging and comparisons
            return False
        from . import triton_step

        return triton_step.supports(self.config) and triton_step.available()

    def _triton_update(self, entries, maximize: bool) -> None:
        """The Triton kernel (CUDA): tensor by tensor, state updated in place; whole when it can write the parameter
        itself (no extra memory), else in slices of ``chunk_size``."""
        from . import triton_step

        names = self.config.state_names
        device = entries[0][0].device
        packed = self._triton_packed.get(device)
        if packed is None:
            theta, config, columns = _fold_tensor_inputs(self.rule.theta, self.config)
            packed = triton_step.pack(theta, config, device)
            shift_rows = [triton_step.pack_bias_shift(column, config, device) for column in columns]
            packed = self._triton_packed[device] = (packed, shift_rows)
        packed, shift_rows = packed
        config = _base_config(self.config)
        chunk, precision = self.chunk_for(device), triton_step.torch_precision()
        for p, grad, state, scale, shift, lr in entries:
            # each per-tensor input is one number for the whole tensor: a shift of layer 0's gate biases
            tensor_packed = packed if shift is None else dataclasses.replace(
                packed, bias=packed.bias + sum(torch.as_tensor(v, dtype=torch.float32).to(device) * row
                                               for v, row in zip(shift, shift_rows)))
            for name in names:
                if not state[name].is_contiguous():
                    state[name] = state[name].contiguous()
            flat_grad, target = grad.reshape(-1), p.view(-1)
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
                update = triton_step.lstm_rule_step(g, states, tensor_packed, config, sign, scale=scale, lr=lr,
                                                    param=target[start:end] if fused else None,
                                                    input_precision=precision)
                if not fused:
                    _add_update(target[start:end], update, lr)

    def _kernel_update(self, entries, maximize: bool) -> None:
        """The C++ kernel, tensor by tensor: whole when it can write the parameter itself (no extra memory), else in
        slices of ``chunk_size`` (a float32 copy of the gradient's slice and the update: the only extra memory)."""
        names = self.config.state_names
        if self._packed is None:
            theta, config, columns = _fold_tensor_inputs(self.rule.theta, self.config)
            shift_rows = [kernels.pack_bias_shift(column, config) for column in columns]
            self._packed = (kernels.pack_lstm(theta, config), kernels.pack_readout(theta, config), shift_rows)
        base_packed, readout, shift_rows = self._packed
        theta, config = self._theta(torch.device("cpu")), _base_config(self.config)
        chunk = self.chunk_for(torch.device("cpu"))
        # the whole-tensor calls are prepared first and run back to back: the Python and torch work of preparing
        # one runs several times slower right after a kernel call has streamed its state through the caches
        whole = []
        for p, grad, state, scale, shift, lr in entries:
            packed = base_packed
            if shift is not None:
                # each per-tensor input is one number for the whole tensor: a shift of layer 0's gate biases
                first = base_packed[0].clone()
                for value, row in zip(shift, shift_rows):
                    first[-1].add_(row, alpha=value)
                packed = [first, *base_packed[1:]]
            sign = (-1.0 if maximize else 1.0) * (1.0 if scale is None else scale)
            flat_grad = grad.reshape(-1)
            states = [state[name] for name in names]
            if not all(t.is_contiguous() for t in states):
                for name in names:
                    state[name] = state[name].contiguous()
                states = [state[name] for name in names]
            target = p.view(-1)
            if target.dtype == torch.float32 and flat_grad.dtype == torch.float32 and flat_grad.is_contiguous():
                # the kernel adds lr x update to the parameter itself: the whole tensor in one call, nothing allocated
                whole.append((flat_grad, states, packed, sign, target, lr))
                continue
            # otherwise in slices, which bound the memory of a float32 copy of the gradient and of the update
            fused = target.dtype == torch.float32
            for start in range(0, p.numel(), chunk):
                end = min(start + chunk, p.numel())
                g = flat_grad[start:end].to(torch.float32).contiguous()
                chunk_state = [t[start:end] for t in states]
                if fused:
                    kernels.lstm_rule_step(g, chunk_state, packed, theta, config, sign, param=target[start:end], lr=lr,
                                           readout=readout)
                else:
                    update = kernels.lstm_rule_step(g, chunk_state, packed, theta, config, sign, readout=readout)
                    _add_update(target[start:end], update, lr)
        for flat_grad, states, packed, sign, target, lr in whole:
            kernels.lstm_rule_step(flat_grad, states, packed, theta, config, sign, param=target, lr=lr, readout=readout)

    def _run_chunk(self, pieces, names, maximize: bool) -> None:
        if len(pieces) == 1:
            p, flat_grad, state, scale, shift, _, s, e = pieces[0]
            grad = self._flat_grad(flat_grad[s:e], maximize, scale)
            chunk_state = tuple(state[n][s:e] for n in names)
            column = self._column(shift, e - s, grad.device)
        else:
            grad = torch.cat([self._flat_grad(fg[s:e], maximize, scale) for _, fg, _, scale, _, _, s, e in pieces])
            chunk_state = tuple(torch.cat([st[n][s:e] for _, _, st, _, _, _, s, e in pieces]) for n in names)
            column = None
            if self.config.tensor_inputs:
                column = torch.cat([self._column(shift, e - s, grad.device) for _, _, _, _, shift, _, s, e in pieces])
        update, new_state = self._rule(grad, chunk_state, column)
        offset = 0
        for p, _, state, _, _, lr, s, e in pieces:
            rows = slice(offset, offset + e - s)
            for name, tensor in zip(names, new_state):
                state[name][s:e].copy_(tensor[rows])
            _add_update(p.view(-1)[s:e], update[rows], lr)
            offset += e - s

    # -- state dicts ---------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "weights": self.rule.name,
            "weights_sha256": self.rule.sha256,
            "architecture": self.config.to_dict(),
            "state_names": list(self.config.state_names),
        }

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        state_dict["learned_optim"] = self._fingerprint()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state saved by a LearnedOptimizer with the same weights and parameter shapes.

        Everything is checked before anything changes: on any mismatch a ValueError
        says what differs and the optimizer is left as it was.
        """
        saved = state_dict.get("learned_optim")
        if not isinstance(saved, dict):
            raise ValueError("This state dict was not saved by a LearnedOptimizer (no 'learned_optim' entry)")
        if saved.get("weights_sha256") != self.rule.sha256:
            raise ValueError(
                f"This state dict was produced by weights {saved.get('weights')!r} "
                f"(sha256 {str(saved.get('weights_sha256'))[:12]}...), but this optimizer uses "
                f"{self.rule.name!r} (sha256 {self.rule.sha256[:12]}...): their hidden states are not interchangeable"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"The state dict has {len(saved_groups)} parameter groups, this optimizer has {len(self.param_groups)}"
            )
        id_to_param: dict[Any, torch.Tensor] = {}
        for index, (saved_group, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved_group["params"]) != len(group["params"]):
                raise ValueError(
                    f"Parameter group {index} has {len(group['params'])} parameters, "
                    f"the state dict's has {len(saved_group['params'])}"
                )
            id_to_param.update(zip(saved_group["params"], group["params"]))
        names = self.config.state_names
        for param_id, param_state in state_dict["state"].items():
            if param_id not in id_to_param:
                raise ValueError(f"The state dict holds state for parameter id {param_id!r}, which no group lists")
            p = id_to_param[param_id]
            missing = [n for n in (*names, "step") if n not in param_state]
            if missing:
                raise ValueError(f"The state of parameter id {param_id!r} lacks {missing}")
            for name in names:
                tensor = param_state[name]
                expected = (_local(p).numel(), self.config.hidden_size)
                if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != expected:
                    shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                    raise ValueError(
                        f"The state {name!r} of parameter id {param_id!r} has shape {shape}, expected {expected} "
                        f"for a parameter of shape {tuple(p.shape)}: the state belongs to other parameters"
                    )
                if not tensor.is_floating_point():
                    raise ValueError(f"The state {name!r} of parameter id {param_id!r} is not floating point")
            ema = param_state.get("grad_ema")
            if ema is not None and (not isinstance(ema, torch.Tensor) or not ema.is_floating_point()
                                    or tuple(ema.shape) != tuple(_local(p).shape)):
                shape = tuple(ema.shape) if isinstance(ema, torch.Tensor) else type(ema).__name__
                raise ValueError(f"The state 'grad_ema' of parameter id {param_id!r} has shape {shape}, expected "
                                 f"{tuple(_local(p).shape)} (floating point): the state belongs to other parameters")

        # all checks passed: the base class restores groups and plain values, we restore
        # the tensors ourselves because it would cast them to each parameter's dtype
        tensors = {
            pid: {k: v for k, v in st.items() if isinstance(v, torch.Tensor)} for pid, st in state_dict["state"].items()
        }
        stripped = dict(state_dict)
        stripped["state"] = {
            pid: {k: v for k, v in st.items() if not isinstance(v, torch.Tensor)}
            for pid, st in state_dict["state"].items()
        }
        super().load_state_dict(stripped)
        for pid, values in tensors.items():
            p = id_to_param[pid]
            for key, value in values.items():
                # the gradient's EMA keeps its own dtype (float32, or float64), the recurrent state the state_dtype
                dtype = (torch.float64 if value.dtype == torch.float64 else torch.float32) if key == "grad_ema" \
                    else self.state_dtype
                self.state[p][key] = value.detach().to(device=_local(p).device, dtype=dtype, copy=True)


def _network(theta, grad, state, config, impl, column=None):
    """The rule on a flat, finite gradient: preprocessing (and the per-tensor inputs' ``column``), then the network's
    step."""
    return nets.step(theta, rule_inputs(grad, config, column), state, config, impl=impl)


def _base_config(config: nets.NetConfig) -> nets.NetConfig:
    """The config without per-tensor inputs (what the kernels compute, those inputs folded into the biases)."""
    if not config.tensor_inputs:
        return config
    return dataclasses.replace(config, **dict.fromkeys(nets.TENSOR_INPUTS, False))


def _fold_tensor_inputs(theta, config):
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
    return theta, _base_config(config), list(w_ih[:, -k:].unbind(1))


_COMPILED = None


def _compiled_network():
    global _COMPILED
    if _COMPILED is None:  # one compiled function for every optimizer of the process
        _COMPILED = torch.compile(_network)
    return _COMPILED


def _add_update(target: torch.Tensor, update: torch.Tensor, lr: float) -> None:
    """target += lr * update, computed in the update's precision for half-precision targets."""
    if target.dtype in _LOW_PRECISION:
        target.copy_(target.to(update.dtype).add_(update, alpha=lr))
    elif target.dtype == update.dtype:
        target.add_(update, alpha=lr)
    else:
        target.add_(update.to(target.dtype), alpha=lr)
