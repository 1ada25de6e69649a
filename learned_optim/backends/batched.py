"""The batched PyTorch backend: all coordinates of a device through the network in chunks of ``chunk_size``.

Small tensors are packed together into one chunk and large ones are cut into several, so the
network always runs on batches of about ``chunk_size`` rows and the extra memory of a step is
bounded by the chunk, not the model. The cell is ``cells.lstm_cell_fast``; with ``compiled`` the
network runs through ``torch.compile`` (implementation="compiled"). A tensor without a flat view
(not contiguous) goes the reference way, tensor by tensor, with the same cell.
"""

from __future__ import annotations

import torch

from . import Context, Entry, add_update, run_network, state_dtype_of, torch_grad_stats

_COMPILED = None


def compiled_network():
    """``run_network`` through torch.compile: one compiled function for every optimizer of the process."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(run_network)
    return _COMPILED


class BatchedBackend:
    def __init__(self, context: Context, compiled: bool = False) -> None:
        self.context = context
        self.name = "compiled" if compiled else "torch"
        self.network = compiled_network() if compiled else run_network

    def grad_stats(self, grad, reduce_max=None, reduce_sum=None):
        return torch_grad_stats(self.context, grad, reduce_max, reduce_sum)

    def update(self, entries: list[Entry], maximize: bool) -> None:
        names = self.context.config.state_names
        pending: list[tuple[Entry, torch.Tensor, int, int]] = []
        filled, chunk = 0, None
        for entry in entries:
            p = entry.param
            if p.numel() == 0:
                continue
            if not p.is_contiguous():  # no flat view to write into: this tensor goes whole
                self._whole(entry, maximize)
                continue
            chunk = chunk or self.context.chunk_for(p.device)
            flat_grad = entry.grad.reshape(-1)
            start, numel = 0, p.numel()
            while start < numel:
                take = min(numel - start, chunk - filled)
                pending.append((entry, flat_grad, start, start + take))
                filled += take
                start += take
                if filled == chunk:
                    self._run_chunk(pending, names, maximize)
                    pending, filled = [], 0
        if pending:
            self._run_chunk(pending, names, maximize)

    def _whole(self, entry: Entry, maximize: bool) -> None:
        context, p = self.context, entry.param
        names = context.config.state_names
        update, new_state = context.run(context.flat_grad(entry.grad, maximize, entry.scale),
                                        tuple(entry.state[n] for n in names),
                                        context.column(entry.inputs, p.numel(), p.device), "fast", self.network,
                                        step_count=entry.state["step"])
        for name, tensor in zip(names, new_state):
            entry.state[name] = tensor.to(state_dtype_of(name, context.state_dtype))
        add_update(p, update.view(p.shape), entry.lr)

    def _run_chunk(self, pieces, names, maximize: bool) -> None:
        context = self.context
        if len(pieces) == 1:
            entry, flat_grad, s, e = pieces[0]
            grad = context.flat_grad(flat_grad[s:e], maximize, entry.scale)
            chunk_state = tuple(entry.state[n][s:e] for n in names)
            column = context.column(entry.inputs, e - s, grad.device)
            step_count = entry.state["step"]
        else:
            grad = torch.cat([context.flat_grad(fg[s:e], maximize, entry.scale) for entry, fg, s, e in pieces])
            chunk_state = tuple(torch.cat([entry.state[n][s:e] for entry, _, s, e in pieces]) for n in names)
            column = None
            if context.config.tensor_inputs:
                column = torch.cat([context.column(entry.inputs, e - s, grad.device) for entry, _, s, e in pieces])
            counts = {entry.state["step"] for entry, *_ in pieces}
            step_count = counts.pop() if len(counts) == 1 else torch.cat(
                [torch.full((e - s,), entry.state["step"], dtype=grad.dtype, device=grad.device)
                 for entry, _, s, e in pieces])
        update, new_state = context.run(grad, chunk_state, column, "fast", self.network, step_count)
        offset = 0
        for entry, _, s, e in pieces:
            rows = slice(offset, offset + e - s)
            for name, tensor in zip(names, new_state):
                entry.state[name][s:e].copy_(tensor[rows])
            add_update(entry.param.view(-1)[s:e], update[rows], entry.lr)
            offset += e - s
