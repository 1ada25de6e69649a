"""The rule's per-tensor inputs: NetConfig.tensor_rms_input, log(RMS_tensor / RMS_net) / p of the raw gradient, and
NetConfig.tensor_count_input, log of the number of tensors the step updates (test_tensor_count_input.py has the
count's range): computed once by features.py for the optimizer, the meta-trainer, distillation and the analysis."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import loss_of, run_steps, small_model
from learned_optim import LearnedOptimizer, analysis, nets
from learned_optim.analysis.record import hold_inputs, record, secant_lr
from learned_optim.backends import cpp
from learned_optim.features import flat_terms, log_rms_ratio, preprocess
from learned_optim.metatrain import build_parser, config_from_args
from learned_optim.nets import RETIRED, NetConfig
from learned_optim.pretrained import RuleWeights, load_weights, random_weights, save_weights
from learned_optim.tasks import make_task

INPUTS = {"tensor": dict(tensor_rms_input=True), "count": dict(tensor_count_input=True),
          "both": dict(tensor_rms_input=True, tensor_count_input=True)}


def columns_of(flat, sizes, config):
    return flat_terms(flat, sizes, config)[1]


def rule_with_input(seed: int = 1, inputs: str = "tensor", **config) -> RuleWeights:
    return random_weights(NetConfig(**INPUTS[inputs], **config), seed=seed)


class ByHand:
    """The definition in float64, tensor by tensor: the oracle for the optimizer's implementations."""

    def __init__(self, params, rule: RuleWeights, lr: float = 1.0):
        self.params, self.config, self.lr = list(params), rule.config, lr
        self.theta = {k: v.double() for k, v in rule.theta.items()}
        self.state = {id(p): nets.init_state(self.config, p.numel(), dtype=torch.float64) for p in self.params}

    @torch.no_grad()
    def step(self):
        config = self.config
        grads = [p.grad.reshape(-1).double() for p in self.params]
        rms = [float(g.square().mean().sqrt()) for g in grads]
        whole = math.sqrt(sum(r * r * g.numel() for r, g in zip(rms, grads)) / sum(g.numel() for g in grads))
        ratios = [math.log(r / whole) / config.p for r in rms]
        for p, g, r, c in zip(self.params, grads, rms, ratios):
            if config.grad_norm == "tensor":
                g = g * config.grad_norm_target / r
            values = [c] * config.tensor_rms_input + [math.log(len(grads))] * config.tensor_count_input
            x = torch.cat([preprocess(g, config.preprocess, config.p),
                           torch.tensor(values, dtype=torch.float64).expand(g.numel(), len(values))], dim=1)
            update, self.state[id(p)] = nets.step(self.theta, x, self.state[id(p)], config)
            p.add_(update.view(p.shape).to(p.dtype), alpha=self.lr)


def run(model, opt, steps: int = 10, loss_scale: float = 1.0) -> list[torch.Tensor]:
    return run_steps(model, opt, steps, loss_scale)


SETTINGS = [dict(grad_norm="tensor", grad_norm_target=0.01), dict()]


@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("settings_", SETTINGS, ids=["tensor", "no-norm"])
@pytest.mark.parametrize("implementation,chunk_size", [("fast", None), ("torch", None), ("torch", 7), ("reference", None)])
def test_the_optimizer_computes_the_definition(settings_, implementation, chunk_size, inputs):
    """Every implementation (the C++ kernel with the inputs folded into layer 0's biases; torch with tensors packed
    into one chunk, or cut into chunks of 7) takes the steps of the float64 definition."""
    rule = rule_with_input(inputs=inputs, **settings_)
    model = small_model(seed=3)
    got = run(model, LearnedOptimizer(model.parameters(), weights=rule, lr=0.5, implementation=implementation,
                                      chunk_size=chunk_size))
    oracle = small_model(seed=3)
    expected = run(oracle, ByHand(oracle.parameters(), rule, lr=0.5))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("inputs,column", [("tensor", 2), ("count", 2), ("both", 2), ("both", 3)])
def test_the_input_changes_the_steps_and_without_its_weights_is_the_rule_without_it(inputs, column):
    """Zero weights on the extra inputs: the steps of the same rule without them; other weights on one: other steps."""
    base = random_weights(NetConfig(grad_norm="tensor", grad_norm_target=0.01), seed=1)
    theta = dict(base.theta)
    config = NetConfig(grad_norm="tensor", grad_norm_target=0.01, **INPUTS[inputs])
    theta["cells.0.w_ih"] = torch.cat([theta["cells.0.w_ih"], torch.zeros(80, config.tensor_inputs)], dim=1)
    silent = RuleWeights(config=config, theta=theta, card={}, name="silent", sha256="0" * 64)
    loud_w = theta["cells.0.w_ih"].clone()
    loud_w[:, column] = 5.0 * torch.randn(80, generator=torch.Generator().manual_seed(0))  # only that input's weights
    loud_theta = dict(theta, **{"cells.0.w_ih": loud_w})
    loud = RuleWeights(config=silent.config, theta=loud_theta, card={}, name="loud", sha256="1" * 64)
    for implementation in ("fast", "torch"):
        models = [small_model(seed=3) for _ in range(3)]
        ends = [run(m, LearnedOptimizer(m.parameters(), weights=w, implementation=implementation))
                for m, w in zip(models, (base, silent, loud))]
        for a, b in zip(ends[0], ends[1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(ends[0], ends[2]))


@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("implementation", ["fast", "torch"])
def test_the_steps_ignore_the_scale_of_the_loss(implementation, inputs):
    rule = rule_with_input(inputs=inputs, grad_norm="tensor", grad_norm_target=0.01)
    ends = []
    for scale in (1.0, 1e-5):
        model = small_model(seed=3)
        ends.append(run(model, LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation),
                        loss_scale=scale))
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@settings(deadline=None, max_examples=40)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), log_scales=st.lists(st.floats(-12, 6), min_size=5,
                                                                                         max_size=5),
       log_c=st.floats(-20, 20), seed=st.integers(0, 2**16))
def test_the_columns_are_their_definition_and_ignore_a_common_factor(sizes, log_scales, log_c, seed):
    gen = torch.Generator().manual_seed(seed)
    pieces = [torch.randn(n, generator=gen, dtype=torch.float64) * 10.0**s for n, s in zip(sizes, log_scales)]
    flat, config = torch.cat(pieces), NetConfig(**INPUTS["both"])
    p = config.p
    columns = columns_of(flat, sizes, config)
    assert columns.shape == (flat.numel(), 2)
    for c in columns.split(sizes):
        assert torch.equal(c, c[:1].expand_as(c))  # one row of values per tensor
    values = [float(c[0, 0]) for c in columns.split(sizes)]
    # the net's mean square is the count-weighted mean of the tensors': sum n_t exp(2 p c_t) = sum n_t
    assert sum(n * math.exp(2 * p * v) for n, v in zip(sizes, values)) == pytest.approx(sum(sizes), rel=1e-9)
    for v, piece in zip(values, pieces):
        assert v == pytest.approx(math.log(piece.square().mean().sqrt() / flat.square().mean().sqrt()) / p,
                                  rel=1e-9, abs=1e-12)
    # the second column: log of the tensor count, the same for every entry
    torch.testing.assert_close(columns[:, 1], torch.full((flat.numel(),), math.log(len(sizes)), dtype=torch.float64))
    torch.testing.assert_close(columns_of(flat * 10.0**log_c, sizes, config), columns, rtol=1e-9, atol=1e-12)
    # each input alone is its column of the pair
    torch.testing.assert_close(columns_of(flat, sizes, NetConfig(**INPUTS["tensor"])), columns[:, :1])
    torch.testing.assert_close(columns_of(flat, sizes, NetConfig(**INPUTS["count"])), columns[:, 1:])
    assert columns_of(flat, sizes, NetConfig()) is None


def test_zero_and_nonfinite_gradients():
    """A tensor with no finite nonzero entry gets 0; nan entries are left out of both RMS."""
    assert log_rms_ratio(0.0, 1.0, 10.0) == 0.0 and log_rms_ratio(1.0, 0.0, 10.0) == 0.0
    assert float(log_rms_ratio(torch.tensor(0.0), torch.tensor(2.0), 10.0)) == 0.0
    for implementation in ("fast", "torch", "reference"):
        model = small_model(seed=3)
        rule = rule_with_input(inputs="both", grad_norm="tensor", grad_norm_target=0.01)
        opt = LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation)
        loss_of(model, 0).backward()
        model.conv.weight.grad.view(-1)[0] = float("nan")
        model.scale.grad.zero_()
        before = model.conv.weight.detach().clone()
        opt.step()
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert model.conv.weight.view(-1)[0] == before.view(-1)[0]
        assert not torch.equal(model.conv.weight.view(-1)[1:], before.view(-1)[1:])


def test_the_input_travels_in_the_weight_file_and_the_metatrain_flag(tmp_path):
    rule = rule_with_input(inputs="both", grad_norm="tensor")
    save_weights(tmp_path / "r.safetensors", rule.theta, rule.config, card={"name": "r"})
    loaded = load_weights(str(tmp_path / "r.safetensors"))
    assert loaded.config.tensor_rms_input and loaded.config.tensor_count_input
    assert loaded.theta["cells.0.w_ih"].shape == (80, 4)
    default = load_weights("l2l-mlp-family").config  # cards written before them load without the inputs
    assert not default.tensor_rms_input and default.tensor_inputs == 0
    parser = build_parser()
    out = ["--task", "two_moons", "--out", str(tmp_path / "x.safetensors")]
    net = config_from_args(parser.parse_args(out + ["--tensor-rms-input"])).net
    assert net.tensor_rms_input and not net.tensor_count_input and net.input_size == 3
    with pytest.raises(ValueError, match="Invalid tensor_rms_input"):
        NetConfig(tensor_rms_input=1)


def test_retired_rule_settings_load_at_their_inert_values_and_are_refused_otherwise():
    """Weight files written before the retired inputs were removed name them at values that change nothing: those
    load as the same rule; a rule that used one is refused with a message that names it."""
    base = NetConfig(grad_norm="tensor", tensor_rms_input=True).to_dict()
    assert NetConfig.from_dict({**base, **RETIRED}) == NetConfig.from_dict(base)
    for name, inert in RETIRED.items():
        changed = (not inert) if isinstance(inert, bool) else 0.5
        with pytest.raises(ValueError, match=name):
            NetConfig.from_dict({**base, name: changed})
    for name in ("l2l-mlp-distill", "l2l-mlp-family-plus", "l2l-mlp-family", "re-linreg"):
        load_weights(name)  # their headers name the retired settings at their inert values


def test_pack_bias_shift_is_a_shift_of_layer_0s_biases():
    rule = rule_with_input()
    base_theta = dict(rule.theta, **{"cells.0.w_ih": rule.theta["cells.0.w_ih"][:, :2]})
    base_config = NetConfig()
    column = rule.theta["cells.0.w_ih"][:, 2]
    shifted = dict(base_theta, **{"cells.0.b": base_theta["cells.0.b"] + 0.3 * column})
    packed, expected = cpp.pack_lstm(base_theta, base_config), cpp.pack_lstm(shifted, base_config)
    packed[0][-1].add_(cpp.pack_bias_shift(column, base_config), alpha=0.3)
    for a, b in zip(packed, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_analysis_tools_read_the_rule():
    rule = rule_with_input(inputs="both", grad_norm="tensor", grad_norm_target=0.01, hidden_size=4)
    learned = analysis.LearnedRule(rule)
    h, g = learned.init_state(3), torch.tensor([1e-3, -1e-3, 0.0], dtype=torch.float64)
    at_net, _ = learned.step(h, g)
    learned.tensor_rms_ratio = 0.5
    above, _ = learned.step(h, g)
    assert not torch.allclose(at_net, above)
    learned.tensor_count = math.log(12)
    deeper, _ = learned.step(h, g)
    assert not torch.allclose(deeper, above)
    task = make_task("two_moons", hidden=[8])
    states, grads, losses, _, inputs = record(learned, task, seeds=[0], steps=5, coords=16)
    assert torch.isfinite(losses).all() and states.shape[:3] == (1, 6, 16)
    assert inputs.shape == (1, 5, 16, 2)


@pytest.mark.parametrize("inputs", sorted(INPUTS))
def test_the_analysis_records_the_inputs_the_rule_was_given(inputs):
    """record: each coordinate's recorded per-tensor inputs, with its recorded gradient, replay the optimizer's
    states through the pure step; held at 0 (what the tools assumed before they were recorded) they do not."""
    learned = analysis.LearnedRule(rule_with_input(seed=3, inputs=inputs, grad_norm="tensor", grad_norm_target=0.01,
                                                   hidden_size=4))
    task = make_task("two_moons", hidden=[8, 8])
    states, grads, _, labels, recorded = record(learned, task, seeds=[2], steps=3, coords=24)
    names = learned.input_names
    assert names == {"tensor": ["tensor_rms_ratio"], "count": ["tensor_count"],
                     "both": ["tensor_rms_ratio", "tensor_count"]}[inputs]
    assert recorded.shape == (1, 3, 24, len(names))
    for group in set(labels[0]):  # the same values for all of a tensor's coordinates
        mask = torch.tensor([label == group for label in labels[0]])
        assert (recorded[0][:, mask] == recorded[0][:, mask][:, :1]).all()
    if "tensor_count" in names:  # three Linear layers with biases: six tensors
        column = names.index("tensor_count")
        torch.testing.assert_close(recorded[..., column], torch.full_like(recorded[..., column], math.log(6)))
    if "tensor_rms_ratio" in names:
        assert recorded[..., 0].unique().numel() > 1  # the layers of a fresh net differ in scale
    mismatch_at_zero = 0.0
    for t in range(3):
        for i in range(24):
            for name, value in zip(names, recorded[0, t, i].tolist()):
                setattr(learned, name, value)
            _, replayed = learned.step(states[0, t, i : i + 1], grads[0, t, i : i + 1])
            torch.testing.assert_close(replayed[0], states[0, t + 1, i], rtol=1e-6, atol=1e-9)
            for name in names:
                setattr(learned, name, 0.0)
            _, at_zero = learned.step(states[0, t, i : i + 1], grads[0, t, i : i + 1])
            mismatch_at_zero = max(mismatch_at_zero, float((at_zero[0] - states[0, t + 1, i]).abs().max()))
    assert mismatch_at_zero > 1e-6
    held = hold_inputs(learned, recorded)
    assert set(held) == set(names)
    for column, name in enumerate(names):
        assert getattr(learned, name) == held[name] == pytest.approx(float(recorded[..., column].median()))


def test_the_analyze_report_studies_the_rule_at_the_inputs_its_runs_gave_it(tmp_path):
    """analyze.main on a rule with both inputs: the tools hold them at the recorded medians, and the report says so,
    with each parameter group's values (the layers of a net differ; the net's tensor count does not)."""
    import json

    from learned_optim import analyze

    rule = rule_with_input(seed=5, inputs="both", grad_norm="tensor", grad_norm_target=0.01, hidden_size=4)
    path = tmp_path / "both.safetensors"
    save_weights(path, rule.theta, rule.config, {"name": "both"})
    assert analyze.main([str(path), "--task", "two_moons", "--out", str(tmp_path / "r"), "--problems", "1",
                         "--steps", "4", "--fp-iterations", "20"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    learned = analysis.LearnedRule(str(path))
    recorded = record(learned, make_task("two_moons"), summary["problems"], 4).inputs
    held = summary["inputs_held_at"]
    assert held["tensor_rms_ratio"] == pytest.approx(float(recorded[..., 0].median()))
    assert held["tensor_count"] == pytest.approx(math.log(8))  # two_moons' 3x64 MLP: four Linear layers
    groups = summary["inputs_by_group"]
    assert len(groups) >= 4 and len({round(g["tensor_rms_ratio"], 9) for g in groups.values()}) > 1
    assert len({round(g["tensor_count"], 9) for g in groups.values()}) == 1
    assert "Per-tensor inputs" in (tmp_path / "r" / "summary.md").read_text()
    # each group's schedule is the tools' schedule with the inputs at that group's values: recomputed here for two
    by_group = summary["schedule_by_group"]
    assert by_group.keys() == groups.keys()
    g_median = summary["gradient_magnitude_quantiles"]["0.5"]
    for group in list(groups)[:2]:
        learned.tensor_rms_ratio, learned.tensor_count = groups[group]["tensor_rms_ratio"], groups[group]["tensor_count"]
        trajectory = analysis.autonomous(learned, 200)
        for t in ("0", "1", "4"):
            assert by_group[group][t] == pytest.approx(secant_lr(learned, trajectory.states[int(t)], g_median))
    assert len({round(v["0"], 12) for v in by_group.values()}) > 1  # the groups' inputs differ, so do their steps
    assert "**Per group**" in (tmp_path / "r" / "summary.md").read_text()
    plain = random_weights(NetConfig(grad_norm="tensor", hidden_size=4), seed=5)
    save_weights(tmp_path / "plain.safetensors", plain.theta, plain.config, {"name": "plain"})
    assert analyze.main([str(tmp_path / "plain.safetensors"), "--task", "two_moons", "--out", str(tmp_path / "p"),
                         "--problems", "1", "--steps", "3", "--fp-iterations", "10"]) == 0
    plain_summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert plain_summary["inputs_held_at"] == {} and "Per-tensor inputs" not in (tmp_path / "p" / "summary.md").read_text()
    assert plain_summary["schedule_by_group"] == {}
