import dataclasses
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from learned_optim import nets
from learned_optim.nets import NetConfig


def random_state(config, n, gen, scale=1.0, dtype=torch.float32):
    return tuple(torch.randn(n, config.hidden_size, generator=gen, dtype=dtype) * scale for _ in config.state_names)


def test_lstm_matches_torch_lstmcell():
    config = NetConfig(num_layers=2, hidden_size=20)
    theta = nets.init_theta(config, torch.Generator().manual_seed(0))
    cells = [torch.nn.LSTMCell(config.input_size if l == 0 else 20, 20) for l in range(2)]
    with torch.no_grad():
        for l, cell in enumerate(cells):
            cell.weight_ih.copy_(theta[f"cells.{l}.w_ih"])
            cell.weight_hh.copy_(theta[f"cells.{l}.w_hh"])
            cell.bias_ih.copy_(theta[f"cells.{l}.b"])
            cell.bias_hh.zero_()
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(50, 2, generator=gen)
        state = random_state(config, 50, gen)
        update, new = nets.step(theta, x, state, config)
        h0, c0 = cells[0](x, (state[0], state[1]))
        h1, c1 = cells[1](h0, (state[2], state[3]))
        readout = (h1 @ theta["readout.w"].t() + theta["readout.b"]).squeeze(1) * 0.1
    torch.testing.assert_close(new, (h0, c0, h1, c1), rtol=0, atol=1e-6)
    torch.testing.assert_close(update, readout, rtol=0, atol=1e-7)


def test_gru_matches_torch_grucell():
    config = NetConfig(cell="gru", num_layers=1, hidden_size=8, preprocess="none")
    theta = nets.init_theta(config, torch.Generator().manual_seed(0))
    cell = torch.nn.GRUCell(1, 8)
    with torch.no_grad():
        cell.weight_ih.copy_(theta["cells.0.w_ih"])
        cell.weight_hh.copy_(theta["cells.0.w_hh"])
        cell.bias_ih.copy_(theta["cells.0.b_ih"])
        cell.bias_hh.copy_(theta["cells.0.b_hh"])
        x, h = torch.randn(30, 1), torch.randn(30, 8)
        _, (new_h,) = nets.step(theta, x, (h,), config)
        torch.testing.assert_close(new_h, cell(x, h), rtol=0, atol=1e-6)


@given(
    n=st.integers(1, 300),
    layers=st.integers(1, 3),
    hidden=st.integers(1, 24),
    seed=st.integers(0, 10_000),
    impl=st.sampled_from(["fast", "cpp"]),
)
def test_fast_cells_match_reference(n, layers, hidden, seed, impl):
    config = NetConfig(num_layers=layers, hidden_size=hidden)
    gen = torch.Generator().manual_seed(seed)
    theta = nets.init_theta(config, gen)
    x = torch.randn(n, config.input_size, generator=gen)
    state = random_state(config, n, gen, scale=3.0)
    with torch.no_grad():
        ref_u, ref_s = nets.step(theta, x, state, config, impl="reference")
        fast_u, fast_s = nets.step(theta, x, state, config, impl=impl)
    torch.testing.assert_close(fast_u, ref_u, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_s, ref_s, rtol=1e-5, atol=1e-5)


def _theta_grads(theta, x, state, config, impl, weights):
    update, new = nets.step(theta, x, state, config, impl=impl)
    objective = (update * weights).sum() + sum((s * s).sum() for s in new)
    return torch.autograd.grad(objective, list(theta.values()) + [state[0], state[1], state[3]])


def test_fast_cell_gradients_match_reference():
    config = NetConfig(hidden_size=6)
    gen = torch.Generator().manual_seed(3)
    theta = {k: v.double().requires_grad_(True) for k, v in nets.init_theta(config, gen).items()}
    x = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    state = tuple(s.requires_grad_(True) for s in random_state(config, 40, gen, dtype=torch.float64))
    weights = torch.randn(40, generator=gen, dtype=torch.float64)
    reference = _theta_grads(theta, x, state, config, "reference", weights)
    for ref, fast in zip(reference, _theta_grads(theta, x, state, config, "fast", weights)):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)


def test_cpp_cell_gradients_match_reference():
    """The C++ kernel's hand-written backward, in float32 against the reference cell's autograd."""
    from learned_optim import cpp_build

    if not cpp_build.available("lstm_cell"):
        if os.environ.get("LEARNED_OPTIM_REQUIRE_KERNEL"):
            pytest.fail(f"the C++ kernel did not build: {cpp_build.build_error('lstm_cell')}")
        pytest.skip(f"C++ kernel unavailable: {cpp_build.build_error('lstm_cell')}")
    config = NetConfig(num_layers=2, hidden_size=20)
    gen = torch.Generator().manual_seed(5)
    theta = {k: v.requires_grad_(True) for k, v in nets.init_theta(config, gen).items()}
    x = torch.randn(300, 2, generator=gen)
    state = tuple(s.requires_grad_(True) for s in random_state(config, 300, gen))
    weights = torch.randn(300, generator=gen)
    reference = _theta_grads(theta, x, state, config, "reference", weights)
    for ref, cpp in zip(reference, _theta_grads(theta, x, state, config, "cpp", weights)):
        torch.testing.assert_close(cpp, ref, rtol=1e-4, atol=1e-4)


def test_cpp_cell_is_finite_and_right_at_extreme_preactivations():
    """Gate pre-activations far beyond exp's float32 range (|z| > 88) must saturate, not turn NaN."""
    from learned_optim import cpp_build

    if not cpp_build.available("lstm_cell"):
        pytest.skip("C++ kernel unavailable")
    config = NetConfig(num_layers=1, hidden_size=4)
    theta = nets.init_theta(config, torch.Generator().manual_seed(0))
    theta = {k: v * 400 for k, v in theta.items()}  # huge weights: |pre-activations| in the hundreds
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 2, generator=gen) * 10
    state = tuple(torch.randn(64, 4, generator=gen) * 50 for _ in config.state_names)
    ref_u, ref_s = nets.step(theta, x, state, config, impl="reference")
    cpp_u, cpp_s = nets.step(theta, x, state, config, impl="cpp")
    assert torch.isfinite(cpp_u).all() and all(torch.isfinite(s).all() for s in cpp_s)
    torch.testing.assert_close(cpp_u, ref_u, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(cpp_s, ref_s, rtol=1e-4, atol=1e-3)


def test_cpp_cell_falls_back_off_cpu_float32():
    # float64 is not the kernel's dtype: the PyTorch fast cell computes it, in float64
    config = NetConfig(hidden_size=4)
    theta = {k: v.double() for k, v in nets.init_theta(config).items()}
    x, state = torch.randn(5, 2, dtype=torch.float64), random_state(config, 5, torch.Generator(), dtype=torch.float64)
    cpp_u, _ = nets.step(theta, x, state, config, impl="cpp")
    fast_u, _ = nets.step(theta, x, state, config, impl="fast")
    assert cpp_u.dtype == torch.float64 and torch.equal(cpp_u, fast_u)
    with pytest.raises(ValueError, match="Invalid impl: 'gpu'"):
        nets.step(theta, x, state, config, impl="gpu")


@given(n=st.integers(1, 50), impl=st.sampled_from(["reference", "fast", "cpp"]), cell=st.sampled_from(["lstm", "gru"]))
def test_step_is_pure(n, impl, cell):
    config = NetConfig(cell=cell, hidden_size=5)
    gen = torch.Generator().manual_seed(n)
    theta = nets.init_theta(config, gen)
    x = torch.randn(n, 2, generator=gen)
    state = random_state(config, n, gen)
    copies = ({k: v.clone() for k, v in theta.items()}, x.clone(), tuple(s.clone() for s in state))
    first = nets.step(theta, x, state, config, impl=impl)
    second = nets.step(theta, x, state, config, impl=impl)
    assert torch.equal(first[0], second[0])
    for k in theta:
        assert torch.equal(theta[k], copies[0][k])
    assert torch.equal(x, copies[1])
    assert all(torch.equal(a, b) for a, b in zip(state, copies[2]))


def test_rows_are_independent():
    # coordinatewise: a row's result does not depend on the other rows in the batch
    config = NetConfig()
    gen = torch.Generator().manual_seed(0)
    theta = nets.init_theta(config, gen)
    x = torch.randn(64, 2, generator=gen)
    state = random_state(config, 64, gen)
    with torch.no_grad():
        full, _ = nets.step(theta, x, state, config)
        part, _ = nets.step(theta, x[10:20], tuple(s[10:20] for s in state), config)
    torch.testing.assert_close(part, full[10:20], rtol=0, atol=1e-7)


def test_readout_matches_step():
    config = NetConfig()
    gen = torch.Generator().manual_seed(0)
    theta = nets.init_theta(config, gen)
    update, new = nets.step(theta, torch.randn(9, 2, generator=gen), nets.init_state(config, 9), config)
    torch.testing.assert_close(nets.readout(theta, new, config), update)


def test_shapes_and_state_names():
    config = NetConfig()
    shapes = nets.theta_shapes(config)
    assert shapes["cells.0.w_ih"] == (80, 2) and shapes["cells.1.w_hh"] == (80, 20) and shapes["readout.w"] == (1, 20)
    assert config.state_names == ("h0", "c0", "h1", "c1") and config.state_size == 80
    gru = NetConfig(cell="gru", num_layers=3)
    assert gru.state_names == ("h0", "h1", "h2")
    assert {k: tuple(v.shape) for k, v in nets.init_theta(config).items()} == shapes


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cell", "rnn", "Invalid cell: 'rnn'"),
        ("num_layers", 0, "Invalid num_layers: 0"),
        ("hidden_size", -3, "Invalid hidden_size: -3"),
        ("preprocess", "log", "Invalid preprocess: 'log'"),
        ("p", 0.0, "Invalid p: 0.0"),
        ("output_scale", float("nan"), "Invalid output_scale: nan"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        NetConfig(**{field: value})


def test_config_round_trip():
    config = NetConfig(cell="gru", num_layers=1, hidden_size=7, preprocess="none", p=5.0, output_scale=0.01)
    assert NetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown network config keys"):
        NetConfig.from_dict({**config.to_dict(), "dropout": 0.1})
    assert dataclasses.is_dataclass(config)
