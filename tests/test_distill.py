"""learned_optim.distill: the routed teacher, the student that starts as the base rule, a distillation that learns,
and the command line that writes a loadable rule with its recipe."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import needs_mnist
from learned_optim import load_weights
from learned_optim.distill import DistillConfig, Distiller, main, student_config, teacher_update
from learned_optim.pretrained import save_weights

# mlp-shallow's one two-layer sigmoid net is routed: the only member with six tensors, so a student that reads the
# tensor count can tell it apart
TINY = dict(family="mlp-shallow", route_depth=2, problems=10, rounds=1, passes=0, coords=40, steps=4, lr=3e-3)


@settings(deadline=None, max_examples=40)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=7), w=st.floats(0, 1), routed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_the_teacher_takes_the_specialists_first_layer_and_mixes_the_output_layer(sizes, w, routed, seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(sum(sizes), generator=gen), torch.randn(sum(sizes), generator=gen)
    out = teacher_update(a, b, sizes, routed, w)
    if not routed:
        assert torch.equal(out, a)
        return
    n = len(sizes)
    for i, (o, pa, pb) in enumerate(zip(out.split(sizes), a.split(sizes), b.split(sizes))):
        expect = pb if i < 2 else (1 - w) * pa + w * pb if i >= n - 2 else pa
        torch.testing.assert_close(o, expect)


def test_routing_is_by_depth_and_activation():
    config = DistillConfig()
    assert config.routed({"hidden": [20], "activation": "sigmoid"})
    assert not config.routed({"hidden": [20], "activation": "relu"})
    assert not config.routed({"hidden": [20, 20], "activation": "sigmoid"})
    assert not config.routed({})  # a problem that is not an MLP (quadratic, linreg)
    assert DistillConfig(route_depth=2, route_activation="tanh").routed({"hidden": [8, 8], "activation": "tanh"})
    routed = [config.routed(options) for _, options in DistillConfig(family="mlp-family-plus").members]
    assert sum(routed) == 4  # its four one-hidden-layer sigmoid nets


@pytest.mark.parametrize("bad", [dict(family="nope"), dict(output_weight=1.5), dict(problems=0), dict(passes=-1),
                                 dict(lr=0.0), dict(route_depth=True)])
def test_bad_recipes_are_refused(bad):
    with pytest.raises(ValueError, match="Invalid"):
        DistillConfig(**bad)


def test_the_student_reads_the_count_in_its_range():
    base = load_weights("l2l-mlp-family-plus").config
    net = student_config(base, DistillConfig(tensor_count_min=4, tensor_count_max=10))
    assert net.tensor_count_input and (net.tensor_count_min, net.tensor_count_max) == (4, 10)
    assert dataclasses.replace(net, tensor_count_input=False, tensor_count_min=1, tensor_count_max=0) == base
    assert student_config(base, DistillConfig(count_input=False)) == base


def _doubled(rule):
    """The rule with its readout doubled: every step twice the rule's."""
    theta = dict(rule.theta)
    theta["readout.w"], theta["readout.b"] = theta["readout.w"] * 2, theta["readout.b"] * 2
    return dataclasses.replace(rule, theta=theta, sha256="d" * 64)


@needs_mnist
def test_the_student_starts_as_the_base_rule_and_learns_the_routed_steps():
    """Round 0 follows the teacher: the widened student's error on members taught the base rule's steps is zero up
    to rounding, and on the routed members (taught twice the base rule's first-layer steps) it is not; training
    passes lower the routed error on the pool."""
    base = load_weights("l2l-mlp-family-plus")
    torch.manual_seed(0)
    distiller = Distiller(base, _doubled(base), DistillConfig(**TINY))
    distiller.round(0)
    routes = [item["route"] for item in distiller.pool]
    assert any(routes) and not all(routes)
    before = distiller.errors(distiller.pool)
    assert before["others"] < 1e-8 and before["routed"] > 0.05
    # the first layer's target is twice the base step, the rest the base step: the error is per tensor relative,
    # a quarter of the tensors at (2u - u)^2 / (2u)^2 = 1/4 each, a mean near 1/8
    assert 0.05 < before["routed"] < 0.3
    start = {k: v.detach().clone() for k, v in distiller.theta.items()}
    distiller.config = dataclasses.replace(distiller.config, passes=30)
    distiller.round(1)
    after = distiller.errors(distiller.pool[:10])
    assert after["routed"] < 0.7 * before["routed"] and after["others"] < 0.1
    assert any(not torch.equal(start[k], v) for k, v in distiller.theta.items())
    assert [r["round"] for r in distiller.log] == [1] * 30
    # validation builds nets, which draws from the global generator: it must not move the distillation's draws
    state = torch.get_rng_state()
    assert [h["round"] for h in distiller.history] == [0, 1] and distiller.validate() == distiller.history[-1]["val"]
    assert torch.equal(state, torch.get_rng_state())


@needs_mnist
def test_the_command_writes_a_rule_with_its_recipe(tmp_path, capsys):
    base = load_weights("l2l-mlp-family-plus")
    special = _doubled(base)
    save_weights(tmp_path / "special.safetensors", special.theta, special.config, card={"name": "special"})
    out = tmp_path / "student.safetensors"
    argv = ["--base", "l2l-mlp-family-plus", "--specialist", str(tmp_path / "special.safetensors"), "--out", str(out),
            "--family", "mlp-shallow", "--problems", "3", "--rounds", "2", "--passes", "1", "--coords", "30",
            "--steps", "3", "--tensor-count-range", "4", "10", "--output-weight", "0.5"]
    assert main(argv) == 0
    rule = load_weights(str(out))
    assert rule.config.tensor_count_input and (rule.config.tensor_count_min, rule.config.tensor_count_max) == (4, 10)
    card = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    assert card["command"].startswith("python -m learned_optim.distill --base l2l-mlp-family-plus")
    recipe = card["distill"]["recipe"]
    assert (recipe["output_weight"], recipe["rounds"], recipe["family"]) == (0.5, 2, "mlp-shallow")
    assert card["distill"]["base_sha256"] == base.sha256 and len(card["distill"]["log"]) == 2
    assert [h["round"] for h in card["validation"]["history"]] == [-1, 0, 1] and card["wall_time_s"] > 0
    assert len(card["task"]["members"]) == 7 and "routed" in capsys.readouterr().out
    # the student is not the base rule any more, but shares its architecture but for the count input
    assert any(not torch.equal(v[..., : base.theta[k].shape[-1]] if k == "cells.0.w_ih" else v, base.theta[k])
               for k, v in rule.theta.items())


@pytest.mark.parametrize("extra", [["--family", "nope"], ["--output-weight", "2"], ["--extra", "{"],
                                   ["--specialist", "no-such-rule"]])
def test_bad_command_lines_exit_2(tmp_path, extra, capsys):
    argv = ["--base", "l2l-mlp-family-plus", "--specialist", "l2l-mlp-family-plus", "--out", str(tmp_path / "s.safetensors"),
            "--problems", "1", "--rounds", "1", "--passes", "0", "--steps", "1"] + extra
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert not (tmp_path / "s.safetensors").exists()
