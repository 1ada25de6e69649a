"""One optimizee run under a rule: the optimizee's parameters as flat tensors, the rule's step as LearnedOptimizer
takes it, and whole runs without a meta-gradient (``rollout``, ``run_meta_loss``)."""

from __future__ import annotations

import torch

from .. import nets
from ..features import flat_terms
from ..nets import NetConfig
from ..tasks import Problem
from .config import LOG_FLOOR, MetaTrainConfig


class Optimizee:
    """A problem's parameters as flat float32 tensors, driven through functional_call."""

    def __init__(self, problem: Problem, device: torch.device) -> None:
        self.problem = problem
        named = list(problem.model.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.params = [p.detach().to(device=device, dtype=torch.float32).clone() for _, p in named]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def loss_and_grad(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, flat gradient) at the current parameters, on step ``step``'s batch."""
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        with torch.enable_grad():
            loss = self.problem.loss(step, dict(zip(self.names, leaves)))
            grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), torch.cat([g.reshape(-1) for g in grads])

    def apply(self, update: torch.Tensor) -> None:
        pieces = update.detach().split(self.sizes)
        self.params = [p + u.view(shape) for p, u, shape in zip(self.params, pieces, self.shapes)]



def rule_step(theta, grad: torch.Tensor, state: nets.State, net: NetConfig, impl: str = "fast", sizes=None,
              step_count: int = 1):
    """The rule on an optimizee's flat gradient (its tensors of ``sizes`` entries), as LearnedOptimizer applies it;
    ``step_count``: the count of this update (from 1)."""
    grad, column = flat_terms(grad, sizes, net)
    return nets.rule_step(theta, grad, state, net, column=column, step_count=step_count, impl=impl)


def forward_stepper(theta, net: NetConfig, device, impl: str = "fast"):
    """``rule_step`` for runs without a meta-gradient (validation, evolution strategies): ``step(grad, state, sizes,
    step_count) -> (update, state)``. A "moments" rule on the CPU goes through its C++ kernel (the optimizer's), which
    updates ``state`` in place; every other rule through ``rule_step``."""
    from ..backends import cpp

    if (torch.device(device).type == "cpu" and cpp.moments_step_supports(net)
            and cpp.cpp_build.available("moments_step")):
        packed = cpp.pack_moments(theta, net)

        def step(grad, state, sizes, step_count):
            grad = grad.to(torch.float32).contiguous()
            state = tuple(s.contiguous() for s in state)
            update = cpp.moments_step(grad, state[0], state[1:], packed, net, step_count)
            return update, state

        return step
    return lambda grad, state, sizes, step_count: rule_step(theta, grad, state, net, impl, sizes, step_count)


def cell_impl(kernel: str) -> str:
    """The nets.step implementation a --kernel choice comes to on this machine."""
    if kernel == "python":
        return "fast"
    from .. import cpp_build

    if cpp_build.available("lstm_cell"):
        return "cpp"
    if kernel == "cpp":
        raise ValueError(f"Invalid kernel: 'cpp' cannot be built here ({cpp_build.build_error('lstm_cell')}); "
                         "use --kernel auto or python")
    return "fast"


@torch.no_grad()
def rollout(
    theta: dict[str, torch.Tensor], net: NetConfig, problem: Problem, steps: int, device="cpu", impl: str = "fast"
) -> torch.Tensor:
    """Losses f(θ_0), ..., f(θ_{steps-1}) of one run of the rule (no meta-gradient)."""
    device = torch.device(device)
    optimizee = Optimizee(problem, device)
    state = nets.init_state(net, optimizee.numel, device=device)
    step = forward_stepper(theta, net, device, impl)
    losses = torch.empty(steps)
    for t in range(steps):
        loss, grad = optimizee.loss_and_grad(t)
        losses[t] = loss
        if not torch.isfinite(loss):
            losses[t:] = float("inf")
            break
        update, state = step(grad, state, optimizee.sizes, t + 1)
        optimizee.apply(update)
    return losses



def run_meta_loss(theta: dict[str, torch.Tensor], problem: Problem, config: MetaTrainConfig, impl: str = "fast") -> float:
    """One whole run's meta-loss, as truncated backpropagation's unrolls add it up: Σ f(θ_t) over the losses after
    each of the ``steps`` updates (Σ log f(θ_t) under meta_loss="log"); inf if the optimizee diverged."""
    losses = rollout(theta, config.net, problem, config.steps + 1, config.device, impl)[1:].double()
    if config.meta_loss == "log":
        losses = losses.clamp_min(LOG_FLOOR).log()
    return float(losses.sum())
