"""The shipped rules' steps, pinned: parameters and states after a few steps on a fixed model, recorded with the
package as it was before its modules were reorganized (tests/data/pinned_steps.safetensors). Every implementation
must keep giving them: bit for bit on the CPU they were recorded on (the same code and CPU give the same bits), to
float32 rounding on another CPU (another instruction set may round the same sums differently)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from learned_optim import LearnedOptimizer, cpp_build

PINNED = Path(__file__).resolve().parent / "data" / "pinned_steps.safetensors"
CASES = [("l2l-mlp-distill", "reference", "f32"), ("l2l-mlp-distill", "torch", "f32"), ("l2l-mlp-distill", "fast", "f32"),
         ("l2l-mlp-distill", "fast", "bf16"), ("l2l-mlp-family", "fast", "f32"), ("l2l-mlp-family", "reference", "f32"),
         ("l2l-mnist", "fast", "f32"), ("l2l-mnist", "reference", "f32"), ("re-linreg", "torch", "f32"),
         ("re-linreg", "reference", "f32")]


def model_and_data():
    gen = torch.Generator().manual_seed(1234)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model, torch.randn(16, 6, generator=gen), torch.randn(16, 4, generator=gen)


def run(rule: str, implementation: str, state: str, steps: int = 6) -> dict[str, torch.Tensor]:
    model, x, y = model_and_data()
    opt = LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation,
                           state_dtype=torch.bfloat16 if state == "bf16" else torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    out = {}
    for i, p in enumerate(model.parameters()):
        out[f"param.{i}"] = p.detach().clone()
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor):
                out[f"state.{i}.{key}"] = value.detach().float().clone()
    return out


@pytest.fixture
def recorded_threads():
    """The thread count the values were recorded with: a matmul's summation order, and so its last bit, may depend
    on how many threads split it (another test may have changed the count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("rule,implementation,state", CASES)
def test_the_shipped_rules_take_their_pinned_steps(rule, implementation, state, recorded_threads):
    with safe_open(str(PINNED), framework="pt") as pinned:
        same_cpu = pinned.metadata()["cpu_tag"] == cpp_build.cpu_tag()
        prefix = f"{rule}/{implementation}/{state}/"
        expected = {key[len(prefix):]: pinned.get_tensor(key) for key in pinned.keys() if key.startswith(prefix)}
    got = run(rule, implementation, state)
    assert set(got) == set(expected)
    for key, value in got.items():
        if same_cpu:
            assert torch.equal(value, expected[key]), f"{key} moved by {float((value - expected[key]).abs().max()):.3g}"
        elif state == "bf16":  # a last-bit difference before rounding to bfloat16 can move a state by one of its steps
            torch.testing.assert_close(value, expected[key], rtol=2e-2, atol=1e-3)
        else:
            torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
