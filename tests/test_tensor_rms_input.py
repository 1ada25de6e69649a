"""The rule's per-tensor inputs beside each coordinate's gradient features, the same for all of a tensor's coordinates:
NetConfig.tensor_rms_input, log(RMS_tensor / RMS_net) / p, NetConfig.net_scale_input, the count-weighted RMS of
those values over the net's tensors, NetConfig.tensor_count_input, log of the number of tensors the step
updates, and NetConfig.grad_noise_input, log(RMS(EMA of g) / RMS(g)) of the tensor (test_grad_noise_input.py has
what is particular to it)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import loss_of, run_steps, small_model
from learned_optim import LearnedOptimizer, analysis, kernels, nets
from learned_optim.analyze import record
from learned_optim.features import log_rms_ratio, net_scale_spread, preprocess, tensor_input_columns
from learned_optim.metatrain import build_parser, config_from_args
from learned_optim.nets import NetConfig
from learned_optim.pretrained import RuleWeights, load_weights, random_weights, save_weights
from learned_optim.tasks import make_task


INPUTS = {"tensor": dict(tensor_rms_input=True), "net": dict(net_scale_input=True),
          "both": dict(tensor_rms_input=True, net_scale_input=True),
          "all": dict(tensor_rms_input=True, net_scale_input=True, tensor_count_input=True),
          "count": dict(tensor_count_input=True), "noise": dict(grad_noise_input=True),
          "every": dict(tensor_rms_input=True, net_scale_input=True, tensor_count_input=True, grad_noise_input=True)}


def rule_with_input(seed: int = 1, inputs: str = "tensor", **config) -> RuleWeights:
    return random_weights(NetConfig(**INPUTS[inputs], **config), seed=seed)


class ByHand:
    """The definition in float64, tensor by tensor: the oracle for the optimizer's three implementations."""

    def __init__(self, params, rule: RuleWeights, lr: float = 1.0):
        self.params, self.config, self.lr = list(params), rule.config, lr
        self.theta = {k: v.double() for k, v in rule.theta.items()}
        self.state = {id(p): nets.init_state(self.config, p.numel(), dtype=torch.float64) for p in self.params}
        self.ema = {id(p): torch.zeros(p.numel(), dtype=torch.float64) for p in self.params}  # grad_noise_input's
        self.updates = 0

    @torch.no_grad()
    def step(self):
        config = self.config
        grads = [p.grad.reshape(-1).double() for p in self.params]
        rms = [float(g.square().mean().sqrt()) for g in grads]
        whole = math.sqrt(sum(r * r * g.numel() for r, g in zip(rms, grads)) / sum(g.numel() for g in grads))
        ratios = [math.log(r / whole) / config.p for r in rms]
        spread = math.sqrt(sum(c * c * g.numel() for c, g in zip(ratios, grads)) / sum(g.numel() for g in grads))
        self.updates += 1
        noise = []
        for p, g, r in zip(self.params, grads, rms):  # m <- 0.9 m + 0.1 g; log(RMS(m / (1 - 0.9^k)) / RMS(g)), centred
            self.ema[id(p)] = 0.9 * self.ema[id(p)] + 0.1 * g
            noise.append(math.log(float(self.ema[id(p)].square().mean().sqrt()) / (1 - 0.9**self.updates) / r)
                         + 0.5 * math.log(1.9 / 0.1))
        for p, g, r, c, v in zip(self.params, grads, rms, ratios, noise):
            if config.grad_norm == "tensor":
                a = config.grad_norm_power
                g = g * config.grad_norm_target / (r**a * whole ** (1 - a))
            values = ([c] * config.tensor_rms_input + [spread] * config.net_scale_input
                      + [math.log(len(grads))] * config.tensor_count_input + [v] * config.grad_noise_input)
            x = torch.cat([preprocess(g, config.preprocess, config.p),
                           torch.tensor(values, dtype=torch.float64).expand(g.numel(), len(values))], dim=1)
            update, self.state[id(p)] = nets.step(self.theta, x, self.state[id(p)], config)
            p.add_(update.view(p.shape).to(p.dtype), alpha=self.lr)


def run(model, opt, steps: int = 10, loss_scale: float = 1.0) -> list[torch.Tensor]:
    return run_steps(model, opt, steps, loss_scale)


SETTINGS = [dict(grad_norm="tensor", grad_norm_target=0.01), dict(grad_norm="tensor", grad_norm_target=0.01,
                                                                   grad_norm_power=0.5), dict()]


@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("settings_", SETTINGS, ids=["tensor", "power0.5", "no-norm"])
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


@pytest.mark.parametrize("inputs,column", [("tensor", 2), ("net", 2), ("both", 2), ("both", 3), ("all", 4),
                                           ("count", 2), ("noise", 2), ("every", 5)])
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


@pytest.mark.parametrize("inputs", ["tensor", "both", "all", "every"])
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
    columns = tensor_input_columns(flat, sizes, config)
    assert columns.shape == (flat.numel(), 2)
    for c in columns.split(sizes):
        assert torch.equal(c, c[:1].expand_as(c))  # one row of values per tensor
    values = [float(c[0, 0]) for c in columns.split(sizes)]
    # the net's mean square is the count-weighted mean of the tensors': sum n_t exp(2 p c_t) = sum n_t
    assert sum(n * math.exp(2 * p * v) for n, v in zip(sizes, values)) == pytest.approx(sum(sizes), rel=1e-9)
    for v, piece in zip(values, pieces):
        assert v == pytest.approx(math.log(piece.square().mean().sqrt() / flat.square().mean().sqrt()) / p,
                                  rel=1e-9, abs=1e-12)
    # the second column: the whole net's spread of the first, the same for every entry
    spread = math.sqrt(sum(n * v * v for n, v in zip(sizes, values)) / sum(sizes))
    assert torch.equal(columns[:, 1], columns[:1, 1].expand(flat.numel()))
    assert float(columns[0, 1]) == pytest.approx(spread, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(tensor_input_columns(flat * 10.0**log_c, sizes, config), columns, rtol=1e-9, atol=1e-12)
    # each input alone is its column of the pair
    torch.testing.assert_close(tensor_input_columns(flat, sizes, NetConfig(**INPUTS["tensor"])), columns[:, :1])
    torch.testing.assert_close(tensor_input_columns(flat, sizes, NetConfig(**INPUTS["net"])), columns[:, 1:])
    assert tensor_input_columns(flat, sizes, NetConfig()) is None
    # a net whose tensors share one RMS has spread 0
    same = torch.cat([piece / piece.square().mean().sqrt() for piece in pieces])
    assert float(tensor_input_columns(same, sizes, config)[0, 1]) == pytest.approx(0.0, abs=1e-12)


def test_the_spread_on_floats_and_on_tensors_agree():
    ratios, counts = [0.1, -0.3, 0.0], [5, 7, 0]
    on_floats = net_scale_spread(ratios, counts)
    on_tensors = net_scale_spread([torch.tensor(r, dtype=torch.float64) for r in ratios],
                                  [torch.tensor(n) for n in counts])
    assert on_floats == pytest.approx(math.sqrt((5 * 0.01 + 7 * 0.09) / 12), rel=1e-12)
    assert float(on_tensors) == pytest.approx(on_floats, rel=1e-12)
    assert net_scale_spread([0.0], [0]) == 0.0


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
    assert loaded.config.tensor_rms_input and loaded.config.net_scale_input
    assert loaded.theta["cells.0.w_ih"].shape == (80, 4)
    default = load_weights("l2l-mlp-family").config  # cards written before them load without the inputs
    assert not default.tensor_rms_input and not default.net_scale_input and default.tensor_inputs == 0
    parser = build_parser()
    out = ["--task", "two_moons", "--out", str(tmp_path / "x.safetensors")]
    net = config_from_args(parser.parse_args(out + ["--tensor-rms-input"])).net
    assert net.tensor_rms_input and not net.net_scale_input and net.input_size == 3
    net = config_from_args(parser.parse_args(out + ["--net-scale-input"])).net
    assert net.net_scale_input and not net.tensor_rms_input and net.input_size == 3
    for name in ("tensor_rms_input", "net_scale_input"):
        with pytest.raises(ValueError, match=f"Invalid {name}"):
            NetConfig(**{name: 1})


def test_pack_bias_shift_is_a_shift_of_layer_0s_biases():
    rule = rule_with_input()
    base_theta = dict(rule.theta, **{"cells.0.w_ih": rule.theta["cells.0.w_ih"][:, :2]})
    base_config = NetConfig()
    column = rule.theta["cells.0.w_ih"][:, 2]
    shifted = dict(base_theta, **{"cells.0.b": base_theta["cells.0.b"] + 0.3 * column})
    packed, expected = kernels.pack_lstm(base_theta, base_config), kernels.pack_lstm(shifted, base_config)
    packed[0][-1].add_(kernels.pack_bias_shift(column, base_config), alpha=0.3)
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
    learned.net_scale = 0.3
    spread, _ = learned.step(h, g)
    assert not torch.allclose(spread, above)
    task = make_task("two_moons", hidden=[8])
    states, grads, losses, _, inputs = record(learned, task, seeds=[0], steps=5, coords=16)
    assert torch.isfinite(losses).all() and states.shape[:3] == (1, 6, 16)
    assert inputs.shape == (1, 5, 16, 2)


@pytest.mark.parametrize("inputs", sorted(INPUTS))
def test_the_analysis_records_the_inputs_the_rule_was_given(inputs):
    """analyze.record: each coordinate's recorded per-tensor inputs, with its recorded gradient, replay the optimizer's
    states through the pure step; held at 0 (what the tools assumed before they were recorded) they do not."""
    from learned_optim.analyze import hold_inputs

    learned = analysis.LearnedRule(rule_with_input(seed=3, inputs=inputs, grad_norm="tensor", grad_norm_target=0.01,
                                                   hidden_size=4))
    task = make_task("two_moons", hidden=[8, 8])
    states, grads, _, labels, recorded = record(learned, task, seeds=[2], steps=3, coords=24)
    names = learned.input_names
    assert names == {"tensor": ["tensor_rms_ratio"], "net": ["net_scale"], "both": ["tensor_rms_ratio", "net_scale"],
                     "all": ["tensor_rms_ratio", "net_scale", "tensor_count"], "count": ["tensor_count"],
                     "noise": ["grad_noise"],
                     "every": ["tensor_rms_ratio", "net_scale", "tensor_count", "grad_noise"]}[inputs]
    assert recorded.shape == (1, 3, 24, len(names))
    # the same values for all of a tensor's coordinates, and the spread the same for the whole net
    for group in set(labels[0]):
        mask = torch.tensor([label == group for label in labels[0]])
        assert (recorded[0][:, mask] == recorded[0][:, mask][:, :1]).all()
    if "net_scale" in names:
        column = names.index("net_scale")
        assert (recorded[..., column] == recorded[..., :1, column]).all() and (recorded[..., column] > 0).all()
    if "tensor_count" in names:  # three Linear layers with biases: six tensors
        column = names.index("tensor_count")
        torch.testing.assert_close(recorded[..., column], torch.full_like(recorded[..., column], math.log(6)))
    if "grad_noise" in names:  # "agree" on the first step (the EMA is the gradient), then it moves
        column, agree = names.index("grad_noise"), 0.5 * math.log(1.9 / 0.1)
        assert (recorded[0, 0, :, column] - agree).abs().max() < 1e-6
        assert (recorded[0, 1:, :, column] - agree).abs().max() > 1e-3
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
    with each parameter group's values (the layers of a net differ; the net-level value does not)."""
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
    assert held["net_scale"] == pytest.approx(float(recorded[..., 1].median())) and held["net_scale"] > 0
    groups = summary["inputs_by_group"]
    assert len(groups) >= 4 and len({round(g["tensor_rms_ratio"], 9) for g in groups.values()}) > 1
    # one value per step for the whole net: with one problem, every group's median of it is the same
    assert len({round(g["net_scale"], 9) for g in groups.values()}) == 1
    assert "Per-tensor inputs" in (tmp_path / "r" / "summary.md").read_text()
    # each group's schedule is the tools' schedule with the inputs at that group's values: recomputed here for two
    by_group = summary["schedule_by_group"]
    assert by_group.keys() == groups.keys()
    g_median = summary["gradient_magnitude_quantiles"]["0.5"]
    for group in list(groups)[:2]:
        learned.tensor_rms_ratio, learned.net_scale = groups[group]["tensor_rms_ratio"], groups[group]["net_scale"]
        trajectory = analysis.autonomous(learned, 200)
        for t in ("0", "1", "4"):
            assert by_group[group][t] == pytest.approx(analyze.secant_lr(learned, trajectory.states[int(t)], g_median))
    assert len({round(v["0"], 12) for v in by_group.values()}) > 1  # the groups' inputs differ, so do their steps
    assert "**Per group**" in (tmp_path / "r" / "summary.md").read_text()
    plain = random_weights(NetConfig(grad_norm="tensor", hidden_size=4), seed=5)
    save_weights(tmp_path / "plain.safetensors", plain.theta, plain.config, {"name": "plain"})
    assert analyze.main([str(tmp_path / "plain.safetensors"), "--task", "two_moons", "--out", str(tmp_path / "p"),
                         "--problems", "1", "--steps", "3", "--fp-iterations", "10"]) == 0
    plain_summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert plain_summary["inputs_held_at"] == {} and "Per-tensor inputs" not in (tmp_path / "p" / "summary.md").read_text()
    assert plain_summary["schedule_by_group"] == {}


@pytest.mark.parametrize("inputs", ["tensor", "both"])
def test_tensor_input_scale_is_a_reparameterization(tmp_path, inputs):
    """tensor_input_scale s: the inputs are s log(RMS_t / RMS_net) instead of / p; a rule whose input weights are
    rescaled by metatrain's init-from (x (1/s) / p) takes the same steps, and an unscaled config's card is unchanged."""
    from learned_optim import metatrain as mt
    from learned_optim.features import tensor_input_values

    rule = rule_with_input(seed=2, inputs=inputs, grad_norm="tensor", grad_norm_target=0.01)
    assert "tensor_input_scale" not in rule.config.to_dict()  # cards from before the field read the same
    scaled = dataclasses.replace(rule.config, tensor_input_scale=1.0)
    assert scaled.to_dict()["tensor_input_scale"] == 1.0 and NetConfig.from_dict(scaled.to_dict()) == scaled
    stats = [(0.5, 10), (0.05, 30), (2.0, 4)]
    plain_values, scaled_values = tensor_input_values(stats, rule.config), tensor_input_values(stats, scaled)
    for a, b in zip(plain_values, scaled_values):
        assert b == pytest.approx(tuple(rule.config.p * x for x in a))
    save_weights(tmp_path / "r.safetensors", rule.theta, rule.config, card={"name": "r"})
    start = mt.start_weights(mt.MetaTrainConfig(task="quadratic", net=scaled, init_from=str(tmp_path / "r.safetensors")))
    save_weights(tmp_path / "s.safetensors", start.theta, scaled, card={"name": "s"})
    runs = []
    for weights in ("r", "s"):
        model = small_model(4)  # tensors whose gradients differ in scale: the inputs differ between them
        opt = LearnedOptimizer(model.parameters(), weights=str(tmp_path / f"{weights}.safetensors"), lr=0.1)
        runs.append(torch.cat([q.flatten() for q in run_steps(model, opt, 4)]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="Invalid tensor_input_scale"):
        NetConfig(tensor_input_scale=-1.0)
    # back from the scaled file to a recipe without the inputs: refused, naming every field that differs
    plain = dataclasses.replace(rule.config, tensor_rms_input=False, net_scale_input=False)
    with pytest.raises(ValueError, match="differs in .*tensor_input_scale"):
        mt.start_weights(mt.MetaTrainConfig(task="quadratic", net=plain, init_from=str(tmp_path / "s.safetensors")))
