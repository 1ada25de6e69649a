"""NetConfig.tensor_count_input: one more input per coordinate, log of the number of tensors the step updates (a
structure input: 4 for a one-hidden-layer MLP with biases, 12 for a five-layer one). The optimizer's three
implementations against the definition are in test_tensor_rms_input.py (its "all" and "count" inputs); here what is
particular to this input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import loss_of, small_model
from learned_optim import LearnedOptimizer
from learned_optim.features import flat_terms
from learned_optim.metatrain import build_parser, config_from_args, widen
from learned_optim.nets import NetConfig
from learned_optim.pretrained import load_weights, random_weights, save_weights


def tensor_input_columns(flat, sizes, config):
    """The per-tensor input columns of a flat gradient (features.flat_terms)."""
    return flat_terms(flat, sizes, config)[1]

COUNT = dict(grad_norm="tensor", grad_norm_target=0.01, tensor_count_input=True)


@settings(deadline=None, max_examples=25)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8), log_c=st.floats(-20, 20),
       seed=st.integers(0, 2**16), with_ratio=st.booleans())
def test_the_column_is_log_of_the_tensor_count_and_ignores_the_gradients(sizes, log_c, seed, with_ratio):
    flat = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    config = NetConfig(tensor_count_input=True, tensor_rms_input=with_ratio)
    columns = tensor_input_columns(flat, sizes, config)
    assert columns.shape == (flat.numel(), 1 + with_ratio)
    torch.testing.assert_close(columns[:, -1], torch.full((flat.numel(),), math.log(len(sizes)), dtype=flat.dtype))
    # the same for other gradients of the same tensors, at any scale, and for all-zero ones
    other = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    for g in (other * 10.0**log_c, torch.zeros_like(flat)):
        assert torch.equal(tensor_input_columns(g, sizes, config)[:, -1], columns[:, -1])
    if with_ratio:  # the ratio column is the one a rule without the count would see
        torch.testing.assert_close(columns[:, :1], tensor_input_columns(flat, sizes, NetConfig(tensor_rms_input=True)))


def _depth_steps(implementation: str, weights, frozen: bool) -> torch.Tensor:
    """One step on small_model; with ``frozen``, one of its seven tensors has no gradient (the step updates six)."""
    model = small_model(seed=3)
    if frozen:
        model.scale.requires_grad_(False)
    opt = LearnedOptimizer(model.parameters(), weights=weights, implementation=implementation)
    before = model.conv.weight.detach().clone()
    loss_of(model, 0).backward()
    opt.step()
    return model.conv.weight.detach() - before


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_the_count_is_of_the_tensors_the_step_updates(implementation):
    """A tensor without a gradient is not counted: freezing one of small_model's seven tensors changes another
    tensor's step exactly as moving the count input from log 7 to log 6 does (seen through the first cell's biases)."""
    rule = random_weights(NetConfig(**COUNT), seed=2)
    four = _depth_steps(implementation, rule, frozen=False)
    three = _depth_steps(implementation, rule, frozen=True)
    assert not torch.allclose(four, three, rtol=1e-4, atol=1e-7)
    # the rule whose biases absorb log(7) - log(6) of the count column, on the frozen model, takes the unfrozen steps
    theta = dict(rule.theta)
    theta["cells.0.b"] = theta["cells.0.b"] + theta["cells.0.w_ih"][:, -1] * math.log(7 / 6)
    shifted = dataclasses.replace(rule, theta=theta, sha256="2" * 64)
    torch.testing.assert_close(_depth_steps(implementation, shifted, frozen=True), four, rtol=1e-5, atol=1e-8)


def test_the_input_travels_in_the_weight_file_and_the_metatrain_flag(tmp_path):
    rule = random_weights(NetConfig(**COUNT, tensor_rms_input=True), seed=1)
    save_weights(tmp_path / "r.safetensors", rule.theta, rule.config, card={"name": "r"})
    loaded = load_weights(str(tmp_path / "r.safetensors"))
    assert loaded.config == rule.config and loaded.theta["cells.0.w_ih"].shape == (80, 4)
    # cards of rules without it are written as before the field existed
    assert "tensor_count_input" not in NetConfig().to_dict() and NetConfig(**COUNT).to_dict()["tensor_count_input"]
    assert not load_weights("l2l-mlp-family-plus").config.tensor_count_input
    parser = build_parser()
    out = ["--task", "two_moons", "--out", str(tmp_path / "x.safetensors")]
    net = config_from_args(parser.parse_args(out + ["--tensor-count-input"])).net
    assert net.tensor_count_input and not net.tensor_rms_input and net.input_size == 3
    with pytest.raises(ValueError, match="Invalid tensor_count_input"):
        NetConfig(tensor_count_input=1)


def test_widening_adds_a_zero_column():
    """From a rule with the tensor input to one that adds the count: the count's column is zero (the same update
    function)."""
    source = random_weights(NetConfig(grad_norm="tensor", tensor_rms_input=True), seed=4)
    target = dataclasses.replace(source.config, tensor_count_input=True)
    wide = widen(source.theta, source.config, target)["cells.0.w_ih"]
    assert wide.shape == (80, 4) and torch.equal(wide[:, :3], source.theta["cells.0.w_ih"]) and not wide[:, 3].any()
    with pytest.raises(ValueError, match="widen"):
        widen(source.theta, source.config, dataclasses.replace(target, hidden_size=7))


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 40), low=st.integers(1, 12), span=st.integers(-1, 20))
def test_the_count_is_clipped_to_the_rules_range(n, low, span):
    """The column reads log of T clipped to [tensor_count_min, tensor_count_max] (max 0: no upper bound): the
    value an unclipped rule reads at the nearest T inside the range."""
    high = 0 if span < 0 else low + span
    config = NetConfig(tensor_count_input=True, tensor_count_min=low, tensor_count_max=high)
    column = tensor_input_columns(torch.ones(n, dtype=torch.float64), [1] * n, config)[:, -1]
    expect = max(n, low) if high == 0 else min(max(n, low), high)
    torch.testing.assert_close(column, torch.full((n,), math.log(expect), dtype=torch.float64))
    # an unbounded rule reads log T itself
    plain = tensor_input_columns(torch.ones(n, dtype=torch.float64), [1] * n, NetConfig(tensor_count_input=True))
    torch.testing.assert_close(plain[:, -1], torch.full((n,), math.log(n), dtype=torch.float64))


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_a_clipped_rule_steps_on_a_small_net_as_an_unclipped_one_at_the_bound(implementation):
    """small_model has seven tensors: a rule clipped to at least 9 takes the steps the same weights take unclipped
    on a net it reads as nine tensors (the biases shifted by log(9 / 7) of the count column), and a rule clipped to
    [1, 7] or [7, 0] the unclipped steps."""
    rule = random_weights(NetConfig(**COUNT), seed=5)
    unclipped = _depth_steps(implementation, rule, frozen=False)
    for low, high in ((1, 7), (7, 0), (2, 30)):
        same = dataclasses.replace(rule, config=dataclasses.replace(rule.config, tensor_count_min=low,
                                                                      tensor_count_max=high), sha256="3" * 64)
        torch.testing.assert_close(_depth_steps(implementation, same, frozen=False), unclipped, rtol=1e-5, atol=1e-8)
    floor = dataclasses.replace(rule, config=dataclasses.replace(rule.config, tensor_count_min=9), sha256="4" * 64)
    clipped = _depth_steps(implementation, floor, frozen=False)
    assert not torch.allclose(clipped, unclipped, rtol=1e-4, atol=1e-7)
    theta = dict(rule.theta)
    theta["cells.0.b"] = theta["cells.0.b"] + theta["cells.0.w_ih"][:, -1] * math.log(9 / 7)
    shifted = dataclasses.replace(rule, theta=theta, sha256="5" * 64)
    torch.testing.assert_close(clipped, _depth_steps(implementation, shifted, frozen=False), rtol=1e-5, atol=1e-8)
    ceiling = dataclasses.replace(rule, config=dataclasses.replace(rule.config, tensor_count_max=5), sha256="6" * 64)
    theta = dict(rule.theta)
    theta["cells.0.b"] = theta["cells.0.b"] + theta["cells.0.w_ih"][:, -1] * math.log(5 / 7)
    torch.testing.assert_close(_depth_steps(implementation, ceiling, frozen=False),
                               _depth_steps(implementation, dataclasses.replace(rule, theta=theta, sha256="7" * 64),
                                            frozen=False), rtol=1e-5, atol=1e-8)


def test_the_range_travels_in_the_card_and_the_metatrain_flag(tmp_path):
    config = NetConfig(**COUNT, tensor_count_min=4, tensor_count_max=12)
    rule = random_weights(config, seed=1)
    save_weights(tmp_path / "r.safetensors", rule.theta, rule.config, card={"name": "r"})
    assert load_weights(str(tmp_path / "r.safetensors")).config == config
    assert config.to_dict()["tensor_count_min"] == 4 and config.to_dict()["tensor_count_max"] == 12
    # an unclipped rule's card is written as before the fields existed
    assert "tensor_count_min" not in NetConfig(**COUNT).to_dict() and "tensor_count_max" not in NetConfig().to_dict()
    parser = build_parser()
    out = ["--task", "two_moons", "--out", str(tmp_path / "x.safetensors"), "--tensor-count-input"]
    net = config_from_args(parser.parse_args(out + ["--tensor-count-range", "4", "10"])).net
    assert (net.tensor_count_min, net.tensor_count_max) == (4, 10)
    assert (config_from_args(parser.parse_args(out)).net.tensor_count_min, NetConfig().tensor_count_max) == (1, 0)
    for bad in (dict(tensor_count_min=0), dict(tensor_count_min=True), dict(tensor_count_min=5, tensor_count_max=4),
                dict(tensor_count_max=-1), dict(tensor_count_min=2.0)):
        with pytest.raises(ValueError, match="Invalid tensor_count_m"):
            NetConfig(**bad)


def test_the_analysis_rule_reads_one_tensor_in_the_rules_range():
    """The analysis form's default count input is one tensor as the rule reads it: log 1 = 0 unclipped, log of the
    lower bound for a rule clipped above one (record() of analyze sets the net's own value)."""
    from learned_optim.analysis import LearnedRule

    plain = random_weights(NetConfig(**COUNT), seed=1)
    assert LearnedRule(plain).tensor_count == 0.0
    clipped = random_weights(NetConfig(**COUNT, tensor_count_min=4, tensor_count_max=10), seed=1)
    assert LearnedRule(clipped).tensor_count == pytest.approx(math.log(4))
