"""The reference backend: one tensor at a time through ``nets.step`` with the line-by-line LSTM cell.

It follows the math and nothing else; every faster backend is tested against it.
"""

from __future__ import annotations

from . import Context, Entry, add_update, state_dtype_of, torch_grad_stats


class ReferenceBackend:
    name = "reference"

    def __init__(self, context: Context, impl: str = "reference") -> None:
        self.context, self.impl = context, impl

    def grad_stats(self, grad, reduce_max=None, reduce_sum=None):
        return torch_grad_stats(self.context, grad, reduce_max, reduce_sum)

    def update(self, entries: list[Entry], maximize: bool) -> None:
        for entry in entries:
            self.update_tensor(entry, maximize)

    def update_tensor(self, entry: Entry, maximize: bool) -> None:
        """The rule on one whole tensor: its new state stored in the state dtype, lr x update added to it."""
        p, context = entry.param, self.context
        if p.numel() == 0:
            return
        names = context.config.state_names
        update, new_state = context.run(context.flat_grad(entry.grad, maximize, entry.scale),
                                        tuple(entry.state[n] for n in names),
                                        context.column(entry.inputs, p.numel(), p.device), self.impl,
                                        step_count=entry.state["step"])
        for name, tensor in zip(names, new_state):
            entry.state[name] = tensor.to(state_dtype_of(name, context.state_dtype))
        add_update(p, update.view(p.shape), entry.lr)
