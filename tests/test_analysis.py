"""The reverse-engineering tools recover what is known of hand-designed rules, and run on learned ones."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learned_optim.analysis import (
    Adam,
    ClippedGradientDescent,
    GradientDescent,
    LearnedRule,
    Momentum,
    RMSProp,
    autonomous,
    effective_lr,
    fixed_points,
    linearize,
    saturation,
    update_function,
)
from learned_optim.nets import NetConfig
from learned_optim.pretrained import random_weights, save_weights

F64 = dict(dtype=torch.float64)


@given(lr=st.floats(1e-4, 1.0))
def test_gradient_descent_effective_lr_is_its_lr(lr):
    rule = GradientDescent(lr)
    assert float(effective_lr(rule, rule.init_state(1)[0])) == pytest.approx(lr, rel=1e-12)
    grads = torch.linspace(-3, 3, 7, **F64)
    torch.testing.assert_close(update_function(rule, rule.init_state(1)[0], grads), -lr * grads)
    assert not saturation(rule, rule.init_state(1)[0]).saturates


@settings(max_examples=10)
@given(lr=st.floats(1e-4, 1.0), beta=st.floats(0.05, 0.99))
def test_momentum_fixed_point_eigenvalue_is_beta_and_mode_lr_is_alpha(lr, beta):
    rule = Momentum(lr, beta)
    found = fixed_points(rule, torch.randn(6, 1, generator=torch.Generator().manual_seed(0), **F64), iterations=1000, lr=0.05)
    assert len(found.points) == 1 and abs(float(found.points[0, 0])) < 1e-3  # the only fixed point at g* = 0 is h = 0
    lin = linearize(rule, found.points[0])
    assert complex(lin.eigenvalues[0]).real == pytest.approx(beta, rel=1e-9)
    assert complex(lin.mode_lrs[0]).real == pytest.approx(lr, rel=1e-9)
    assert float(lin.timescales[0]) == pytest.approx(-1 / math.log(beta), rel=1e-9)


def test_momentum_fixed_point_moves_with_a_constant_gradient():
    """For g* != 0 the fixed point is h* = g*/(1 - β): the S-curve of a linear rule is a line."""
    rule = Momentum(0.1, 0.8)
    for g_star in (-2.0, 0.5, 3.0):
        found = fixed_points(rule, torch.zeros(1, 1, **F64), g_star=g_star, iterations=1500, lr=0.2)
        assert float(found.points[0, 0]) == pytest.approx(g_star / 0.2, rel=1e-4)


@given(clip=st.floats(0.1, 20.0))
def test_the_clipping_threshold_is_found(clip):
    rule = ClippedGradientDescent(0.1, clip)
    found = saturation(rule, rule.init_state(1)[0], g_max=100.0)
    assert found.saturates and abs(found.threshold - clip) <= 0.03 and found.max_update == pytest.approx(0.1 * clip)


def test_rmsprop_effective_lr_falls_as_its_state_grows():
    rule = RMSProp(0.01)
    states = torch.tensor([[1e-4], [1e-2], [1.0], [1e2]], **F64)
    lrs = effective_lr(rule, states)
    assert (lrs[1:] < lrs[:-1]).all()
    assert float(lrs[2]) == pytest.approx(0.01 / (math.sqrt(0.9) + 1e-8), rel=1e-9)


def test_adam_has_two_modes_at_its_betas():
    lin = linearize(Adam(0.01), torch.tensor([0.0, 1.0], **F64))
    assert sorted(complex(e).real for e in lin.eigenvalues) == pytest.approx([0.9, 0.999])


def test_autonomous_dynamics_of_a_decaying_state():
    """With g = 0 momentum's state decays as β^t: the trajectory shows it."""
    rule = Momentum(0.1, 0.5)
    run = autonomous(rule, steps=5, h0=torch.tensor([1.0], **F64))
    torch.testing.assert_close(run.states[:, 0], torch.tensor([0.5**t for t in range(6)], **F64))
    torch.testing.assert_close(run.effective_lrs, torch.full((6,), 0.1, **F64))


def test_tools_run_on_a_shipped_learned_rule():
    """The learned rule goes through the package's own step: its fixed point at g = 0 is found and linearized."""
    # a rule whose state moves without a gradient (a moments rule's accumulators stay at zero, where its slope in g
    # is undefined; its analysis runs at a given gradient scale, below)
    rule = LearnedRule("l2l-mlp-distill")
    # run until the state has settled: l2l-mlp-family-plus's slowest mode has a timescale of about 45 steps;
    # l2l-mlp-distill moves its state by about 4e-6 per step at step 200, 1e-16 by 1000
    run = autonomous(rule, steps=1000)
    assert run.states.shape == (1001, rule.state_size) and torch.isfinite(run.effective_lrs).all()
    start = run.states[-4:] + 0.01 * torch.randn(4, rule.state_size, generator=torch.Generator().manual_seed(0), **F64)
    found = fixed_points(rule, start, iterations=1000)
    assert len(found.points) >= 1 and float(found.residuals.max()) < 1e-8
    lin = linearize(rule, found.points[0])
    assert lin.jacobian_h.shape == (rule.state_size, rule.state_size)
    assert float(lin.eigenvalues.abs().max()) < 1.0  # a stable fixed point: the state forgets
    # the modes reproduce the linearized impulse response rh · J^(k-1) · jg = Σ_i -α_i λ_i^k
    k = 3
    direct = float(lin.readout_h @ torch.linalg.matrix_power(lin.jacobian_h, k - 1) @ lin.jacobian_g)
    via_modes = complex((-lin.mode_lrs * lin.eigenvalues**k).sum())
    assert via_modes.real == pytest.approx(direct, rel=1e-6, abs=1e-12) and abs(via_modes.imag) < 1e-9


def test_analyze_cli_writes_figures_and_a_summary(tmp_path):
    from learned_optim import analyze

    out = tmp_path / "report"
    assert analyze.main(["l2l-quadratic", "--task", "quadratic", "--out", str(out), "--problems", "2", "--steps", "10",
                         "--fp-iterations", "50", "--search-samples", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rule"] == "l2l-quadratic" and summary["steps"] == 10
    assert set(summary) >= {"momentum", "clipping", "schedule", "adaptation", "gradient_magnitude_quantiles"}
    assert set(summary["tuned_baselines"]) == {"Momentum", "RMSprop", "Adam"} and len(summary["mean_training_loss"]) == 4
    for name in ("fig1_losses", "fig2_hand_designed", "fig3_momentum", "fig4_clipping", "fig5_schedule", "fig7_layers"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "# What `l2l-quadratic` does on quadratic" in (out / "summary.md").read_text()
    assert "log-sign" in summary["note"]  # l2l-quadratic sees log|g|: the slope at 0 is the small-gradient branch's
    with pytest.raises(SystemExit) as info:
        analyze.main(["no-such-rule", "--out", str(out)])
    assert info.value.code == 2


def raw_gru_report(tmp_path, task: str) -> dict:
    """analyze's summary of a small random raw-gradient GRU rule on ``task`` (report in tmp_path / "r")."""
    from learned_optim import analyze

    raw = random_weights(NetConfig(cell="gru", num_layers=1, hidden_size=4, preprocess="none"), seed=0)
    path = tmp_path / "raw.safetensors"
    save_weights(path, raw.theta, raw.config, {"name": "raw"})
    assert analyze.main([str(path), "--task", task, "--out", str(tmp_path / "r"), "--problems", "2", "--steps", "5",
                         "--fp-iterations", "20"]) == 0
    return json.loads((tmp_path / "r" / "summary.json").read_text())


def test_the_log_sign_caveat_is_only_given_for_rules_that_use_it(tmp_path):
    summary = raw_gru_report(tmp_path, "rosenbrock")
    assert summary["note"].startswith("effective learning rate") and "log-sign" not in summary["note"]


def test_a_linreg_report_gives_its_problems_condition_numbers(tmp_path):
    """The paper's Fig. 1a: the report on linreg holds the histogram of the task's condition numbers."""
    from learned_optim import analyze
    from learned_optim.tasks import make_task

    summary = raw_gru_report(tmp_path, "linreg")
    kappas = summary["condition_numbers"]
    task = make_task("linreg")
    first, stop = kappas["seeds"]
    assert first == summary["problems"][0] and stop - first == kappas["problems"] == analyze.CONDITION_SAMPLES
    expected = sorted(task.condition_number(seed) for seed in range(first, stop))
    assert sum(kappas["log10_histogram"]["counts"]) == kappas["problems"]
    assert kappas["min"] == pytest.approx(expected[0]) and kappas["max"] == pytest.approx(expected[-1])
    assert 1 <= kappas["min"] <= kappas["median"] <= kappas["max"] <= task.config.max_condition * 1.01
    assert kappas["max"] / kappas["min"] > 100  # log-uniform up to 1e3: a thousand draws span the range
    assert kappas["of_the_analysed_problems"] == pytest.approx([task.condition_number(s) for s in summary["problems"]])
    assert (tmp_path / "r" / "fig1_losses.png").stat().st_size > 1000
    assert "Condition numbers" in (tmp_path / "r" / "summary.md").read_text()
