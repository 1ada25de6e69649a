"""The optimizer's C++ step (backends/cpp.py, lstm_rule_step) against the reference network step."""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from learned_optim import LearnedOptimizer, cpp_build, nets
from learned_optim.backends import cpp as kernels
from learned_optim.features import preprocess
from learned_optim.nets import NetConfig


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if not cpp_build.available("rule_step"):
        if os.environ.get("LEARNED_OPTIM_REQUIRE_KERNEL"):
            pytest.fail(f"the C++ step kernel did not build: {cpp_build.build_error('rule_step')}")
        pytest.skip(f"C++ step kernel unavailable: {cpp_build.build_error('rule_step')}")


def gradients(n: int, gen: torch.Generator) -> torch.Tensor:
    """Gradients over many orders of magnitude, both preprocessing branches, exact zeros."""
    g = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 4)
    g[: n // 10] *= 1e-6
    g[:: max(n // 5, 1)] = 0.0
    return g


def random_rule(config: NetConfig, gen: torch.Generator, scale: float = 1.0):
    theta = {k: v * scale for k, v in nets.init_theta(config, gen).items()}
    return theta, kernels.pack_lstm(theta, config)


def run_kernel(grad, state, theta, packed, config, sign=1.0):
    state = [s.clone() for s in state]
    update = kernels.lstm_rule_step(grad, state, packed, theta, config, sign)
    return update, state


@given(
    hidden=st.integers(1, 32),
    layers=st.integers(1, 3),
    pre=st.sampled_from(["log_sign", "none"]),
    p=st.floats(2.0, 12.0),
    scale=st.sampled_from([0.5, 1.0, 3.0]),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_the_reference_step(hidden, layers, pre, p, scale, seed):
    config = NetConfig(num_layers=layers, hidden_size=hidden, preprocess=pre, p=p, output_scale=0.1)
    gen = torch.Generator().manual_seed(seed)
    theta, packed = random_rule(config, gen, scale)
    n = 257
    state = [torch.randn(n, hidden, generator=gen) for _ in config.state_names]
    grad = gradients(n, gen)
    for _ in range(3):  # three steps from the same state through both
        ref_update, ref_state = nets.step(theta, preprocess(grad, pre, p), tuple(state), config, impl="reference")
        update, new_state = run_kernel(grad, state, theta, packed, config)
        # the kernel's tanh is good to 1.2e-6 (csrc/rule_step.cpp); a cell state c' = s_f c + s_i t_g carries the
        # gates' error times |c| (a few units for these random states), plus float32 rounding
        torch.testing.assert_close(update, ref_update, rtol=1e-5, atol=1e-5)
        for a, b in zip(new_state, ref_state):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        state, grad = list(ref_state), gradients(n, gen)


def test_kernel_saturates_at_extreme_preactivations(rule):
    """Pre-activations in the hundreds (beyond exp's float32 range) give gates of 0 or 1, never NaN."""
    config = rule.config
    gen = torch.Generator().manual_seed(3)
    theta, packed = random_rule(config, gen, scale=400.0)
    state = [torch.randn(64, config.hidden_size, generator=gen) * 50 for _ in config.state_names]
    grad = gradients(64, gen) * 1e3
    ref_update, ref_state = nets.step(theta, preprocess(grad, config.preprocess, config.p), tuple(state), config)
    update, new_state = run_kernel(grad, state, theta, packed, config)
    assert torch.isfinite(update).all() and all(torch.isfinite(s).all() for s in new_state)
    # sums of terms in the hundreds: float32 rounding of the products alone is ~1e-4 here
    torch.testing.assert_close(update, ref_update, rtol=1e-3, atol=1e-3)
    for a, b in zip(new_state, ref_state):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@given(seed=st.integers(0, 2**16), where=st.lists(st.integers(0, 99), min_size=1, max_size=20))
def test_nonfinite_coordinates_get_no_update_and_keep_their_state(rule, seed, where):
    config = rule.config
    gen = torch.Generator().manual_seed(seed)
    theta, packed = random_rule(config, gen)
    state = [torch.randn(100, config.hidden_size, generator=gen) for _ in config.state_names]
    grad = gradients(100, gen)
    poisoned = grad.clone()
    poisoned[where] = torch.tensor([math.nan, math.inf, -math.inf])[torch.arange(len(where)) % 3]
    clean_update, clean_state = run_kernel(grad, state, theta, packed, config)
    update, new_state = run_kernel(poisoned, state, theta, packed, config)
    bad = torch.zeros(100, dtype=torch.bool)
    bad[where] = True
    assert torch.equal(update[bad], torch.zeros(int(bad.sum())))
    assert torch.equal(update[~bad], clean_update[~bad])  # coordinates are independent: same bits
    for old, new, clean in zip(state, new_state, clean_state):
        assert torch.equal(new[bad], old[bad]) and torch.equal(new[~bad], clean[~bad])


def test_kernel_gives_the_same_bits_for_any_thread_count_and_sign(rule):
    config = rule.config
    gen = torch.Generator().manual_seed(11)
    theta, packed = random_rule(config, gen)
    state = [torch.randn(20000, config.hidden_size, generator=gen) for _ in config.state_names]
    grad = gradients(20000, gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_kernel(grad, state, theta, packed, config)
        torch.set_num_threads(max(threads, 2))
        two = run_kernel(grad, state, theta, packed, config)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and all(torch.equal(a, b) for a, b in zip(one[1], two[1]))
    negated = run_kernel(-grad, state, theta, packed, config, sign=-1.0)
    assert torch.equal(negated[0], one[0]) and all(torch.equal(a, b) for a, b in zip(negated[1], one[1]))


@given(seed=st.integers(0, 2**16), lr=st.sampled_from([-0.01, 0.0, 1e-3, -3.0]),
       where=st.lists(st.integers(0, 299), max_size=10))
def test_fused_update_adds_lr_times_the_update_to_the_parameter(rule, seed, lr, where):
    """param= gives the bits of param.add_(update, alpha=lr) and the same state; non-finite coordinates keep both."""
    config = rule.config
    gen = torch.Generator().manual_seed(seed)
    theta, packed = random_rule(config, gen)
    state = [torch.randn(300, config.hidden_size, generator=gen) for _ in config.state_names]
    grad = gradients(300, gen)
    grad[where] = math.nan
    param = torch.randn(300, generator=gen)
    update, separate_state = run_kernel(grad, state, theta, packed, config, sign=-0.5)
    fused, fused_state = param.clone(), [s.clone() for s in state]
    assert kernels.lstm_rule_step(grad, fused_state, packed, theta, config, -0.5, param=fused, lr=lr) is None
    assert torch.equal(fused, param.clone().add_(update, alpha=lr))
    assert all(torch.equal(a, b) for a, b in zip(fused_state, separate_state))
    assert torch.equal(fused[where], param[where])
    if lr != 0.0 and len(set(where)) < 300:
        assert not torch.equal(fused, param)
    # the readout packed once by the caller (as the optimizer does) gives the same bits
    again, again_state = param.clone(), [s.clone() for s in state]
    kernels.lstm_rule_step(grad, again_state, packed, theta, config, -0.5, param=again, lr=lr,
                           readout=kernels.pack_readout(theta, config))
    assert torch.equal(again, fused) and all(torch.equal(a, b) for a, b in zip(again_state, fused_state))


def test_fused_update_refuses_a_parameter_it_cannot_write(rule):
    config = rule.config
    theta, packed = random_rule(config, torch.Generator().manual_seed(0))
    state = [torch.zeros(8, config.hidden_size) for _ in config.state_names]
    for bad in (torch.zeros(8, dtype=torch.float64), torch.zeros(16)[::2], torch.zeros(9)):
        with pytest.raises(ValueError, match="param"):
            kernels.lstm_rule_step(torch.ones(8), state, packed, theta, config, param=bad, lr=0.1)


@given(n=st.integers(1, 300_000), seed=st.integers(0, 2**16), nonfinite=st.integers(0, 5),
       magnitude=st.sampled_from([1e-38, 1e-20, 1.0, 1e30]))
@example(n=1, seed=742, nonfinite=0, magnitude=1e-38)  # RMS 1.4e-39: 1 / RMS overflows float32, target / RMS does not
def test_cpp_tensor_rms_matches_the_torch_one(n, seed, nonfinite, magnitude):
    """The kernel's (RMS, count): features' values (to float32 rounding), non-finite entries ignored, and the scale
    grad_norm="tensor" makes of it the same."""
    from learned_optim.features import scale_for_rms, tensor_rms

    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 2) * magnitude
    grad[torch.randint(0, n, (nonfinite,), generator=gen)] = torch.tensor([math.nan, math.inf, -math.inf]).repeat(2)[:nonfinite]
    rms, count = tensor_rms(grad, chunk_size=4096)
    got = kernels.tensor_rms(grad)
    assert got == (pytest.approx(float(rms), rel=1e-5), int(torch.isfinite(grad).sum()))
    assert int(count) == int(torch.isfinite(grad).sum())
    assert scale_for_rms(got[0], 0.3) == pytest.approx(float(scale_for_rms(rms, 0.3)), rel=1e-5)


def test_cpp_tensor_rms_where_there_is_nothing_to_normalize():
    from learned_optim.features import scale_for_rms

    assert kernels.tensor_rms(torch.zeros(1000)) == (0.0, 1000)
    assert kernels.tensor_rms(torch.full((10,), math.nan)) == (0.0, 0)
    assert scale_for_rms(0.0, 0.3) == 1.0
    grad = torch.zeros(100_000)
    grad[77] = -4.0  # one finite entry among zeros: RMS = 4 / sqrt(N)
    assert scale_for_rms(kernels.tensor_rms(grad)[0], 0.3) == pytest.approx(0.3 / (4.0 / math.sqrt(100_000)), rel=1e-12)


def test_optimizer_uses_the_kernel_and_falls_back_without_it(rule, monkeypatch):
    def train(count: list) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.Tanh(), torch.nn.Linear(40, 1))
        opt = LearnedOptimizer(model.parameters(), weights=rule, chunk_size=500)
        x, y = torch.randn(64, 30), torch.randn(64, 1)
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    real, calls = kernels.lstm_rule_step, []
    monkeypatch.setattr(kernels, "lstm_rule_step", lambda *a, **k: calls.append(a[0].numel()) or real(*a, **k))
    with_kernel = train(calls)
    # per step one call per tensor: float32 parameters and gradients, so the kernel writes the parameters itself
    # and there is no copy whose memory chunk_size would bound
    assert calls == [1200, 40, 40, 1] * 20
    monkeypatch.setattr(cpp_build, "available", lambda name: False)  # as where it cannot be built
    calls.clear()
    without = train(calls)
    assert calls == []
    for a, b in zip(with_kernel, without):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert max(float((a - b).abs().max()) for a, b in zip(with_kernel, without)) > 0  # two different computations


@given(hidden=st.integers(1, 32), block=st.sampled_from([8, 16]))
def test_packed_layout_puts_each_gate_of_each_unit_in_its_own_column(hidden, block):
    """Units in blocks of `block` ([i f g o] x block columns), a last block of the R units left over
    ([i f g o] x R): every (gate, unit) gets a distinct column inside 4 Hp, and a block's gates sit one
    block width apart."""
    columns = kernels._packed_columns(hidden, block)
    padded = -(-hidden // 4) * 4
    assert columns.shape == (4, hidden)
    assert len(set(columns.reshape(-1).tolist())) == 4 * hidden
    assert int(columns.min()) >= 0 and int(columns.max()) < 4 * padded
    width = columns[1] - columns[0]
    assert torch.equal(columns[2] - columns[1], width) and torch.equal(columns[3] - columns[2], width)
    full = block * (padded // block)
    assert all(w == block for u, w in enumerate(width.tolist()) if u < full)
    assert all(w == padded - full for u, w in enumerate(width.tolist()) if u >= full)
    # the rows are whole vectors of `block` floats, and the last block's gates too (the kernel's loads)
    assert (4 * padded) % block == 0 and (4 * (padded - full)) % block == 0


def test_block_8_layout_is_the_original_one():
    """Blocks of 8 units and a last one of 4, as the kernel's layout was before blocks of 16 (pinned values)."""
    assert kernels._packed_columns(20, 8)[:, [0, 7, 8, 15, 16, 19]].tolist() == [
        [0, 7, 32, 39, 64, 67], [8, 15, 40, 47, 68, 71], [16, 23, 48, 55, 72, 75], [24, 31, 56, 63, 76, 79]]
    assert kernels._packed_columns(20, 16)[:, [0, 15, 16, 19]].tolist() == [
        [0, 15, 64, 67], [16, 31, 68, 71], [32, 47, 72, 75], [48, 63, 76, 79]]


@given(
    hidden=st.integers(1, 32),
    layers=st.integers(1, 4),
    pre=st.sampled_from(["log_sign", "none"]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 70),
)
def test_blocks_of_8_and_16_give_the_same_bits(hidden, layers, pre, dtype, seed, n):
    """The 16-lane path (AVX-512) and the 8-lane one compute every coordinate with the same operations in the
    same order: the same update and state bits, for any hidden size (so any last block), depth, state dtype and
    count of coordinates (so any last pass of fewer coordinates than a pass holds)."""
    if kernels.rule_step_block() != 16:
        pytest.skip("this CPU has no AVX-512: the kernel has only its 8-lane path")
    config = NetConfig(num_layers=layers, hidden_size=hidden, preprocess=pre, p=6.0, output_scale=0.1)
    gen = torch.Generator().manual_seed(seed)
    theta = nets.init_theta(config, gen)
    state = [(torch.randn(n, hidden, generator=gen) * 2).to(dtype) for _ in config.state_names]
    grad = gradients(n, gen)
    results = []
    for block in (8, 16):
        packed = kernels.pack_lstm(theta, config, block=block)
        s = [t.clone() for t in state]
        results.append((kernels.lstm_rule_step(grad, s, packed, theta, config, block=block), s))
    (u8, s8), (u16, s16) = results
    assert torch.equal(u8, u16)
    assert all(torch.equal(a, b) for a, b in zip(s8, s16))


@given(seed=st.integers(0, 2**16), n=st.integers(2, 40), data=st.data())
def test_each_coordinate_gets_the_same_bits_whatever_its_neighbours(rule, seed, n, data):
    """The kernel runs a few coordinates per pass over the weights (and a short last pass): any subset of the
    coordinates, stepped alone, gets the bits it gets among all of them."""
    config = rule.config
    gen = torch.Generator().manual_seed(seed)
    theta, packed = random_rule(config, gen)
    state = [torch.randn(n, config.hidden_size, generator=gen) for _ in config.state_names]
    grad = gradients(n, gen)
    keep = torch.tensor(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    update, new_state = run_kernel(grad, state, theta, packed, config)
    sub_update, sub_state = run_kernel(grad[keep].contiguous(), [s[keep].contiguous() for s in state], theta, packed,
                                       config)
    assert torch.equal(sub_update, update[keep])
    assert all(torch.equal(a, b[keep]) for a, b in zip(sub_state, new_state))


def test_kernel_refuses_a_block_this_build_lacks(rule):
    theta, packed = random_rule(rule.config, torch.Generator().manual_seed(0))
    state = [torch.zeros(4, rule.config.hidden_size) for _ in rule.config.state_names]
    with pytest.raises(RuntimeError, match="block"):
        kernels.lstm_rule_step(torch.ones(4), state, packed, theta, rule.config, block=12)


def test_packed_weights_halve_the_sigmoid_gates_and_leave_padding_zero(rule):
    config = rule.config
    packed = kernels.pack_lstm(rule.theta, config)
    hidden, columns = config.hidden_size, kernels._packed_columns(config.hidden_size, kernels.rule_step_block())
    padding = torch.ones(packed[0].shape[1], dtype=torch.bool)
    padding[columns.reshape(-1)] = False
    for layer, block in enumerate(packed):
        w_ih = rule.theta[f"cells.{layer}.w_ih"].float()
        for gate, factor in enumerate((0.5, 0.5, 1.0, 0.5)):
            expected = w_ih[gate * hidden : (gate + 1) * hidden].t() * factor
            assert torch.equal(block[: w_ih.shape[1], columns[gate]], expected)
        assert not block[:, padding].any()

