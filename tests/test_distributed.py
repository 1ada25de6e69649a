"""DistributedDataParallel and FSDP2 over 2 CPU processes (gloo), started by torchrun."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, batch, distributed_optimizer, small_model

STEPS = 5


def state_tensors(state: dict) -> list[str]:
    """The per-coordinate tensors of a parameter's optimizer state (the recurrent state, moving averages)."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.dim() >= 1]


def single_process_reference(mode, power=None):
    """The same training in one process, on the full batch."""
    model = small_model()
    if mode == "fsdp":
        model.scale = torch.nn.Parameter(model.scale.detach().reshape(1))  # as the worker does
    opt = distributed_optimizer(model.parameters(), power)
    for t in range(STEPS):
        x, y = batch(t)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach() for p in model.parameters()], [opt.state[p] for p in model.parameters()]


def run_torchrun(mode, tmp_path, power=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "tests" / "dist_worker.py"), mode, str(tmp_path), str(STEPS)]
    if power is not None:
        command.append(str(power))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
def test_ddp_ranks_agree_and_match_one_process_on_the_full_batch(tmp_path):
    ranks = run_torchrun("ddp", tmp_path)
    ref_params, ref_states = single_process_reference("ddp")
    for r in ranks[1:]:  # every rank holds identical parameters and optimizer state
        for a, b in zip(ranks[0]["params"], r["params"]):
            assert torch.equal(a, b)
        for sa, sb in zip(ranks[0]["states"], r["states"]):
            assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k] for k in sa)
    for a, b in zip(ranks[0]["params"], ref_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for sa, sb in zip(ranks[0]["states"], ref_states):
        assert sa["step"] == sb["step"] == STEPS
        # the state sees log|g|: a gradient's last-bit difference (summation order) moves it more than the parameters
        for name in state_tensors(sa):
            torch.testing.assert_close(sa[name], sb[name], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
# None: l2l-mlp-distill (each tensor's RMS and the net's); "input": a rule with both per-tensor inputs and no scale;
# "decay": l2l-mlp-distill with weight decay; "default": the shipped default (moving averages in its state)
@pytest.mark.parametrize("power", [None, "input", "decay", "default"])
def test_fsdp2_shards_the_state_and_matches_one_process(tmp_path, power):
    ranks = run_torchrun("fsdp", tmp_path, power)
    ref_params, ref_states = single_process_reference("fsdp", power)
    for a, b, ref in zip(ranks[0]["params"], ranks[1]["params"], ref_params):
        assert torch.equal(a, b)  # the gathered parameters agree
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-5)
    for s0, s1, ref in zip(ranks[0]["states"], ranks[1]["states"], ref_states):
        # each rank keeps the state of its own shard (dim-0 shards are contiguous runs of coordinates)
        assert s0["h0"].shape[0] + s1["h0"].shape[0] == ref["h0"].shape[0]
        assert state_tensors(ref) and set(state_tensors(s0)) == set(state_tensors(ref))
        for name in state_tensors(ref):
            torch.testing.assert_close(torch.cat([s0[name], s1[name]]), ref[name], rtol=1e-3, atol=1e-3)
