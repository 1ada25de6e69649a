"""LearnedOptimizer: a coordinatewise learned update rule as a torch.optim.Optimizer."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Optional

import torch
from torch.optim import Optimizer

from . import backends
from .backends import IMPLEMENTATIONS, Context, Entry, state_dtype_of
from .features import TensorTerms, needs_stats, tensor_terms
from .pretrained import RuleWeights, load_weights

NONFINITE_POLICIES = ("skip", "raise")
STATE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# an lr below this is almost certainly an Adam habit (lr=1e-3): here lr multiplies the rule's own step, 1 as trained
ADAM_LIKE_LR = 0.05
# a weight_decay above this is almost certainly an AdamW habit (0.01, 0.1): here it is a fraction per step at lr 1
ADAMW_LIKE_WEIGHT_DECAY = 1e-3

try:  # sharded parameters (FSDP2's fully_shard, tensor parallelism) are DTensors
    from torch.distributed.tensor import DTensor
except Exception:  # a torch built without distributed support
    DTensor = None


def shard_reductions(tensor: "torch.Tensor | None"):
    """In-place (max, sum) all-reduces of a 0-dim tensor over the mesh dims a DTensor is sharded on.

    (None, None) for a plain tensor or one replicated on every mesh dim.
    """
    if DTensor is None or not isinstance(tensor, DTensor):
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


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The shard this process holds: the rule is coordinatewise, so each rank steps its own coordinates."""
    if DTensor is not None and isinstance(tensor, DTensor):
        return tensor.to_local()
    return tensor


def _number(value, name: str) -> float:
    """A hyperparameter as a float: a Python number or a one-element tensor, finite and >= 0."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: a tensor {name} must have one element, got shape {tuple(value.shape)}")
        number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"Invalid {name}: {value!r}")
    if not (number >= 0.0 and math.isfinite(number)):
        raise ValueError(f"Invalid {name}: {value}")
    return number


class LearnedOptimizer(Optimizer):
    r"""Applies a learned, coordinatewise recurrent update rule (Andrychowicz et al., 2016).

    For every scalar coordinate :math:`\theta_i` of every parameter tensor :math:`T`, with gradient
    :math:`g_{i,t}` and the coordinate's own recurrent state :math:`s_{i,t}`:

    .. math::
        \theta_{i} &\leftarrow \theta_{i} (1 - \mathrm{lr} \cdot \mathrm{weight\_decay}) \\
        x_{i,t} &= \big(\mathrm{features}(c_T\, g_{i,t}),\ v_T\big)
            \quad c_T:\ \text{tensor scale},\ v_T:\ \text{per-tensor inputs (the rule's card)} \\
        (u_{i,t},\ s_{i,t+1}) &= m_\phi(x_{i,t},\ s_{i,t})
            \quad\text{(a small LSTM with weights } \phi\text{, shared by all coordinates)} \\
        \theta_{i} &\leftarrow \theta_{i} + \mathrm{lr} \cdot u_{i,t}

    The weights :math:`\phi` and the rule's own settings (its features, the tensor scale
    :math:`c_T` of ``grad_norm="tensor"``, its per-tensor inputs) come from a weight file and its
    card. The state of each parameter (every layer's hidden and cell state, shape
    ``(numel, hidden)``, and the step count) lives in ``self.state[p]`` and goes through
    ``state_dict()``/``load_state_dict()`` like any optimizer's.

    **lr is not Adam's.** ``lr`` multiplies the rule's update; 1.0 is the rule as it was
    meta-trained, and the rule chooses its own step sizes. Schedulers act on it as usual (a
    cosine schedule from 1.0 down). ``lr=1e-3`` makes every step a thousand times smaller
    than trained: a warning says so.

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        weights: a shipped rule name (``list_pretrained()``), ``"default"``, the path of a
            ``.safetensors`` file with its ``.json`` card beside it, or a loaded
            :class:`RuleWeights` (default: ``"default"``).
        lr: multiplies the rule's update (default: 1.0).
        weight_decay: decoupled weight decay, as in AdamW: each step first multiplies every
            parameter by ``1 - lr * weight_decay`` (default: 0). With lr at 1, AdamW's
            ``AdamW(lr=η, weight_decay=λ)`` corresponds to ``weight_decay=η·λ`` here (1e-5 for AdamW's
            defaults). Coordinates whose gradient is skipped as non-finite are not decayed.
        maximize: maximize the objective instead of minimizing (default: False).
        state_dtype: dtype of the recurrent state: float32, float64, or bfloat16 / float16 to
            halve its memory (the network still computes in float32; the new state is rounded to
            nearest on storing; a moments rule keeps its moving averages in float32 under float16,
            whose range cannot hold a small gradient's square) (default: float32).
        nonfinite: ``"skip"`` freezes a coordinate whose gradient is NaN or ±inf for that step
            (its value and state do not change); ``"raise"`` raises ``FloatingPointError``
            before anything changes (default: ``"skip"``).
        implementation: ``"fast"`` (the C++ kernel on the CPU, the Triton kernel on CUDA, where
            they cover the rule and the state dtype; else ``"torch"``), ``"torch"`` (the batched
            PyTorch network), ``"compiled"`` (the same through ``torch.compile``) or
            ``"reference"`` (tensor by tensor, line by line). All agree to about 1e-5
            (tested). The C++ kernel is compiled on first use (about 40 s, once, with a
            message on stderr) (default: ``"fast"``).
        chunk_size: coordinates per batch of the batched path; bounds the extra memory of a
            step (default: None: 32768 on the CPU, 2**20 on an accelerator).
    """

    def __init__(
        self,
        params: Iterable[Any],
        weights: "str | RuleWeights | None" = "default",
        lr: float = 1.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        state_dtype: torch.dtype = torch.float32,
        nonfinite: str = "skip",
        implementation: str = "fast",
        chunk_size: Optional[int] = None,
    ) -> None:
        _number(lr, "learning rate")
        _number(weight_decay, "weight_decay")
        if not isinstance(maximize, bool):
            raise ValueError(f"Invalid maximize: {maximize!r} (must be a bool)")
        if state_dtype not in STATE_DTYPES:
            raise ValueError(f"Invalid state_dtype: {state_dtype} (allowed: torch.float32, torch.float64, "
                             "torch.bfloat16, torch.float16)")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} (allowed: {', '.join(NONFINITE_POLICIES)})")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"Invalid implementation: {implementation!r} (allowed: {', '.join(IMPLEMENTATIONS)})")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ValueError(f"Invalid chunk_size: {chunk_size!r} (must be an int >= 1)")
        self.rule = load_weights(weights)
        self.config = self.rule.config
        self.chunk_size, self.implementation = chunk_size, implementation
        self.nonfinite, self.state_dtype = nonfinite, state_dtype
        self._warned: set[str] = set()
        self._setup()
        self._constructing = True  # warnings from add_param_group then point two frames further up, at the user
        try:
            super().__init__(params, dict(lr=lr, weight_decay=weight_decay, maximize=maximize))
        finally:
            self._constructing = False

    def _setup(self) -> None:
        self._context = Context(self.rule, self.state_dtype, self.chunk_size)
        self._backends: dict = {}

    # -- copies and pickles ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer keeps only defaults, state and param_groups: copy.deepcopy
        # and pickle would lose the rule. The backends are rebuilt on demand.
        keep = ("rule", "config", "chunk_size", "implementation", "nonfinite", "state_dtype", "_warned")
        return {**super().__getstate__(), **{k: getattr(self, k) for k in keep}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._setup()

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
                raise ValueError("LearnedOptimizer does not support complex parameters; "
                                 "pass torch.view_as_real(p) as a real parameter instead")
            if isinstance(p, torch.Tensor) and not p.is_floating_point():
                raise ValueError(f"LearnedOptimizer can only optimize floating-point parameters, got {p.dtype}")
        lr = _number(param_group.get("lr", self.defaults["lr"]), "learning rate")
        decay = _number(param_group.get("weight_decay", self.defaults["weight_decay"]), "weight_decay")
        if 0 < lr < ADAM_LIKE_LR:
            self._warn("lr", f"LearnedOptimizer: lr={lr:g} multiplies the learned rule's own step (lr=1 is the rule "
                             f"as meta-trained), so every step is {lr:g} of what it was trained to take. This looks "
                             "like an Adam learning rate; leave lr out, or schedule it down from 1.")
        if decay > ADAMW_LIKE_WEIGHT_DECAY:
            self._warn("weight_decay", f"LearnedOptimizer: weight_decay={decay:g} multiplies every parameter by "
                                       f"1 - lr*{decay:g} at each step. AdamW(lr=η, weight_decay=λ) corresponds to "
                                       "weight_decay=η*λ here (1e-5 for AdamW's defaults), since lr is 1, not 1e-3.")
        super().add_param_group(param_group)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:  # once per optimizer, at the user's line (through __init__ or add_param_group)
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=5 if getattr(self, "_constructing", False) else 3)

    def _backend(self, device: torch.device, implementation: "str | None" = None):
        return backends.for_device(self._context, implementation or self.implementation, device, self._backends)

    def chunk_for(self, device: torch.device) -> int:
        """Coordinates per batch on ``device``: ``chunk_size`` if given, else the device's default."""
        return self._context.chunk_for(device)

    def _init_group(self, group: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]]:
        """(local param, local grad, state, param) of every parameter of the group that has a gradient; the state is
        created here on the first step (sized to the local shard of a sharded parameter)."""
        entries = []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("LearnedOptimizer does not support sparse gradients")
            state = self.state[param]
            p, grad = local(param), local(param.grad)
            if len(state) == 0:
                state["step"] = 0
                for name in self.config.state_names:
                    state[name] = torch.zeros(p.numel(), self.config.state_width(name),
                                              dtype=state_dtype_of(name, self.state_dtype), device=p.device)
            else:
                self._check_state_fits(p, state)
            entries.append((p, grad, state, param))
        return entries

    def _check_state_fits(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        numel, device = p.numel(), p.device
        for name in self.config.state_names:
            tensor, dtype = state[name], state_dtype_of(name, self.state_dtype)
            if tensor.shape[0] != numel:
                raise RuntimeError(f"The state of a parameter of shape {tuple(p.shape)} holds {tensor.shape[0]} "
                                   "coordinates; a parameter's size cannot change after its state exists")
            if tensor.device != device or tensor.dtype != dtype:
                # the parameter moved (e.g. model.to("cuda") after a step): its state follows
                state[name] = tensor.to(device=device, dtype=dtype)

    def _terms(self, found) -> list[TensorTerms]:
        """Every updated tensor's scale and per-tensor inputs (features.tensor_terms), from its gradient's (RMS,
        count) by its device's reduction; for a sharded tensor the whole tensor's."""
        if not needs_stats(self.config):
            return [TensorTerms(None, None)] * len(found)
        stats = [self._backend(p.device).grad_stats(grad, *shard_reductions(param.grad))
                 for p, grad, _, param in found]
        return tensor_terms(stats, self.config)

    def _on(self, value, device: torch.device):
        """A per-tensor value as the backend of ``device`` takes it: a float on the CPU, else a 0-dim tensor."""
        if value is None or device.type == "cpu":
            return None if value is None else float(value)
        dtype = getattr(self._backend(device), "scalar_dtype", self._context.compute_dtype)
        return torch.as_tensor(value).to(dtype)

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
            for g_index, (_, found) in enumerate(groups):
                for p, grad, *_ in found:
                    if not torch.isfinite(grad).all():
                        raise FloatingPointError(f"Non-finite gradient in a parameter of shape {tuple(p.shape)} "
                                                 f"(param group {g_index}); nothing was updated")
        terms = iter(self._terms([item for _, found in groups for item in found]))
        for group, found in groups:
            lr, decay = float(group["lr"]), float(group["weight_decay"])
            entries = []
            for p, grad, state, _ in found:
                term = next(terms)
                state["step"] += 1
                if decay and p.numel():
                    _decay(p, grad, 1.0 - lr * decay)
                inputs = None if term.inputs is None else tuple(self._on(v, p.device) for v in term.inputs)
                entries.append(Entry(p, grad, state, self._on(term.scale, p.device), inputs, lr))
            self._dispatch(entries, group["maximize"])
        return loss

    def _dispatch(self, entries: list[Entry], maximize: bool) -> None:
        """Entries to their device's backend; a tensor without a flat view to the batched one, whole."""
        if not entries:
            return
        if self.implementation == "reference":
            self._backend(entries[0].param.device).update(entries, maximize)
            return
        by_device: dict[torch.device, list[Entry]] = {}
        for entry in entries:
            if entry.param.numel() == 0:
                continue
            if not entry.param.is_contiguous():
                batched = "compiled" if self.implementation == "compiled" else "torch"
                self._backend(entry.param.device, batched).update([entry], maximize)
                continue
            by_device.setdefault(entry.param.device, []).append(entry)
        for device, device_entries in by_device.items():
            self._backend(device).update(device_entries, maximize)

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
                raise ValueError(f"Parameter group {index} has {len(group['params'])} parameters, "
                                 f"the state dict's has {len(saved_group['params'])}")
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
                expected = (local(p).numel(), self.config.state_width(name))
                if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != expected:
                    shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                    raise ValueError(
                        f"The state {name!r} of parameter id {param_id!r} has shape {shape}, expected {expected} "
                        f"for a parameter of shape {tuple(p.shape)}: the state belongs to other parameters"
                    )
                if not tensor.is_floating_point():
                    raise ValueError(f"The state {name!r} of parameter id {param_id!r} is not floating point")
        # a state dict of the version before weight_decay existed: its groups take this optimizer's default
        saved_groups = [{"weight_decay": self.defaults["weight_decay"], **g} for g in saved_groups]

        # all checks passed: the base class restores groups and plain values, we restore
        # the tensors ourselves because it would cast them to each parameter's dtype
        tensors = {
            pid: {k: v for k, v in st.items() if isinstance(v, torch.Tensor)} for pid, st in state_dict["state"].items()
        }
        stripped = dict(state_dict, param_groups=saved_groups)
        stripped["state"] = {
            pid: {k: v for k, v in st.items() if not isinstance(v, torch.Tensor)}
            for pid, st in state_dict["state"].items()
        }
        super().load_state_dict(stripped)
        for pid, values in tensors.items():
            p = id_to_param[pid]
            for key, value in values.items():
                dtype = state_dtype_of(key, self.state_dtype)
                self.state[p][key] = value.detach().to(device=local(p).device, dtype=dtype, copy=True)


def _decay(p: torch.Tensor, grad: torch.Tensor, factor: float) -> None:
    """p *= factor, where the gradient is finite (a coordinate the rule skips keeps its value)."""
    finite = torch.isfinite(grad)
    if p.device.type == "cpu" and bool(finite.all()):
        p.mul_(factor)
    else:
        p.copy_(torch.where(finite.reshape(p.shape), p * factor, p))
