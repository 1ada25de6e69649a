"""Rules that read moving averages of the gradient ("moments") and step along Adam's direction ("residual"): their
features, their readout, their state, their C++ kernel, and meta-training them with persistent evolution strategies."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, loss_of, run_steps, small_model
from learned_optim import LearnedOptimizer, cpp_build, nets
from learned_optim.features import MOMENT_BETAS, SECOND_MOMENT_BETA, TINY, moment_features
from learned_optim.metatrain import MetaTrainConfig, build_parser, config_from_args
from learned_optim.metatrain.config import run_length
from learned_optim.nets import NetConfig
from learned_optim.pretrained import RuleWeights, load_weights, random_weights, save_weights

MOMENTS = NetConfig(preprocess="moments", output="residual", num_layers=1, hidden_size=8, output_scale=1e-3)


def zero_readout(rule: RuleWeights) -> RuleWeights:
    theta = {k: (torch.zeros_like(v) if k.startswith("readout.") else v) for k, v in rule.theta.items()}
    return dataclasses.replace(rule, theta=theta)


@settings(deadline=None, max_examples=30)
@given(steps=st.integers(1, 12), n=st.integers(1, 20), log_scale=st.floats(-10, 20), seed=st.integers(0, 2**16))
def test_the_features_are_their_definition_and_free_of_scale(steps, n, log_scale, seed):
    """x_k = m_k / (1 - b_k^t) / (sqrt(v / (1 - b2^t)) + TINY), g / (...) and log(1 + t) / log(1 + 10^4), from the
    float64 recursion; a gradient stream times any constant gives the same features (while the gradients stay far
    above TINY)."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(steps, n, generator=gen, dtype=torch.float64)
    state, scaled = torch.zeros(n, 4, dtype=torch.float64), torch.zeros(n, 4, dtype=torch.float64)
    m, v = [torch.zeros(n, dtype=torch.float64) for _ in MOMENT_BETAS], torch.zeros(n, dtype=torch.float64)
    for t in range(1, steps + 1):
        g = grads[t - 1]
        x, state = moment_features(g, state, t)
        y, scaled = moment_features(g * math.exp(log_scale), scaled, t)
        m = [b * mk + (1 - b) * g for b, mk in zip(MOMENT_BETAS, m)]
        v = SECOND_MOMENT_BETA * v + (1 - SECOND_MOMENT_BETA) * g * g
        root = (v / (1 - SECOND_MOMENT_BETA**t)).sqrt() + TINY
        time = torch.full_like(g, math.log1p(t) / math.log1p(1e4))
        expected = torch.stack([mk / (1 - b**t) / root for b, mk in zip(MOMENT_BETAS, m)] + [g / root, time], dim=1)
        torch.testing.assert_close(x, expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-9)
    assert (x[:, 0].abs() <= 1 / math.sqrt(1 - SECOND_MOMENT_BETA) + 1e-9).all()


@pytest.mark.parametrize("output", ["residual", "scale"])
@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_an_untrained_rule_along_adams_direction_is_adam_at_its_output_scale(implementation, output):
    """With a zero readout the step is -output_scale * m_hat / sqrt(v_hat): Adam without epsilon, every
    implementation, for both readouts that step along Adam's direction."""
    rule = zero_readout(random_weights(dataclasses.replace(MOMENTS, output=output), seed=1))
    model, twin = small_model(seed=3), small_model(seed=3)
    got = run_steps(model, LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation))
    expected = run_steps(twin, torch.optim.Adam(twin.parameters(), lr=1e-3, eps=TINY))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_a_gradient_whose_square_underflows_gives_a_tiny_step(implementation):
    """A coordinate whose first nonzero gradient is 1e-22 (its square rounds to 0 in float32 while the momentum keeps
    it) must not read a huge m / sqrt(v) and jump, and one without a gradient must not drift by the correction the
    LSTM gives at zero input: their steps stay far below a normal coordinate's, for a rule whose correction is not
    zero."""
    rule = random_weights(MOMENTS, seed=2)
    weight = torch.nn.Parameter(torch.zeros(4))
    opt = LearnedOptimizer([weight], weights=rule, implementation=implementation)
    for step in range(30):
        weight.grad = torch.tensor([0.0 if step < 20 else 1e-22, 1e-22, 0.3, -2e-3])
        before = weight.detach().clone()
        opt.step()
        moved = (weight.detach() - before).abs()
        assert torch.isfinite(moved).all() and float(moved[2:].min()) > 1e-5
        assert float(moved[:2].max()) < 1e-3 * float(moved[2:].min()), (step, moved)
        if step < 20:
            assert float(weight.detach()[0]) == 0.0  # no gradient yet: not moved at all


def test_state_widths_and_state_dicts():
    rule = random_weights(MOMENTS, seed=2)
    assert MOMENTS.state_names == ("moments", "h0", "c0") and MOMENTS.state_size == 4 + 16
    assert nets.theta_shapes(MOMENTS)["readout.w"] == (2, 8)
    model = small_model(seed=1)
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    run_steps(model, opt, 3)
    assert opt.state[model.fc1.weight]["moments"].shape == (7 * 12, 4)
    again = LearnedOptimizer(model.parameters(), weights=rule)
    again.load_state_dict(opt.state_dict())
    saved = opt.state_dict()
    key = next(iter(saved["state"]))
    saved["state"][key]["moments"] = saved["state"][key]["moments"][:, :3]
    with pytest.raises(ValueError, match="moments"):
        again.load_state_dict(saved)


def test_the_config_checks_and_cards():
    with pytest.raises(ValueError, match="needs preprocess 'moments'"):
        NetConfig(output="residual")
    with pytest.raises(ValueError, match="Invalid output"):
        NetConfig(output="softmax")
    assert "output" not in NetConfig().to_dict() and NetConfig.from_dict(MOMENTS.to_dict()) == MOMENTS
    args = build_parser().parse_args(["--task", "quadratic", "--out", "x.safetensors", "--preprocess", "moments",
                                      "--output", "residual", "--layers", "1", "--hidden-size", "8"])
    assert config_from_args(args).net == dataclasses.replace(MOMENTS, output_scale=0.1)


@settings(deadline=None, max_examples=50)
@given(tau=st.floats(1.0, 1e5), power=st.floats(0.05, 3.0), t=st.integers(1, 10**7))
def test_a_decaying_nominal_step_starts_at_the_scale_and_falls(tau, power, t):
    """output_scale / (1 + (t - 1) / tau)^power: the scale itself at the first update, never rising, the per-row
    tensor form equal to the number form; without a decay, output_scale at every count."""
    config = dataclasses.replace(MOMENTS, step_decay_steps=tau, step_decay_power=power)
    first, now, later = (nets.nominal_step(config, k) for k in (1, t, t + 1))
    assert first == config.output_scale and 0 < later <= now <= first
    assert math.isclose(now, config.output_scale * (1 + (t - 1) / tau) ** -power, rel_tol=1e-12)
    rows = nets.nominal_step(config, torch.tensor([1, t]))
    assert rows.dtype == torch.float32
    torch.testing.assert_close(rows, torch.tensor([first, now], dtype=torch.float32))
    assert nets.nominal_step(MOMENTS, t) == MOMENTS.output_scale


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_a_decaying_rule_takes_the_constant_rules_steps_times_the_decay(implementation):
    """The decay multiplies the update and touches nothing else: for the same gradients, every update of the
    decaying rule is the constant rule's times (1 + (t - 1) / tau)^-power, and the states stay equal."""
    rule = random_weights(MOMENTS, seed=7)
    decaying = dataclasses.replace(rule, config=dataclasses.replace(rule.config, step_decay_steps=3.0,
                                                                    step_decay_power=0.7))
    p, q = torch.nn.Parameter(torch.zeros(50)), torch.nn.Parameter(torch.zeros(50))
    opt_p = LearnedOptimizer([p], weights=rule, implementation=implementation)
    opt_q = LearnedOptimizer([q], weights=decaying, implementation=implementation)
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 13):
        g = torch.randn(50, generator=gen)
        before_p, before_q = p.detach().clone(), q.detach().clone()
        p.grad, q.grad = g.clone(), g.clone()
        opt_p.step()
        opt_q.step()
        factor = (1 + (t - 1) / 3.0) ** -0.7
        torch.testing.assert_close(q.detach() - before_q, (p.detach() - before_p) * factor, rtol=1e-5, atol=1e-9)
        p.data.copy_(q.detach())  # the same parameters, so the next gradients are the same problem's
    for name in rule.config.state_names:
        torch.testing.assert_close(opt_p.state[p][name], opt_q.state[q][name])


def test_the_decay_checks_and_cards():
    for bad in ({"step_decay_steps": -1.0}, {"step_decay_steps": math.inf}, {"step_decay_power": 0.0},
                {"step_decay_power": math.nan}):
        with pytest.raises(ValueError, match="step_decay"):
            dataclasses.replace(MOMENTS, **bad)
    with pytest.raises(ValueError, match="needs the update count"):
        NetConfig(step_decay_steps=100.0)
    assert "step_decay_steps" not in MOMENTS.to_dict() and "step_decay_power" not in MOMENTS.to_dict()
    decaying = dataclasses.replace(MOMENTS, step_decay_steps=1000.0, step_decay_power=0.5)
    assert NetConfig.from_dict(decaying.to_dict()) == decaying
    args = build_parser().parse_args(["--task", "quadratic", "--out", "x.safetensors", "--preprocess", "moments",
                                      "--output", "residual", "--layers", "1", "--hidden-size", "8",
                                      "--output-scale", "1e-3", "--step-decay-steps", "1000",
                                      "--step-decay-power", "0.5"])
    assert config_from_args(args).net == decaying


def test_the_steps_ignore_the_scale_of_the_loss_and_skip_nonfinite_coordinates():
    rule = random_weights(MOMENTS, seed=4)
    ends = [run_steps(m, LearnedOptimizer(m.parameters(), weights=rule), loss_scale=s)
            for m, s in ((small_model(seed=3), 1.0), (small_model(seed=3), 1e-6))]
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model = small_model(seed=3)
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    loss_of(model, 0).backward()
    model.fc1.weight.grad[0, 0] = float("nan")
    opt.step()
    state = opt.state[model.fc1.weight]
    assert not state["moments"][0].any() and not state["h0"][0].any() and state["moments"][1].any()


def kernel_or_skip():
    if not cpp_build.available("moments_step"):
        if os.environ.get("LEARNED_OPTIM_REQUIRE_KERNEL"):
            pytest.fail(f"the moments kernel did not build: {cpp_build.build_error('moments_step')}")
        pytest.skip("the moments kernel is unavailable")


@pytest.mark.parametrize("hidden,layers,decay,flip", [(8, 1, 0.0, False), (4, 2, 0.0, False), (16, 1, 0.0, False),
                                                     (8, 1, 4.0, False), (8, 1, 4.0, True), (4, 2, 0.0, True)])
@pytest.mark.parametrize("maximize", [False, True])
def test_the_kernel_takes_the_reference_steps(hidden, layers, decay, flip, maximize):
    """csrc/moments_step.cpp against the reference network (its tanh and exp are approximations good to about 1e-6),
    with a non-finite gradient on the way and parameters of another dtype; also with a decaying nominal step, and with
    the flip gate (its last gradient and flip average compared with the moving averages)."""
    kernel_or_skip()
    rule = random_weights(dataclasses.replace(MOMENTS, hidden_size=hidden, num_layers=layers,
                                              step_decay_steps=decay, flip_gate=flip), seed=5)
    ends, states = [], []
    for implementation in ("fast", "reference"):
        model = small_model(seed=3)
        opt = LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation, maximize=maximize,
                               lr=0.7)
        if implementation == "fast":
            assert opt._backend(torch.device("cpu")).__class__.__name__ == "CppMomentsBackend"
        for step in range(15):
            opt.zero_grad()
            (loss_of(model, step) * (-1 if maximize else 1)).backward()
            if step == 4:
                model.fc2.weight.grad[0, 1] = float("inf")
            opt.step()
        ends.append([p.detach().clone() for p in model.parameters()])
        states.append([opt.state[p]["moments"].clone() for p in model.parameters()])
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6)
    for a, b in zip(*states):
        torch.testing.assert_close(a[:, :4], b[:, :4], rtol=1e-4, atol=1e-7)
        # the flip average: a mean of ratios in [-1, 1] of gradients that differ by the parameters' last bits
        torch.testing.assert_close(a[:, 4:], b[:, 4:], rtol=1e-3, atol=1e-5)


def test_the_kernel_leaves_half_state_and_other_dtypes_to_the_torch_path():
    kernel_or_skip()
    rule = random_weights(MOMENTS, seed=5)
    p = torch.nn.Parameter(torch.ones(10))
    assert LearnedOptimizer([p], weights=rule, state_dtype=torch.bfloat16)._backend(torch.device("cpu")).name == "torch"
    half = torch.nn.Parameter(torch.full((10,), 0.01, dtype=torch.bfloat16))
    before = half.detach().clone()
    opt = LearnedOptimizer([half], weights=rule)
    half.grad = torch.full((10,), 0.5, dtype=torch.bfloat16)
    opt.step()  # a bfloat16 parameter through the float32 kernel: its gradient copied, the update added after
    assert opt._backend(torch.device("cpu")).name == "cpp" and (half != before).all()


def test_a_moments_rule_round_trips_through_a_weight_file(tmp_path):
    rule = random_weights(MOMENTS, seed=6)
    save_weights(tmp_path / "m.safetensors", rule.theta, rule.config, {"name": "m"})
    assert load_weights(tmp_path / "m.safetensors").config == MOMENTS


def test_run_lengths_are_drawn_from_the_seed_within_the_range():
    config = MetaTrainConfig(task="quadratic", steps=2000, min_steps=100, unroll=25, meta_grad="pes")
    lengths = [run_length(config, seed) for seed in range(2000)]
    assert lengths == [run_length(config, seed) for seed in range(2000)]
    assert min(lengths) >= 100 and max(lengths) <= 2000
    logs = torch.tensor(lengths, dtype=torch.float64).log()
    assert abs(float(logs.mean()) - (math.log(100) + math.log(2000)) / 2) < 0.1  # log-uniform
    assert run_length(MetaTrainConfig(task="quadratic"), 5) == 100
    with pytest.raises(ValueError, match="min_steps"):
        MetaTrainConfig(task="quadratic", min_steps=10)  # only pes draws lengths


def test_pes_estimates_the_whole_runs_gradient():
    """Truncations of 4 steps of a 12-step run: the PES estimate (perturbations accumulated across truncations)
    points along central finite differences of the whole run's meta-loss, as an estimate over whole runs would."""
    from learned_optim.metatrain import estimators
    from learned_optim.metatrain.rollout import rollout
    from learned_optim.tasks import make_task

    net = NetConfig(hidden_size=2, num_layers=1)
    config = MetaTrainConfig(task="quadratic", net=net, steps=12, unroll=4, meta_grad="pes", es_pairs=150,
                             es_sigma=0.02, meta_loss="log")
    theta = {k: v for k, v in nets.init_theta(net, torch.Generator().manual_seed(3)).items()}
    task = make_task("quadratic", dim=3)

    class Capture(torch.optim.SGD):
        """Adds up the estimates of a run's meta-updates and leaves the weights where they are."""

        def step(self, closure=None):
            grads = [p.grad.clone() for p in self.param_groups[0]["params"]]
            self.total = grads if not hasattr(self, "total") else [a + b for a, b in zip(self.total, grads)]
            self.updates = getattr(self, "updates", 0) + 1

    flat = lambda tensors: torch.cat([t.reshape(-1) for t in tensors])  # noqa: E731
    params = [v.clone() for v in theta.values()]
    capture = Capture(params, lr=0.0)
    estimators.pes_runs(dict(zip(theta, params)), capture, [task.sample(7)], [7], config)
    assert capture.updates == 3  # one per truncation
    pes = flat(capture.total)  # the truncations' estimates add up to the whole run's

    def whole(delta):
        rule = {k: v + d for (k, v), d in zip(theta.items(), delta)}
        losses = rollout(rule, net, task.sample(7), 13)[1:].double()
        return float(losses.log().sum())

    base = flat(theta.values())
    fd = torch.zeros_like(base)
    for i in range(base.numel()):
        delta = torch.zeros_like(base)
        delta[i] = 1e-3
        split = list(delta.split([v.numel() for v in theta.values()]))
        up = whole([d.view_as(v) for d, v in zip(split, theta.values())])
        down = whole([-d.view_as(v) for d, v in zip(split, theta.values())])
        fd[i] = (up - down) / 2e-3
    cosine = float(torch.nn.functional.cosine_similarity(pes, fd, dim=0))
    assert cosine > 0.6, cosine


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_the_default_steps_each_tensor_whatever_else_the_optimizer_holds(implementation):
    """The default reads nothing from other tensors: the same model trained by one optimizer, by two that split its
    tensors, or with a tensor frozen (its gradient withheld) takes the same steps on every tensor that trains."""
    config = load_weights("default").config
    assert not config.tensor_inputs and config.grad_norm == "none"
    runs = []
    for layout in ("one", "two", "frozen"):
        model = small_model(seed=4)
        params = list(model.parameters())
        if layout == "two":
            opts = [LearnedOptimizer(params[:2], implementation=implementation),
                    LearnedOptimizer(params[2:], implementation=implementation)]
        else:
            opts = [LearnedOptimizer(params, implementation=implementation)]
        for step in range(8):
            for p in params:
                p.grad = None
            loss_of(model, step).backward()
            if layout == "frozen":
                params[0].grad = None
            for opt in opts:
                opt.step()
        runs.append([p.detach().clone() for p in params])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b)
    # freezing the first tensor changes the loss, so only its own trajectory and the gradients of others differ:
    # compare the frozen run against a run that never had the first tensor in the optimizer
    model = small_model(seed=4)
    params = list(model.parameters())
    opt = LearnedOptimizer(params[1:], implementation=implementation)
    for step in range(8):
        for p in params:
            p.grad = None
        loss_of(model, step).backward()
        opt.step()
    for a, b in zip(runs[2], params):
        assert torch.equal(a, b.detach())


def test_the_default_is_l2l_moments_at_a_decaying_step_with_a_flip_gate():
    """The shipped default is l2l-moments' network, weight for weight, with only its nominal step changed (what
    recipes/l2l-moments-decay.sh does) and the flip gate added (recipes/l2l-moments-flip.sh); the step starts at 9e-3
    and falls to a tenth by update 9,001."""
    default, decay, base = load_weights("default"), load_weights("l2l-moments-decay"), load_weights("l2l-moments")
    assert default.theta.keys() == base.theta.keys() == decay.theta.keys()
    for name in base.theta:
        assert torch.equal(default.theta[name], base.theta[name]) and torch.equal(decay.theta[name], base.theta[name])
    step = {"output_scale": 9e-3, "step_decay_steps": 1000.0, "step_decay_power": 1.0}
    assert decay.config == dataclasses.replace(base.config, **step)
    assert default.config == dataclasses.replace(decay.config, flip_gate=True)
    assert math.isclose(nets.nominal_step(default.config, 9001), 9e-4)
    assert default.config.state_size * 4 == 88  # bytes of float32 state per parameter


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_a_float16_state_keeps_the_moving_averages_in_float32(implementation):
    """Gradients of 1e-5 have squares (1e-10) below float16's smallest step: stored in float16, v would read 0 while
    m kept the gradient, and the step would be 10^12 times too long. The moving averages stay float32 (the LSTM's
    state is float16), so the steps are the float32 state's, to float16's rounding of h and c."""
    rule = random_weights(MOMENTS, seed=8)
    ends, opts = [], []
    for dtype in (torch.float32, torch.float16):
        p = torch.nn.Parameter(torch.zeros(40))
        opt = LearnedOptimizer([p], weights=rule, implementation=implementation, state_dtype=dtype)
        gen = torch.Generator().manual_seed(0)
        for _ in range(20):
            p.grad = 1e-5 * (1 + torch.rand(40, generator=gen))
            opt.step()
        ends.append(p.detach().clone())
        opts.append((opt, p))
    opt, p = opts[1]
    assert opt.state[p]["moments"].dtype == torch.float32 and opt.state[p]["h0"].dtype == torch.float16
    assert ends[0].abs().max() < 1.0  # about 20 steps of 1e-3
    torch.testing.assert_close(ends[1], ends[0], rtol=2e-2, atol=1e-6)
    saved = opt.state_dict()
    again = LearnedOptimizer([p], weights=rule, implementation=implementation, state_dtype=torch.float16)
    again.load_state_dict(saved)
    assert again.state[p]["moments"].dtype == torch.float32


SCALE = dataclasses.replace(MOMENTS, output="scale")


def test_a_scale_readout_is_a_residual_readout_without_its_correction():
    """"scale" steps by -output_scale * exp(s) * m_hat/sqrt(v_hat): the same rule as a "residual" one whose correction
    row is zero, step for step (the reference network), and its readout has the one row s."""
    scale_rule = random_weights(SCALE, seed=6)
    assert nets.theta_shapes(SCALE)["readout.w"] == (1, 8) and SCALE.state_names == MOMENTS.state_names
    theta = dict(scale_rule.theta)
    theta["readout.w"] = torch.cat([torch.zeros_like(theta["readout.w"]), theta["readout.w"]])
    theta["readout.b"] = torch.cat([torch.zeros_like(theta["readout.b"]), theta["readout.b"]])
    residual_rule = dataclasses.replace(random_weights(MOMENTS, seed=6), theta=theta)
    ends = []
    for rule in (scale_rule, residual_rule):
        model = small_model(seed=3)
        ends.append(run_steps(model, LearnedOptimizer(model.parameters(), weights=rule, implementation="reference")))
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs preprocess 'moments'"):
        NetConfig(output="scale")


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 30), steps=st.integers(1, 8))
def test_a_scale_rule_steps_along_adams_direction(seed, n, steps):
    """Whatever its weights, a "scale" rule's update is Adam's direction times a positive factor within the nominal
    step times e^{+-5}: never against -m_hat/sqrt(v_hat), and zero exactly where that direction is."""
    rule = random_weights(SCALE, seed=seed % 97)
    gen = torch.Generator().manual_seed(seed)
    state = nets.init_state(SCALE, n)
    for t in range(1, steps + 1):
        grad = torch.randn(n, generator=gen) * (torch.rand(n, generator=gen) < 0.8)
        update, state = nets.rule_step(rule.theta, grad, state, SCALE, step_count=t)
        direction = state[0][:, 0] / (1 - MOMENT_BETAS[0] ** t)  # m_hat's sign is the direction's
        assert torch.all(update * direction <= 0)
        assert torch.all((update == 0) == (direction == 0))
        root = (state[0][:, -1] / (1 - SECOND_MOMENT_BETA**t)).sqrt() + TINY
        ratio = update.abs() / (direction.abs() / root).clamp_min(1e-30)
        nz = direction != 0
        lo, hi = SCALE.output_scale * math.exp(-5), SCALE.output_scale * math.exp(5)
        assert torch.all(ratio[nz] >= lo * (1 - 1e-4)) and torch.all(ratio[nz] <= hi * (1 + 1e-4))


@pytest.mark.parametrize("decay", [0.0, 4.0])
def test_the_kernel_takes_a_scale_rules_reference_steps(decay):
    kernel_or_skip()
    rule = random_weights(dataclasses.replace(SCALE, step_decay_steps=decay), seed=5)
    ends = []
    for implementation in ("fast", "reference"):
        model = small_model(seed=3)
        opt = LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation, lr=0.7)
        if implementation == "fast":
            assert opt._backend(torch.device("cpu")).__class__.__name__ == "CppMomentsBackend"
        ends.append(run_steps(model, opt, 15))
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6)


def test_a_scale_recipe_starts_from_a_residual_rule_without_its_correction(tmp_path):
    """--output scale --init-from a residual rule: meta-training starts at that rule with d = 0, its s row kept."""
    from learned_optim.metatrain.config import initial_theta

    source = random_weights(MOMENTS, seed=8)
    save_weights(tmp_path / "r.safetensors", source.theta, MOMENTS)
    args = build_parser().parse_args(["--task", "quadratic", "--out", str(tmp_path / "x.safetensors"),
                                      "--preprocess", "moments", "--output", "scale", "--layers", "1",
                                      "--hidden-size", "8", "--output-scale", "1e-3",
                                      "--init-from", str(tmp_path / "r.safetensors")])
    config = config_from_args(args)
    theta = initial_theta(config)
    assert theta["readout.w"].shape == (1, 8)
    torch.testing.assert_close(theta["readout.w"], source.theta["readout.w"][1:])
    torch.testing.assert_close(theta["readout.b"], source.theta["readout.b"][1:])
    torch.testing.assert_close(theta["cells.0.w_ih"], source.theta["cells.0.w_ih"])


def test_metatraining_a_scale_rule_from_a_residual_one_writes_a_scale_rule(tmp_path):
    """The command line end to end: PES on the quadratics from a residual rule's file; the written rule is a "scale"
    rule that the C++ kernel (where it builds) and the reference path step alike, and meta-training moved it."""
    import subprocess
    import sys

    source = save_weights(tmp_path / "r.safetensors", random_weights(MOMENTS, seed=9).theta, MOMENTS)
    out = tmp_path / "s.safetensors"
    args = ["--task", "quadratic", "--dim", "4", "--out", str(out), "--epochs", "1", "--runs-per-epoch", "2",
            "--steps", "12", "--min-steps", "6", "--unroll", "4", "--val-problems", "1", "--meta-grad", "pes",
            "--es-pairs", "2", "--preprocess", "moments", "--output", "scale", "--layers", "1", "--hidden-size", "8",
            "--output-scale", "1e-3", "--init-from", str(tmp_path / "r.safetensors"), "--keep", "last"]
    result = subprocess.run([sys.executable, "-m", "learned_optim.metatrain", *args], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    rule = load_weights(out)
    assert rule.config == SCALE and rule.card["init_from_sha256"] == source.sha256
    assert not torch.equal(rule.theta["readout.w"], source.theta["readout.w"][1:])
    ends = []
    for implementation in ("fast", "reference"):
        model = small_model(seed=3)
        ends.append(run_steps(model, LearnedOptimizer(model.parameters(), weights=rule, implementation=implementation)))
    for a, b in zip(*ends):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6)


FLIP = dataclasses.replace(MOMENTS, flip_gate=True)


def updates_of(config: NetConfig, theta, grads: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple]]:
    """The reference rule's updates (and states) for a stream of flat gradients (steps, N)."""
    state, updates, states = nets.init_state(config, grads.shape[1]), [], []
    for t, grad in enumerate(grads, start=1):
        update, state = nets.rule_step(theta, grad, state, config, step_count=t)
        updates.append(update)
        states.append(state)
    return updates, states


def test_the_flip_gate_config_state_and_command_line(tmp_path):
    """Two more numbers of state per coordinate (22 in all: 88 bytes, within the 160 a default may keep); only a
    "residual" readout has a correction to gate; the card writes the field only where it is set; --flip-gate."""
    from learned_optim.metatrain.config import start_weights

    assert FLIP.state_names == MOMENTS.state_names and FLIP.state_size == MOMENTS.state_size + 2 == 22
    assert nets.theta_shapes(FLIP) == nets.theta_shapes(MOMENTS)  # no weights of its own
    for bad in ({"output": "scale"}, {"output": "linear", "preprocess": "log_sign"}):
        with pytest.raises(ValueError, match="flip_gate"):
            dataclasses.replace(FLIP, **bad)
    with pytest.raises(ValueError, match="flip_gate"):
        dataclasses.replace(MOMENTS, flip_gate=1)
    assert "flip_gate" not in MOMENTS.to_dict() and NetConfig.from_dict(FLIP.to_dict()) == FLIP
    model = small_model(seed=1)
    opt = LearnedOptimizer(model.parameters(), weights=random_weights(FLIP, seed=2))
    run_steps(model, opt, 3)
    assert opt.state[model.fc1.weight]["moments"].shape == (7 * 12, 6)
    # a gated recipe may start from an ungated rule's file: the same weights, the gate added
    save_weights(tmp_path / "r.safetensors", random_weights(MOMENTS, seed=8).theta, MOMENTS)
    args = build_parser().parse_args(["--task", "quadratic", "--out", str(tmp_path / "x.safetensors"),
                                      "--preprocess", "moments", "--output", "residual", "--flip-gate", "--layers",
                                      "1", "--hidden-size", "8", "--output-scale", "1e-3",
                                      "--init-from", str(tmp_path / "r.safetensors")])
    config = config_from_args(args)
    assert config.net == FLIP
    start = start_weights(config)
    assert start.config == FLIP and start.theta.keys() == random_weights(MOMENTS, seed=8).theta.keys()


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 20), steps=st.integers(1, 15))
def test_where_the_gradient_never_flips_sign_the_flip_gate_changes_nothing(seed, n, steps):
    """Gradients that keep each coordinate's sign (any magnitudes, zeros among them): the flip average never falls
    below 0, so the gate is exactly 1 and every update is bitwise the ungated rule's; the average stays in [0, 1]."""
    rule = random_weights(MOMENTS, seed=seed % 89)
    gen = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    magnitude = torch.rand(steps, n, generator=gen).square() * 10.0 ** torch.randint(-6, 4, (steps, 1), generator=gen)
    grads = sign * magnitude * (torch.rand(steps, n, generator=gen) < 0.8)
    gated, states = updates_of(FLIP, rule.theta, grads)
    plain, _ = updates_of(MOMENTS, rule.theta, grads)
    for a, b in zip(gated, plain):
        assert torch.equal(a, b)
    for state in states:
        assert torch.all((state[0][:, -1] >= 0) & (state[0][:, -1] <= 1))


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 20), log_scale=st.floats(-8, 8))
def test_a_gradient_that_flips_sign_at_every_step_closes_the_correction(seed, n, log_scale):
    """g_t = (-1)^t a (an oscillation across a valley): after a few steps the flip average is at or below
    FLIP_CLOSED, the correction is shut, and the update is bitwise that of the same rule with its correction row
    zeroed (a step along Adam's direction alone, sized by the same s); the average stays in [-1, 0]."""
    from benchmarks.residual_correction import without_correction
    from learned_optim.features import FLIP_CLOSED

    rule = random_weights(MOMENTS, seed=seed % 89)
    gen = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, generator=gen) + 0.5) * math.exp(log_scale) * torch.where(torch.rand(n, generator=gen) < 0.5,
                                                                                 -1.0, 1.0)
    grads = torch.stack([a * (-1) ** t for t in range(12)])
    gated, states = updates_of(FLIP, rule.theta, grads)
    along, _ = updates_of(MOMENTS, without_correction(rule).theta, grads)
    for t, (state, x, y) in enumerate(zip(states, gated, along), start=1):
        flip = state[0][:, -1]
        assert torch.all((flip >= -1) & (flip <= 0))
        if t >= 6:
            assert torch.all(flip <= FLIP_CLOSED) and torch.equal(x, y), t


@pytest.mark.parametrize("implementation", ["torch", "compiled"])
def test_every_path_takes_the_flip_rules_reference_steps(implementation):
    """The batched PyTorch paths run the gate through the same rule_step as the reference: the same parameters and
    state (the last gradients, the flip averages) after a run whose gradients oscillate; and an optimizer resumed
    from a state dict halfway continues bitwise."""
    rule = random_weights(FLIP, seed=11)
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(40, generator=gen)
    grads = [a * (-1) ** t + 0.1 * torch.randn(40, generator=gen) for t in range(12)]
    ends = []
    for impl, resume_at in ((implementation, None), ("reference", None), ("reference", 5)):
        p = torch.nn.Parameter(torch.zeros(40))
        opt = LearnedOptimizer([p], weights=rule, implementation=impl)
        for t, g in enumerate(grads):
            p.grad = g.clone()
            opt.step()
            if t == resume_at:
                resumed = LearnedOptimizer([p], weights=rule, implementation=impl)
                resumed.load_state_dict(opt.state_dict())
                opt = resumed
        ends.append((p.detach().clone(), opt.state[p]["moments"].clone()))
    torch.testing.assert_close(ends[0][0], ends[1][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ends[0][1], ends[1][1], rtol=1e-5, atol=1e-7)
    assert torch.equal(ends[1][0], ends[2][0]) and torch.equal(ends[1][1], ends[2][1])
    assert float(ends[1][1][:, -1].min()) < 0  # the oscillation registered in the flip averages
