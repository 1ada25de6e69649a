"""The Triton backend (learned_optim/backends/triton.py, lstm_rule_step) against the reference network step.

Runs on a CUDA device, or on the CPU under the Triton interpreter (TRITON_INTERPRET=1);
skipped where triton is not installed or neither is present.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

pytest.importorskip("triton")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from learned_optim import load_weights, nets  # noqa: E402
from learned_optim.backends import triton as triton_backend  # noqa: E402
from learned_optim.features import preprocess  # noqa: E402
from learned_optim.nets import NetConfig  # noqa: E402

pytestmark = [
    pytest.mark.skipif(
        not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
        reason="the Triton kernel needs a CUDA device or TRITON_INTERPRET=1",
    ),
    # the interpreter's numpy exp overflows to inf on saturated gates (as intended: the gate is then 0 or 1)
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

# float32 math on both sides; the kernel's tanh and sigmoid come from exp (about 1e-7 absolute)
TOL = dict(rtol=1e-5, atol=2e-6)


@pytest.fixture(scope="module")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def gradients(n: int, gen: torch.Generator) -> torch.Tensor:
    """Gradients over many orders of magnitude, both log_sign branches, exact zeros."""
    g = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 4)
    g[: n // 10] *= 1e-6
    g[:: max(n // 5, 1)] = 0.0
    return g


def random_state(config: NetConfig, n: int, gen: torch.Generator, scale: float = 1.0) -> list[torch.Tensor]:
    return [torch.randn(n, config.hidden_size, generator=gen) * scale for _ in config.state_names]


def reference(theta, grad, state, config, sign=1.0):
    """nets.step on the same inputs (on the CPU, float32): (update, new state)."""
    theta = {k: v.detach().cpu().float() for k, v in theta.items()}
    g = grad.cpu().float() * sign
    state = tuple(s.cpu().float() for s in state)
    return nets.step(theta, preprocess(g, config.preprocess, config.p), state, config, impl="reference")


def run(grad, state, packed, config, device, sign=1.0, **kwargs):
    """The kernel on copies of ``state`` (moved to ``device``): (update, new state) on the CPU."""
    state = [s.to(device).contiguous().clone() for s in state]
    update = triton_backend.lstm_rule_step(grad.to(device).contiguous(), state, packed, config, sign, **kwargs)
    return update.cpu(), [s.cpu() for s in state]


def assert_matches(update, new_state, ref_update, ref_state, tol=TOL):
    """The kernel's update and new state against the reference's."""
    torch.testing.assert_close(update, ref_update, **tol)
    for a, b in zip(new_state, ref_state):
        torch.testing.assert_close(a, b, **tol)


def check_steps(theta, config, n, device, steps=2, seed=0, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    packed = triton_backend.pack(theta, config, device)
    state = random_state(config, n, gen)
    for _ in range(steps):  # chained steps, each from the reference's state
        grad = gradients(n, gen)
        ref_update, ref_state = reference(theta, grad, state, config)
        update, new_state = run(grad, state, packed, config, device, **kwargs)
        assert_matches(update, new_state, ref_update, ref_state)
        state = list(ref_state)


def test_available():
    assert triton_backend.available()


@pytest.mark.parametrize("name", ["l2l-mnist", "l2l-mlp-family"])
@pytest.mark.parametrize("n", [1, 37, 1000])
def test_shipped_rules_match_the_reference(name, n, device):
    rule = load_weights(name)
    assert triton_backend.supports(rule.config)
    check_steps(rule.theta, rule.config, n, device)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("hidden", [7, 20, 32])
@pytest.mark.parametrize("pre", ["log_sign", "none"])
def test_random_rules_match_the_reference(layers, hidden, pre, device):
    config = NetConfig(num_layers=layers, hidden_size=hidden, preprocess=pre, p=7.0, output_scale=0.3)
    theta = nets.init_theta(config, torch.Generator().manual_seed(hidden * 10 + layers))
    check_steps(theta, config, 150, device, seed=layers + hidden)


@pytest.mark.parametrize("block", [16, 32, 128])
def test_any_block_size(block, device):
    rule = load_weights("l2l-mnist")
    check_steps(rule.theta, rule.config, 201, device, steps=1, block=block)


@pytest.mark.parametrize("maximize", [False, True])
def test_a_device_scale_and_the_fused_parameter_update(maximize, device):
    """scale= multiplies the gradient on the device; param= gets param + lr * update and no update is returned."""
    rule = load_weights("l2l-mlp-family")
    config, n = rule.config, 333
    gen = torch.Generator().manual_seed(5)
    packed = triton_backend.pack(rule.theta, config, device)
    state = random_state(config, n, gen)
    grad = gradients(n, gen)
    grad[7] = float("inf")
    scale, sign, lr = torch.tensor(37.5), (-1.0 if maximize else 1.0), 0.3
    ref_update, ref_state = reference(rule.theta, grad * scale, state, config, sign)
    param = torch.randn(n, generator=gen)
    states = [s.to(device).contiguous().clone() for s in state]
    out = triton_backend.lstm_rule_step(grad.to(device), states, packed, config, sign, scale=scale.to(device),
                                     param=param.to(device).clone(), lr=lr)
    assert out is None
    moved = triton_backend.lstm_rule_step(grad.to(device), [s.to(device).contiguous().clone() for s in state], packed,
                                       config, sign, scale=scale.to(device))
    ok = torch.isfinite(grad)
    torch.testing.assert_close(moved.cpu()[ok], ref_update[ok], **TOL)
    assert moved[7].cpu() == 0
    fused_param = param.to(device).clone()
    triton_backend.lstm_rule_step(grad.to(device), [s.to(device).contiguous().clone() for s in state], packed, config,
                               sign, scale=scale.to(device), param=fused_param, lr=lr)
    torch.testing.assert_close(fused_param.cpu()[ok], (param + lr * ref_update)[ok], **TOL)
    assert fused_param[7].cpu() == param[7]  # the non-finite coordinate is left where it was
    for a, b, before in zip(states, ref_state, state):
        torch.testing.assert_close(a.cpu()[ok], b[ok], **TOL)
        assert torch.equal(a.cpu()[7], before[7])
    with pytest.raises(ValueError, match="param"):
        triton_backend.lstm_rule_step(grad.to(device), states, packed, config, param=torch.zeros(n - 1, device=device))
    with pytest.raises(ValueError, match="scale"):
        triton_backend.lstm_rule_step(grad.to(device), states, packed, config, scale=torch.ones(2, device=device))


def test_the_products_precision_follows_torchs_float32_matmul_setting():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert triton_backend.torch_precision() == "ieee"
        torch.set_float32_matmul_precision("high")
        assert triton_backend.torch_precision() == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)
    for precision, (block, warps) in triton_backend.DEFAULT_LAUNCH.items():
        assert triton_backend.default_num_warps(block, precision) == warps


@settings(max_examples=15)
@given(
    hidden=st.integers(1, 32),
    layers=st.integers(1, 4),
    pre=st.sampled_from(["log_sign", "none"]),
    p=st.floats(2.0, 12.0),
    scale=st.sampled_from([0.5, 1.0, 3.0]),
    n=st.integers(1, 90),
    seed=st.integers(0, 2**16),
)
def test_property_matches_the_reference(hidden, layers, pre, p, scale, n, seed, device):
    config = NetConfig(num_layers=layers, hidden_size=hidden, preprocess=pre, p=p, output_scale=0.1)
    gen = torch.Generator().manual_seed(seed)
    theta = {k: v * scale for k, v in nets.init_theta(config, gen).items()}
    packed = triton_backend.pack(theta, config, device)
    state = random_state(config, n, gen)
    grad = gradients(n, gen)
    ref_update, ref_state = reference(theta, grad, state, config)
    update, new_state = run(grad, state, packed, config, device)
    assert_matches(update, new_state, ref_update, ref_state)


@pytest.mark.parametrize("sign", [-1.0, 3.7e-4, -250.0])
def test_sign_and_scale_multiply_the_gradient(sign, device):
    rule = load_weights("l2l-mnist")
    config, theta = rule.config, rule.theta
    gen = torch.Generator().manual_seed(5)
    packed = triton_backend.pack(theta, config, device)
    state, grad = random_state(config, 77, gen), gradients(77, gen)
    ref_update, ref_state = reference(theta, grad, state, config, sign=sign)
    update, new_state = run(grad, state, packed, config, device, sign=sign)
    assert_matches(update, new_state, ref_update, ref_state)


def test_nonfinite_coordinates_get_no_update_and_keep_their_state(device):
    rule = load_weights("l2l-mnist")
    config = rule.config
    gen = torch.Generator().manual_seed(9)
    packed = triton_backend.pack(rule.theta, config, device)
    n = 100
    state, grad = random_state(config, n, gen), gradients(n, gen)
    where = [0, 3, 17, 63, 64, 65, 99]
    poisoned = grad.clone()
    poisoned[where] = torch.tensor([math.nan, math.inf, -math.inf] * 3)[: len(where)]
    clean_update, clean_state = run(grad, state, packed, config, device)
    update, new_state = run(poisoned, state, packed, config, device)
    bad = torch.zeros(n, dtype=torch.bool)
    bad[where] = True
    assert torch.equal(update[bad], torch.zeros(len(where)))
    assert torch.isfinite(update).all()
    assert torch.equal(update[~bad], clean_update[~bad])  # coordinates are independent: same bits
    for old, new, clean in zip(state, new_state, clean_state):
        assert torch.equal(new[bad], old[bad]) and torch.equal(new[~bad], clean[~bad])


def test_a_huge_sign_that_overflows_counts_as_nonfinite(device):
    """sign * grad is tested, not grad: a finite gradient times a scale can overflow to inf."""
    rule = load_weights("l2l-mnist")
    config = rule.config
    packed = triton_backend.pack(rule.theta, config, device)
    state = random_state(config, 3, torch.Generator().manual_seed(1))
    grad = torch.tensor([1e30, 1.0, -1e30])
    update, new_state = run(grad, state, packed, config, device, sign=1e10)
    assert update[0] == 0 and update[2] == 0 and update[1] != 0
    for old, new in zip(state, new_state):
        assert torch.equal(new[[0, 2]], old[[0, 2]]) and not torch.equal(new[1], old[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_state_storage(dtype, device):
    """The state is read from its dtype, the math is float32, the new state is rounded on store."""
    rule = load_weights("l2l-mnist")
    config, theta = rule.config, rule.theta
    gen = torch.Generator().manual_seed(2)
    packed = triton_backend.pack(theta, config, device)
    n = 130
    state = [s.to(dtype) for s in random_state(config, n, gen)]
    for _ in range(2):
        grad = gradients(n, gen)
        ref_update, ref_state = reference(theta, grad, state, config)  # from the stored values, in float32
        update, new_state = run(grad, state, packed, config, device)
        assert all(s.dtype == dtype for s in new_state)
        torch.testing.assert_close(update, ref_update, **TOL)  # the readout uses the float32 h
        for a, b in zip(new_state, ref_state):
            torch.testing.assert_close(a, b.to(dtype))  # dtype's default tolerance: at most a rounding apart
            # almost all entries round to the very same value
            assert (a != b.to(dtype)).float().mean() < 0.02
        state = new_state


def test_extreme_preactivations_saturate_without_nan(device):
    rule = load_weights("l2l-mnist")
    config = rule.config
    gen = torch.Generator().manual_seed(3)
    theta = {k: v * 400.0 for k, v in nets.init_theta(config, gen).items()}
    packed = triton_backend.pack(theta, config, device)
    state = random_state(config, 64, gen, scale=50.0)
    grad = gradients(64, gen) * 1e3
    ref_update, ref_state = reference(theta, grad, state, config)
    update, new_state = run(grad, state, packed, config, device)
    assert torch.isfinite(update).all() and all(torch.isfinite(s).all() for s in new_state)
    torch.testing.assert_close(update, ref_update, rtol=1e-3, atol=1e-3)
    for a, b in zip(new_state, ref_state):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_tf32_products_are_close(device):
    rule = load_weights("l2l-mnist")
    config = rule.config
    gen = torch.Generator().manual_seed(4)
    packed = triton_backend.pack(rule.theta, config, device)
    state, grad = random_state(config, 100, gen), gradients(100, gen)
    ref_update, ref_state = reference(rule.theta, grad, state, config)
    # tf32: 10-bit mantissas in the products; tf32x3: split in three tf32 products, about float32's accuracy
    for precision, tol in (("tf32", dict(rtol=2e-2, atol=2e-2)), ("tf32x3", dict(rtol=1e-4, atol=2e-5))):
        update, new_state = run(grad, state, packed, config, device, input_precision=precision)
        assert_matches(update, new_state, ref_update, ref_state, tol)


def test_empty_gradient(device):
    rule = load_weights("l2l-mnist")
    packed = triton_backend.pack(rule.theta, rule.config, device)
    update, state = run(torch.zeros(0), random_state(rule.config, 0, torch.Generator()), packed, rule.config, device)
    assert update.shape == (0,)


def test_supports_and_argument_checks(device):
    assert not triton_backend.supports(NetConfig(cell="gru"))
    # a moments rule (the default) is not in the kernel: on CUDA it takes the batched path
    assert not triton_backend.supports(NetConfig(preprocess="moments", output="residual", num_layers=1, hidden_size=8))
    assert not triton_backend.supports(NetConfig(hidden_size=33))
    assert not triton_backend.supports(NetConfig(num_layers=5))
    assert triton_backend.supports(NetConfig(num_layers=4, hidden_size=32, preprocess="none"))
    with pytest.raises(ValueError):
        triton_backend.pack(nets.init_theta(NetConfig(cell="gru")), NetConfig(cell="gru"), device)
    rule = load_weights("l2l-mnist")
    config = rule.config
    packed = triton_backend.pack(rule.theta, config, device)
    state = [s.to(device) for s in random_state(config, 10, torch.Generator())]
    grad = torch.zeros(10, device=device)
    with pytest.raises(ValueError):  # packed for another config
        triton_backend.lstm_rule_step(grad, state, packed, NetConfig(hidden_size=20, num_layers=1), 1.0)
    with pytest.raises(ValueError):
        triton_backend.lstm_rule_step(grad, state[:2], packed, config, 1.0)
    with pytest.raises(ValueError):
        triton_backend.lstm_rule_step(grad.double(), state, packed, config, 1.0)
    with pytest.raises(ValueError):
        triton_backend.lstm_rule_step(grad, state, packed, config, 1.0, input_precision="bf16")
    with pytest.raises(ValueError):
        triton_backend.lstm_rule_step(grad, state, packed, config, 1.0, block=48)
    with pytest.raises(ValueError):  # one dtype for all state tensors
        triton_backend.lstm_rule_step(grad, [state[0].half(), *state[1:]], packed, config, 1.0)


# -- LearnedOptimizer on the Triton path --------------------------------------------------------


@pytest.fixture
def triton_path(monkeypatch, device):
    """LearnedOptimizer's fast path through the Triton kernel, also on the CPU under the interpreter."""
    from learned_optim.backends import cpp

    if device == "cpu":  # the C++ backend steps aside; the Triton one (under the interpreter) takes "fast"
        monkeypatch.setattr(cpp.CppBackend, "covers", staticmethod(lambda context, d: False))
        monkeypatch.setattr(triton_backend.TritonBackend, "covers", staticmethod(lambda context, d: True))
    calls = []
    original = triton_backend.lstm_rule_step
    monkeypatch.setattr(triton_backend, "lstm_rule_step", lambda *a, **k: calls.append(a[0].numel()) or original(*a, **k))
    return calls


@pytest.mark.parametrize("weights, state_dtype, maximize, param_dtype", [
    ("l2l-mlp-distill", torch.float32, False, torch.float32),  # grad_norm="tensor", the per-tensor inputs (folded)
    ("l2l-mlp-family", torch.float32, False, torch.float32),  # grad_norm="tensor": the per-tensor scale in the kernel
    ("l2l-mnist", torch.float32, True, torch.float32),
    ("l2l-mlp-distill", torch.bfloat16, False, torch.float32),
    ("l2l-mlp-distill", torch.float32, False, torch.bfloat16),  # not fused: the update is added outside the kernel
    ("tensor_rms_input", torch.float32, False, torch.float32),  # the per-tensor input folded into layer 0's biases
    ("both_inputs", torch.float32, False, torch.float32),  # that and the tensor count, both folded
])
def test_learned_optimizer_on_the_triton_path_matches_the_torch_path(triton_path, device, weights, state_dtype, maximize,
                                                                    param_dtype):
    from learned_optim import LearnedOptimizer

    gen = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (33,), (3, 2, 4)]
    params = {impl: [torch.nn.Parameter((torch.randn(s, generator=torch.Generator().manual_seed(i)) * 0.1).to(device, param_dtype))
                     for i, s in enumerate(shapes)] for impl in ("fast", "torch")}
    if weights in ("tensor_rms_input", "both_inputs"):
        from learned_optim.pretrained import random_weights

        weights = random_weights(NetConfig(grad_norm="tensor", grad_norm_target=0.01, tensor_rms_input=True,
                                           tensor_count_input=weights == "both_inputs"), seed=1)
    opts = {impl: LearnedOptimizer(ps, weights=weights, lr=0.5, maximize=maximize, chunk_size=16, state_dtype=state_dtype,
                                   implementation=impl) for impl, ps in params.items()}
    for _ in range(3):
        grads = [torch.randn(s, generator=gen) * 1e-3 for s in shapes]
        grads[1][4] = float("nan")  # skipped: update 0, state kept
        for impl in opts:
            for p, g in zip(params[impl], grads):
                p.grad = g.to(device, param_dtype)
            opts[impl].step()
    sizes = [math.prod(s) for s in shapes]
    if param_dtype == torch.float32:  # nothing to copy, the update fused: one launch per tensor
        assert triton_path == sizes * 3
    else:  # a float32 copy of each slice of the gradient and its update: slices of at most chunk_size
        assert triton_path and max(triton_path) <= 16 and sum(triton_path) == 3 * sum(sizes)
    tol = TOL if state_dtype == torch.float32 else dict(rtol=2e-2, atol=1e-4)
    for fast, ref in zip(params["fast"], params["torch"]):
        torch.testing.assert_close(fast.detach(), ref.detach(), **tol)
        for name in opts["fast"].config.state_names:
            torch.testing.assert_close(opts["fast"].state[fast][name].float(), opts["torch"].state[ref][name].float(), **tol)
    assert opts["fast"].state[params["fast"][1]]["h0"][4].abs().sum() == 0  # the nan coordinate never left its zero state


# -- grad_norm's per-tensor scale --------------------------------------------------------------


def tensor_scale(grad: torch.Tensor, target: float, block: int = triton_backend.SCALE_BLOCK) -> torch.Tensor:
    """The factor the optimizer puts on a CUDA gradient: the Triton kernel's RMS through features.scale_for_rms,
    in float32 (as LearnedOptimizer hands it to the kernel)."""
    from learned_optim.features import scale_for_rms

    return scale_for_rms(triton_backend.tensor_rms(grad, block=block)[0], target).to(torch.float32)


@settings(deadline=None, max_examples=25)
@given(n=st.integers(0, 20_000), seed=st.integers(0, 2**16), nonfinite=st.integers(0, 4),
       magnitude=st.sampled_from([1e-40, 1e-20, 1.0, 1e30]), block=st.sampled_from([16, 1024, 4096]))
def test_tensor_scale_matches_the_torch_one(device, n, seed, nonfinite, magnitude, block):
    """One float64 pass: the torch reduction's value (to float32 rounding), non-finite entries ignored."""
    from learned_optim.features import scale_for_rms, tensor_rms

    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 2) * magnitude
    if n:
        grad[torch.randint(0, n, (nonfinite,), generator=gen)] = torch.tensor([math.nan, math.inf, -math.inf, math.nan])[:nonfinite]
    got = tensor_scale(grad.to(device), 0.3, block=block)
    assert got.dtype == torch.float32 and got.shape == () and got.device.type == torch.device(device).type
    finite = grad[torch.isfinite(grad)].double()
    rms = float(finite.square().mean().sqrt()) if finite.numel() else 0.0
    exact = torch.tensor(min(0.3 / rms, torch.finfo(torch.float32).max) if rms > 0 else 1.0, dtype=torch.float32)
    torch.testing.assert_close(got.cpu(), exact, rtol=2e-6, atol=0)
    if magnitude > 1e-40:  # all-subnormal: the float32 torch version loses bits in its rescaling by the largest entry
        torch.testing.assert_close(got.cpu(), scale_for_rms(tensor_rms(grad)[0], 0.3).float(), rtol=2e-6, atol=0)
    got_rms, got_count = triton_backend.tensor_rms(grad.to(device), block=block)  # what the per-tensor inputs combine
    assert got_rms.dtype == torch.float64 and int(got_count) == finite.numel()
    assert float(got_rms) == pytest.approx(rms, rel=1e-12)


def test_tensor_scale_partial_sums_do_not_grow_with_the_tensor(device, monkeypatch):
    """More blocks than programs: each program takes every programs-th block; the value is the same."""
    gen = torch.Generator().manual_seed(5)
    grad = torch.randn(5000, generator=gen) * 1e-3
    grad[123] = math.inf
    wide = tensor_scale(grad.to(device), 0.3, block=16)  # 313 blocks, 313 programs
    monkeypatch.setattr(triton_backend, "SCALE_PROGRAMS", 7)  # 313 blocks over 7 programs: 45 rounds, the last partial
    narrow = tensor_scale(grad.to(device), 0.3, block=16)
    torch.testing.assert_close(narrow, wide, rtol=1e-6, atol=0)
    finite = torch.cat([grad[:123], grad[124:]]).double()
    assert float(narrow) == pytest.approx(0.3 / float(finite.square().mean().sqrt()), rel=1e-6)


def test_tensor_scale_is_one_where_there_is_nothing_to_normalize(device):
    for grad in (torch.zeros(100), torch.full((10,), math.nan), torch.zeros(0)):
        assert float(tensor_scale(grad.to(device), 0.3)) == 1.0
    with pytest.raises(ValueError):
        triton_backend.tensor_rms(torch.zeros(10, dtype=torch.float64, device=device))
