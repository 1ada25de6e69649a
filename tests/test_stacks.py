"""LearnedOptimizer inside users' training stacks: schedulers, mixed precision, compiled models, copies."""

import copy
import io

import pytest
import torch

from conftest import batch, loss_of, small_model
from learned_optim import LearnedOptimizer
from test_optimizer import assert_same_state, params_of, state_of, train

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# -- schedulers -------------------------------------------------------------------------


SCHEDULERS = {
    "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.05),
    # the rule has no momentum to cycle: OneCycleLR needs cycle_momentum=False (torch refuses it otherwise)
    "OneCycleLR": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2.0, total_steps=6, cycle_momentum=False),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_drive_lr_exactly_like_setting_it_by_hand(rule, name):
    model, by_hand = small_model(), small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    manual = LearnedOptimizer(by_hand.parameters(), weights=rule)
    sched = SCHEDULERS[name](opt)
    lrs = []
    for t in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        manual.param_groups[0]["lr"] = lrs[-1]
        train(model, opt, 1, start=t)
        train(by_hand, manual, 1, start=t)
        sched.step()
    assert len(set(lrs)) > 2  # the schedule moved the learning rate
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.equal(a, b)


def test_one_cycle_with_momentum_cycling_is_refused_by_torch(rule):
    opt = LearnedOptimizer(small_model().parameters(), weights=rule)
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)


# -- mixed precision ----------------------------------------------------------------------


def _amp_loss(model, t, device, dtype):
    x, y = (v.to(device) for v in batch(t))
    with torch.autocast(device_type=device, dtype=dtype):
        out = model(x)
    assert out.dtype == dtype  # autocast is really on
    return ((out.float() - y) ** 2).mean()


def _autocast_trains(device, dtype):
    model = small_model(seed=3).to(device)
    opt = LearnedOptimizer(model.parameters())  # the shipped default: it should train under autocast too
    with torch.no_grad():
        start = sum(float(_amp_loss(model, t, device, dtype)) for t in range(50, 54))
    for t in range(100):
        opt.zero_grad()
        _amp_loss(model, t, device, dtype).backward()
        opt.step()
    with torch.no_grad():
        end = sum(float(_amp_loss(model, t, device, dtype)) for t in range(50, 54))
    assert end < 0.8 * start
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(v).all() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def test_autocast_bfloat16_on_cpu():
    _autocast_trains("cpu", torch.bfloat16)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_on_cuda(dtype):
    _autocast_trains("cuda", dtype)


def _scaler_run(device, rule, poison_at=None, clip=None, scaler_on=True):
    model = small_model().to(device)
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10, enabled=scaler_on)
    record = {}
    for t in range(4):
        opt.zero_grad()
        x, y = (v.to(device) for v in batch(t))
        scaler.scale(((model(x) - y) ** 2).mean()).backward()
        if t == poison_at:
            model.fc1.weight.grad[0, 0] = float("inf")
            record["before"] = (params_of(model), state_of(opt), scaler.get_scale())
        if clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(opt)
        scaler.update()
        if t == poison_at:
            record["after"] = (params_of(model), state_of(opt), scaler.get_scale())
    return model, opt, record


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_grad_scaler_skips_an_overflowing_step_without_touching_params_or_state(rule, device):
    _, opt, record = _scaler_run(device, rule, poison_at=2)
    (p0, s0, scale0), (p1, s1, scale1) = record["before"], record["after"]
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert_same_state(s0, s1)  # hidden state and step count unchanged
    assert scale1 == scale0 / 2
    assert all(s["step"] == 3 for s in opt.state.values())  # 4 steps, one skipped


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_grad_scaler_with_unscale_and_clipping_matches_unscaled_training(rule, device):
    scaled, _, _ = _scaler_run(device, rule, clip=0.5)
    plain, _, _ = _scaler_run(device, rule, clip=0.5, scaler_on=False)
    # scaling by 2**10 and unscaling are exact in float32: the same steps
    for a, b in zip(scaled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# -- compiled models ------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(rule):
    eager, compiled_src = small_model(), small_model()
    compiled = torch.compile(compiled_src)
    o1 = LearnedOptimizer(eager.parameters(), weights=rule)
    o2 = LearnedOptimizer(compiled_src.parameters(), weights=rule)
    for t in range(5):
        for model, opt in ((eager, o1), (compiled, o2)):
            opt.zero_grad()
            loss_of(model, t).backward()
            opt.step()
    for a, b in zip(eager.parameters(), compiled_src.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(params_of(small_model()), eager.parameters()))


# -- copies and saves -------------------------------------------------------------------------


def test_deepcopy_of_model_and_optimizer_together(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    train(model, opt, 2)
    model2, opt2 = copy.deepcopy((model, opt))
    assert opt2.param_groups[0]["params"][0] is next(model2.parameters())
    train(model, opt, 3, start=2)
    before = params_of(model2)
    train(model2, opt2, 3, start=2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    # independent: the copy's steps did not touch the original's state, and vice versa
    assert any(not torch.equal(a, b) for a, b in zip(before, model2.parameters()))
    assert all(opt.state[p]["step"] == 5 for p in model.parameters())


def test_saved_state_loads_with_weights_only(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    train(model, opt, 2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = LearnedOptimizer(model.parameters(), weights=rule)
    fresh.load_state_dict(loaded)
    assert_same_state(state_of(fresh), state_of(opt))
