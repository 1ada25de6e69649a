"""Run by torchrun from test_distributed.py: N steps of LearnedOptimizer under DDP or FSDP2, each rank saving its view.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_worker.py {ddp,fsdp} OUT_DIR STEPS [input | decay]
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from conftest import batch, distributed_optimizer, small_model


def main(mode: str, out: Path, steps: int, option: str | None = None) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = small_model()
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        model.scale = torch.nn.Parameter(model.scale.detach().reshape(1))  # fully_shard refuses 0-d parameters
        wrapped = fully_shard(model)
    opt = distributed_optimizer(wrapped.parameters(), option)
    for t in range(steps):
        x, y = batch(t)
        rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)  # this rank's share of the batch
        opt.zero_grad()
        ((wrapped(x[rows]) - y[rows]) ** 2).mean().backward()
        opt.step()
    params, states = [], []
    for p in wrapped.parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        params.append(full.detach().clone())
        states.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()})
    torch.save({"params": params, "states": states, "world": world}, out / f"rank{rank}.pt")
    # both ranks' results are on disk before either leaves
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    # Leave without tearing gloo down: destroy_process_group and the interpreter's exit could abort a rank with
    # "terminate called without an active exception" (gloo's threads destroyed while joinable; twice in CI, once
    # after a barrier before destroy_process_group was added). The results are written and closed; nothing is lost.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
