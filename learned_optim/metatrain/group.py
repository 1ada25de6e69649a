"""This process's place in a distributed meta-training run (torch.distributed, started by torchrun)."""

from __future__ import annotations

import torch


class Group:
    """This process's place in a distributed meta-training run (torch.distributed, initialized by the caller)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def sum_(self, tensors: list[torch.Tensor], count: int) -> int:
        """Sum the tensors across ranks in place; returns the count summed across ranks."""
        flat = torch.cat([t.reshape(-1) for t in tensors] + [torch.tensor([float(count)], device=tensors[0].device)])
        self.dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        return int(round(float(flat[-1])))

    def sum_floats(self, values: list[float], device) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        self.dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        self.dist.barrier()


def process_group() -> "Group | None":
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Group()
    return None
