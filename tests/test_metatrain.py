import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, interrupted_run, needs_mnist, run_steps, small_model
from learned_optim import LearnedOptimizer, load_weights, nets
from learned_optim.baselines import train as train_with
from learned_optim.features import preprocess
from learned_optim import metatrain as mt
from learned_optim.metatrain import train as mt_loop
from learned_optim.metatrain import (MetaTrainConfig, build_parser, checkpoint_path, config_from_args, main, metatrain, rollout,
                                     train_run)
from learned_optim.nets import NetConfig
from learned_optim.pretrained import random_weights
from learned_optim.tasks import make_task

TINY = dict(task="quadratic", epochs=2, runs_per_epoch=2, steps=10, unroll=5, val_problems=2, net=NetConfig(hidden_size=4))


class _Capture(torch.optim.Optimizer):
    """Records the meta-gradient instead of stepping."""

    def __init__(self, params):
        super().__init__(params, {})
        self.grads = []

    def step(self, closure=None):
        self.grads.append([p.grad.clone() for p in self.param_groups[0]["params"]])


@pytest.mark.parametrize("meta_loss", ["sum", "log"])
def test_meta_gradient_equals_full_backprop_with_detached_gradients(monkeypatch, meta_loss):
    """One backward per unroll gives exactly d/dφ Σ_t f(θ_t) of the paper (second derivatives dropped), and with
    meta_loss="log" d/dφ Σ_t log f(θ_t)."""
    config = MetaTrainConfig(task="quadratic", steps=6, unroll=6, net=NetConfig(hidden_size=5), meta_loss=meta_loss)
    problem = make_task("quadratic", init="normal").sample(123)
    problem.w, problem.y = problem.w.double(), problem.y.double()
    theta0 = nets.init_theta(config.net, torch.Generator().manual_seed(1), dtype=torch.float64)

    # the definition: θ_{t+1} = θ_t + m(∇f(θ_t) detached), L = Σ_{t=1..6} f(θ_t), autograd through everything
    theta = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    x = problem.model.theta.detach().double()
    state = nets.init_state(config.net, x.numel(), dtype=torch.float64)
    f = lambda v: ((problem.w @ v - problem.y) ** 2).sum()
    total = 0
    for _ in range(6):
        leaf = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(leaf), leaf)
        update, state = nets.step(theta, preprocess(g), state, config.net)
        x = x + update
        total = total + (f(x) if meta_loss == "sum" else f(x).log())
    total.backward()

    # the trainer, in float64
    original = mt.Optimizee.__init__

    def double_init(self, problem, device):
        original(self, problem, device)
        self.params = [p.double() for p in self.params]

    monkeypatch.setattr(mt.Optimizee, "__init__", double_init)
    init_state = nets.init_state
    monkeypatch.setattr(nets, "init_state", lambda c, n, dtype=None, device="cpu": init_state(c, n, torch.float64, device))
    theta2 = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    capture = _Capture(list(theta2.values()))
    train_run(theta2, capture, problem, config)
    assert len(capture.grads) == 1
    for (name, p), mine in zip(theta.items(), capture.grads[0]):
        torch.testing.assert_close(mine, p.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_the_log_meta_loss_weighs_problems_by_relative_progress():
    """meta_loss="log": a problem whose loss is scaled by a constant c gives the same meta-gradient (d log(c f) = d log
    f), where the paper's sum scales it by c; the recipe records it, and the command line sets it. (A rule that
    rescales each tensor's gradient, grad_norm="tensor", sees the same inputs for f and c f.)"""

    def meta_gradient(meta_loss, scale):
        problem = make_task("quadratic", init="normal").sample(7)
        problem.w, problem.y = problem.w * scale**0.5, problem.y * scale**0.5  # f -> scale * f
        config = MetaTrainConfig(task="quadratic", steps=4, unroll=4, kernel="python", meta_loss=meta_loss,
                                 net=NetConfig(hidden_size=3, grad_norm="tensor", grad_norm_target=0.01))
        theta = {k: v.requires_grad_(True) for k, v in nets.init_theta(config.net, torch.Generator().manual_seed(2)).items()}
        capture = _Capture(list(theta.values()))
        train_run(theta, capture, problem, config)
        return torch.cat([g.reshape(-1) for g in capture.grads[0]])

    log1, log4 = meta_gradient("log", 1.0), meta_gradient("log", 4.0)
    sum1, sum4 = meta_gradient("sum", 1.0), meta_gradient("sum", 4.0)
    assert log1.abs().max() > 0 and sum1.abs().max() > 0
    torch.testing.assert_close(log4, log1, rtol=1e-3, atol=1e-6 * float(log1.abs().max()))
    torch.testing.assert_close(sum4, 4 * sum1, rtol=1e-3, atol=1e-6 * float(sum4.abs().max()))
    assert not torch.allclose(sum4, sum1, rtol=1e-2)
    parsed = mt.config_from_args(mt.build_parser().parse_args(["--out", "x.safetensors", "--meta-loss", "log"]))
    assert parsed.meta_loss == "log" and MetaTrainConfig.from_dict(parsed.to_dict()).meta_loss == "log"
    assert MetaTrainConfig.from_dict({k: v for k, v in MetaTrainConfig().to_dict().items() if k != "meta_loss"}).meta_loss == "sum"
    with pytest.raises(ValueError, match="meta_loss"):
        MetaTrainConfig(meta_loss="mean")


def test_rollout_equals_learned_optimizer_on_the_module(rule):
    """The meta-trainer's functional path and the optimizer on an nn.Module give the same run."""
    task = make_task("quadratic", init="normal")
    losses = rollout(rule.theta, rule.config, task.sample(4), steps=30)
    via_optimizer = train_with(task.sample(4), lambda p: LearnedOptimizer(p, weights=rule), 30)
    torch.testing.assert_close(via_optimizer, losses, rtol=1e-4, atol=1e-5)


# the rule options that change what the rule sees or how far it steps, each given to the meta-trainer's rollout and
# to LearnedOptimizer by the same NetConfig
ROLLOUT_OPTIONS = {"tensor_norm": dict(),
                   "tensor_input": dict(tensor_rms_input=True),
                   "both_inputs": dict(tensor_rms_input=True, tensor_count_input=True),
                   "clipped_count": dict(tensor_count_input=True, tensor_count_min=8)}


@pytest.mark.parametrize("option", list(ROLLOUT_OPTIONS))
def test_rollout_applies_each_rule_option_as_the_optimizer_does(option):
    base = dict(hidden_size=6, grad_norm="tensor", grad_norm_target=0.02)
    config = NetConfig(**base, **ROLLOUT_OPTIONS[option])
    rule = random_weights(config, seed=2)
    task = make_task("two_moons", hidden=[8, 8])
    losses = rollout(rule.theta, config, task.sample(4), steps=20)
    via_optimizer = train_with(task.sample(4), lambda p: LearnedOptimizer(p, weights=rule), 20)
    torch.testing.assert_close(via_optimizer, losses, rtol=1e-4, atol=1e-5)
    if option == "tensor_norm":  # the same weights without the normalization take other steps
        plain = NetConfig(hidden_size=6)
        assert not torch.allclose(rollout(rule.theta, plain, task.sample(4), steps=20), losses)


def test_end_to_end_writes_a_loadable_rule(tmp_path):
    config = MetaTrainConfig(**TINY)
    out = metatrain(config, tmp_path / "tiny.safetensors", command="python -m learned_optim.metatrain ...", log=lambda m: None)
    rule = load_weights(out)
    assert rule.config == config.net
    card = rule.card
    assert card["metatrain"]["steps"] == 10 and card["task"]["name"] == "quadratic"
    assert [h["epoch"] for h in card["validation"]["history"]] == [0, 1, 2]
    assert card["throughput"]["optimizee_steps_per_s"] > 0 and card["wall_time_s"] >= 0
    log = [json.loads(line) for line in (tmp_path / "tiny.log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2]
    # the kept weights are those of the best validated epoch
    best = card["validation"]["best_epoch"]
    assert card["validation"]["best"] == min(h["val"] for h in card["validation"]["history"])
    if best > 0:
        ckpt = load_file(checkpoint_path(out))
        assert torch.equal(ckpt[f"best.readout.w"], rule.theta["readout.w"])
    param = torch.nn.Parameter(torch.randn(5))
    opt = LearnedOptimizer([param], weights=str(out))
    (param**2).sum().backward()
    opt.step()


def test_keep_last_writes_the_last_epochs_weights(tmp_path):
    """--keep last: the weights of the last epoch (the checkpoint's current theta), not the best validation's, and the
    card says which; the same run with --keep best writes the best epoch's. A run may be resumed with either."""
    config = MetaTrainConfig(**{**TINY, "epochs": 3, "meta_lr": 0.05, "keep": "last"})
    out = metatrain(config, tmp_path / "last.safetensors", log=lambda m: None)
    rule, ckpt = load_weights(out), load_file(checkpoint_path(out))
    assert all(torch.equal(rule.theta[k], ckpt[f"theta.{k}"]) for k in rule.theta)
    assert rule.card["validation"]["kept_epoch"] == 3 and rule.card["metatrain"]["keep"] == "last"
    best = load_weights(metatrain(MetaTrainConfig(**{**TINY, "epochs": 3, "meta_lr": 0.05}), tmp_path / "best.safetensors",
                                  log=lambda m: None))
    assert "keep" not in best.card["metatrain"] and "kept_epoch" not in best.card["validation"]
    assert all(torch.equal(best.theta[k], ckpt[f"best.{k}"]) for k in best.theta)  # the same run, its best epoch
    if rule.card["validation"]["best_epoch"] != 3:
        assert any(not torch.equal(best.theta[k], rule.theta[k]) for k in rule.theta)
    more = load_weights(metatrain(MetaTrainConfig(**{**TINY, "epochs": 4, "meta_lr": 0.05}), tmp_path / "last.safetensors",
                                  resume=True, log=lambda m: None))
    assert more.card["resumed_after_epochs"] == [3] and "kept_epoch" not in more.card["validation"]
    with pytest.raises(ValueError, match="Invalid keep"):
        MetaTrainConfig(keep="first")
    args = build_parser().parse_args(["--task", "quadratic", "--keep", "last", "--out", str(tmp_path / "x.safetensors")])
    assert config_from_args(args).keep == "last"


def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch):
    config = MetaTrainConfig(**{**TINY, "epochs": 3})
    straight = metatrain(config, tmp_path / "a.safetensors", log=lambda m: None)

    # killed in the second run of epoch 2 (train_runs is called once per meta-batch of problems: here, per run)
    interrupted_run(monkeypatch, mt_loop, "train_runs", 4, lambda: metatrain(config, tmp_path / "b.safetensors", log=lambda m: None))
    assert checkpoint_path(tmp_path / "b.safetensors").exists()
    with pytest.raises(FileExistsError, match="pass --resume"):
        metatrain(config, tmp_path / "b.safetensors", log=lambda m: None)
    resumed = metatrain(config, tmp_path / "b.safetensors", resume=True, log=lambda m: None)
    a, b = load_weights(straight), load_weights(resumed)
    for k in a.theta:
        assert torch.equal(a.theta[k], b.theta[k]), k
    assert a.card["validation"]["history"][-1]["val"] == b.card["validation"]["history"][-1]["val"]
    assert a.card["resumed_after_epochs"] == [] and b.card["resumed_after_epochs"] == [1]
    with pytest.raises(ValueError, match="another recipe"):
        metatrain(MetaTrainConfig(**{**TINY, "epochs": 3, "meta_lr": 0.1}), tmp_path / "b.safetensors", resume=True, log=lambda m: None)


def test_init_from_starts_the_run_at_a_weight_file(tmp_path):
    """init_from: the run starts at the file's tensors (an epoch-0 run returns them bitwise and validates them as
    the source's run did), the card names the source's sha256, and a resume must give the same source."""
    source = load_weights(metatrain(MetaTrainConfig(**TINY), tmp_path / "src.safetensors", log=lambda m: None))
    start = MetaTrainConfig(**{**TINY, "epochs": 0, "init_from": str(tmp_path / "src.safetensors")})
    assert all(torch.equal(v, source.theta[k]) for k, v in mt.initial_theta(start).items())
    fresh = mt.initial_theta(MetaTrainConfig(**TINY))
    assert any(not torch.equal(v, source.theta[k]) for k, v in fresh.items())  # training moved it: the check can fail
    copy = load_weights(metatrain(start, tmp_path / "copy.safetensors", log=lambda m: None))
    assert all(torch.equal(v, source.theta[k]) for k, v in copy.theta.items())
    assert copy.card["init_from_sha256"] == source.sha256 and copy.card["metatrain"]["init_from"] == start.init_from
    assert copy.card["validation"]["history"][0]["val"] == source.card["validation"]["best"]
    assert "init_from_sha256" not in source.card
    # a continued run trains from there: one more epoch moves the weights
    more = load_weights(metatrain(MetaTrainConfig(**{**TINY, "epochs": 1, "init_from": start.init_from}),
                                  tmp_path / "more.safetensors", log=lambda m: None))
    assert more.card["validation"]["history"][0]["val"] == source.card["validation"]["best"]
    with pytest.raises(ValueError, match="differs in hidden_size"):
        mt.initial_theta(MetaTrainConfig(**{**TINY, "net": NetConfig(hidden_size=5), "init_from": start.init_from}))
    with pytest.raises(ValueError, match="Invalid init_from"):
        MetaTrainConfig(**{**TINY, "init_from": None})


def test_init_from_may_set_another_nominal_step(tmp_path):
    """A recipe with another --output-scale starts from the file's tensors at its own scale: the same update
    function with every step multiplied by the ratio of the scales."""
    source = load_weights(metatrain(MetaTrainConfig(**TINY), tmp_path / "src.safetensors", log=lambda m: None))
    net = dataclasses.replace(source.config, output_scale=3 * source.config.output_scale)
    start = MetaTrainConfig(**{**TINY, "net": net, "epochs": 0, "init_from": str(tmp_path / "src.safetensors")})
    assert mt.start_weights(start).config == net
    scaled = load_weights(metatrain(start, tmp_path / "scaled.safetensors", log=lambda m: None))
    assert scaled.config == net and all(torch.equal(v, source.theta[k]) for k, v in scaled.theta.items())
    moves = []
    for weights, lr in ((str(tmp_path / "src.safetensors"), 0.3), (str(tmp_path / "scaled.safetensors"), 0.1)):
        model = small_model(3)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        after = torch.cat([p.flatten() for p in run_steps(model, LearnedOptimizer(model.parameters(), weights=weights,
                                                                                   lr=lr), 1)])
        moves.append(after - before)
    assert moves[0].abs().max() > 0
    torch.testing.assert_close(moves[0], moves[1], rtol=1e-4, atol=1e-9)


def test_init_from_may_add_per_tensor_inputs_at_zero_weight(tmp_path):
    """A recipe that adds per-tensor inputs to init_from's rule starts at exactly that rule's update function: the
    first cell gets a zero input weight per added input, in the inputs' order, and nothing else changes."""
    source = load_weights(metatrain(MetaTrainConfig(**TINY), tmp_path / "src.safetensors", log=lambda m: None))
    both = dataclasses.replace(source.config, tensor_rms_input=True, tensor_count_input=True)
    start = MetaTrainConfig(**{**TINY, "net": both, "epochs": 0, "init_from": str(tmp_path / "src.safetensors")})
    theta = mt.initial_theta(start)
    w, w0 = theta["cells.0.w_ih"], source.theta["cells.0.w_ih"]
    assert w.shape == (w0.shape[0], w0.shape[1] + 2) and torch.equal(w[:, :-2], w0) and not w[:, -2:].any()
    assert all(torch.equal(v, source.theta[k]) for k, v in theta.items() if k != "cells.0.w_ih")
    widened = load_weights(metatrain(start, tmp_path / "wide.safetensors", log=lambda m: None))
    assert widened.config == both and widened.card["init_from_sha256"] == source.sha256
    # the same steps on a model whose tensors' gradients differ in scale (so the added inputs are not constant)
    runs = [torch.cat([p.flatten() for p in run_steps(model, LearnedOptimizer(model.parameters(), weights=w, lr=0.1), 5)])
            for w, model in ((source.name, small_model(3)), (str(tmp_path / "wide.safetensors"), small_model(3)))]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-7)
    # one added input onto a rule that has the other: the new column goes to its place in the order
    count_only = dataclasses.replace(source.config, tensor_count_input=True)
    theta_n = {**source.theta, "cells.0.w_ih": torch.cat([w0, torch.full_like(w0[:, :1], 7.0)], dim=1)}
    both_from_n = mt.widen(theta_n, count_only, both)["cells.0.w_ih"]
    assert not both_from_n[:, -2].any() and (both_from_n[:, -1] == 7).all()
    # removing an input, or changing anything else, is still refused
    with pytest.raises(ValueError, match="differs in tensor_count_input, tensor_rms_input"):
        mt.start_weights(MetaTrainConfig(**{**TINY, "init_from": str(tmp_path / "wide.safetensors")}))
    with pytest.raises(ValueError, match="differs in hidden_size"):
        mt.start_weights(MetaTrainConfig(**{**TINY, "net": dataclasses.replace(both, hidden_size=5),
                                            "init_from": str(tmp_path / "src.safetensors")}))
    with pytest.raises(ValueError, match="per-tensor inputs added"):
        mt.widen(theta_n, count_only, dataclasses.replace(source.config, tensor_rms_input=True))


def test_a_started_run_orders_its_tensors_the_same_in_every_process(tmp_path):
    """The meta-optimizer's state is saved by position, so a run started from a weight file must list the file's
    tensors in one order in every process (string hashing, and with it the parser's order, varies between
    processes): the architecture's. Before this held, --resume of such a run in a new process failed with a shape
    mismatch inside Adam, or worse, paired moments with the wrong tensors of the same shape."""
    source = tmp_path / "src.safetensors"
    metatrain(MetaTrainConfig(**{**TINY, "epochs": 0}), source, log=lambda m: None)
    probe = (
        "import json, sys; from learned_optim import load_weights; from learned_optim import metatrain as mt; "
        "from learned_optim.nets import NetConfig; "
        "c = mt.MetaTrainConfig(task='quadratic', net=NetConfig(hidden_size=4), init_from=sys.argv[1]); "
        "print(json.dumps([list(load_weights(sys.argv[1]).theta), list(mt.initial_theta(c)), "
        "list(load_weights('default').theta)]))"
    )
    seen = []
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", probe, str(source)], capture_output=True, text=True, env=env,
                              cwd=REPO, check=True)
        seen.append(json.loads(done.stdout))
    tiny, default = list(nets.theta_shapes(NetConfig(hidden_size=4))), list(nets.theta_shapes(load_weights().config))
    for loaded, started, shipped in seen:
        assert loaded == started == tiny and shipped == default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metatrain_on_cuda(tmp_path):
    config = MetaTrainConfig(**{**TINY, "device": "cuda"})
    theta = nets.init_theta(config.net, torch.Generator().manual_seed(0))
    problem = make_task("quadratic").sample(5)
    on_cpu = rollout(theta, config.net, problem, 10, "cpu")
    on_gpu = rollout({k: v.cuda() for k, v in theta.items()}, config.net, make_task("quadratic").sample(5, "cuda"), 10, "cuda")
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
    out = metatrain(config, tmp_path / "gpu.safetensors", log=lambda m: None)
    rule = load_weights(out)  # loads on CPU
    assert rule.card["device"] == torch.cuda.get_device_name() and rule.card["cell_implementation"] == "cells.lstm_cell_fast"
    assert all(v.device.type == "cpu" and torch.isfinite(v).all() for v in rule.theta.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "cifar"], "Unknown task: 'cifar'"),
        (["--task", "quadratic", "--steps", "-5"], "Invalid steps: -5"),
        (["--task", "quadratic", "--hidden", "20"], "--hidden does not apply to task 'quadratic'"),
        (["--task", "quadratic", "--family", "mlp-family"], "--family does not apply to task 'quadratic'"),
        (["--task", "mixture", "--family", "nonesuch"], "Unknown family: 'nonesuch'"),
        (["--task", "mnist_mlp", "--data-root", "/nonexistent/data"], "MNIST not found under /nonexistent/data"),
        (["--task", "quadratic", "--epochs", "x"], "invalid int value"),
        (["--task", "quadratic", "--problems-per-step", "3"], "Invalid problems_per_step: 3 (must divide runs_per_epoch, 20)"),
        (["--task", "quadratic", "--divergence-lr-factor", "2"], "Invalid divergence_lr_factor: 2.0"),
        (["--task", "quadratic", "--init-from", "/nonexistent/rule.safetensors"], "Weights file not found"),
        (["--task", "quadratic", "--init-from", "l2l-mnist", "--hidden-size", "4"], "differs in hidden_size"),
        (["--task", "quadratic", "--device", "cuda:7"] if not torch.cuda.is_available() else ["--task", "quadratic", "--lr", "0"], "Invalid"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "x.safetensors"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli.safetensors"
    args = ["--task", "quadratic", "--out", str(out), "--epochs", "1", "--runs-per-epoch", "1", "--steps", "6", "--unroll", "3",
            "--val-problems", "1", "--hidden-size", "3", "--dim", "4"]
    result = subprocess.run([sys.executable, "-m", "learned_optim.metatrain", *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    card = load_weights(out).card
    assert card["command"] == "python -m learned_optim.metatrain " + " ".join(args)
    assert card["task"]["dim"] == 4 and card["architecture"]["hidden_size"] == 3


@needs_mnist
def test_mnist_meta_training_runs(tmp_path):
    config = MetaTrainConfig(task="mnist_mlp", epochs=1, runs_per_epoch=1, steps=4, unroll=2, val_problems=1)
    out = metatrain(config, tmp_path / "m.safetensors", log=lambda m: None)
    assert load_weights(out).card["task"]["hidden"] == [20]


def test_metatrain_on_a_mixture_records_its_members(tmp_path):
    members = [["quadratic", {"dim": 3}], ["linreg", {"dim": 4}]]
    config = MetaTrainConfig(**{**TINY, "task": "mixture", "task_options": {"members": members}})
    out = metatrain(config, tmp_path / "mix.safetensors", log=lambda m: None)
    card = load_weights(out).card
    assert [m["name"] for m in card["task"]["members"]] == ["quadratic", "linreg"]
    assert card["validation"]["best"] < card["validation"]["history"][0]["val"]  # it learned something
    # the card's recipe rebuilds the same task
    recipe = card["metatrain"]
    assert make_task(recipe["task"], **recipe["task_options"]).describe() == card["task"]


@needs_mnist
def test_cli_family_recipe_parses_to_a_mixture(tmp_path):
    args = mt.build_parser().parse_args(["--task", "mixture", "--family", "mlp-family", "--out", str(tmp_path / "f.safetensors")])
    config = mt.config_from_args(args)
    assert config.task == "mixture" and config.task_options == {"family": "mlp-family"}
    task = make_task(config.task, **config.task_options)
    assert len(task.tasks) == 8 and task.describe()["family"] == "mlp-family"


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_zero_bias_init_maps_a_zero_gradient_to_a_zero_update(cell):
    """bias_init="zero": the untrained rule is still at rest under g = 0; "uniform" drifts, as torch.nn's init does."""
    net = nets.NetConfig(cell=cell, num_layers=2, hidden_size=8, preprocess="none")
    zero = mt.initial_theta(mt.MetaTrainConfig(net=net, bias_init="zero"))
    uniform = mt.initial_theta(mt.MetaTrainConfig(net=net))
    assert uniform.keys() == zero.keys()
    for name in zero:  # the same weights, biases zeroed
        if name.endswith((".b", ".b_ih", ".b_hh")):
            assert not zero[name].any() and uniform[name].abs().min() > 0
        else:
            assert torch.equal(zero[name], uniform[name])
    g = torch.zeros(5, 1)
    drift = {}
    for key, theta in (("zero", zero), ("uniform", uniform)):
        state = nets.init_state(net, 5)
        for _ in range(3):
            update, state = nets.step(theta, g, state, net)
        drift[key] = update.abs().max().item()
        if key == "zero":
            assert all(not s.any() for s in state)
    assert drift["zero"] == 0.0 and drift["uniform"] > 1e-4


def test_bias_init_is_a_checked_recipe_option(tmp_path):
    args = mt.build_parser().parse_args(["--task", "quadratic", "--bias-init", "zero", "--out", str(tmp_path / "z.safetensors")])
    config = mt.config_from_args(args)
    assert config.bias_init == "zero" and config.to_dict()["bias_init"] == "zero"
    assert mt.MetaTrainConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "bias_init"}).bias_init == "uniform"
    with pytest.raises(ValueError, match="bias_init"):
        mt.MetaTrainConfig(bias_init="normal")
