import copy
import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import batch, loss_of, small_model
from learned_optim import LearnedOptimizer, list_pretrained
from learned_optim.pretrained import random_weights
from learned_optim.backends import state_dtype_of


def train(model, opt, steps, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def state_of(opt):
    return {
        i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
        for i, p in enumerate(p for g in opt.param_groups for p in g["params"])
        if p in opt.state
    }


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys()
        for k in a[i]:
            if torch.is_tensor(a[i][k]):
                assert torch.equal(a[i][k], b[i][k]), (i, k)
            else:
                assert a[i][k] == b[i][k]


# -- reference and fast path ---------------------------------------------------------


@pytest.mark.parametrize("implementation", ["fast", "torch"])
def test_reference_and_fast_agree_over_100_steps(rule, implementation):
    ref_model, fast_model = small_model(), small_model()
    ref = LearnedOptimizer(ref_model.parameters(), weights=rule, implementation="reference")
    fast = LearnedOptimizer(fast_model.parameters(), weights=rule, implementation=implementation, chunk_size=37)
    for t in range(100):
        for model, opt in ((ref_model, ref), (fast_model, fast)):
            opt.zero_grad()
            loss_of(model, t).backward()
            opt.step()
    for a, b in zip(ref_model.parameters(), fast_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for p_ref, p_fast in zip(ref_model.parameters(), fast_model.parameters()):
        for name in ref.config.state_names:
            torch.testing.assert_close(fast.state[p_fast][name], ref.state[p_ref][name], rtol=1e-4, atol=1e-4)
    assert max(float((a - b).abs().max()) for a, b in zip(params_of(small_model()), params_of(ref_model))) > 1e-2


@given(chunk=st.integers(1, 200), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_chunk_size_does_not_change_results(rule, chunk, dtype):
    """float64 parameters go through the kernel in slices (a float32 copy of each); float32 ones whole."""
    base_model, model = small_model(dtype=dtype), small_model(dtype=dtype)
    base = LearnedOptimizer(base_model.parameters(), weights=rule, chunk_size=10**6)
    opt = LearnedOptimizer(model.parameters(), weights=rule, chunk_size=chunk)
    train(base_model, base, 3)
    train(model, opt, 3)
    for a, b in zip(base_model.parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_default_chunk_depends_on_the_device_and_an_explicit_one_wins(rule):
    from learned_optim.backends import ACCELERATOR_CHUNK, CPU_CHUNK

    p = torch.nn.Parameter(torch.ones(3))
    default = LearnedOptimizer([p], weights=rule)
    assert default.chunk_for(torch.device("cpu")) == CPU_CHUNK
    assert default.chunk_for(torch.device("cuda", 0)) == ACCELERATOR_CHUNK > CPU_CHUNK
    fixed = LearnedOptimizer([p], weights=rule, chunk_size=77)
    assert fixed.chunk_for(torch.device("cpu")) == fixed.chunk_for(torch.device("cuda")) == 77


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_parameter_order_does_not_change_results(rule, implementation):
    m1, m2 = small_model(), small_model()
    o1 = LearnedOptimizer(list(m1.parameters()), weights=rule, implementation=implementation, chunk_size=50)
    o2 = LearnedOptimizer(list(m2.parameters())[::-1], weights=rule, implementation=implementation, chunk_size=50)
    train(m1, o1, 5)
    train(m2, o2, 5)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


# -- state dicts ----------------------------------------------------------------------


@given(
    shapes=st.lists(st.lists(st.integers(1, 6), min_size=0, max_size=3), min_size=1, max_size=4),
    before=st.integers(0, 6),
    after=st.integers(1, 5),
    implementation=st.sampled_from(["fast", "torch", "reference"]),
)
def test_state_dict_round_trip_continues_bitwise(rule, shapes, before, after, implementation):
    gen = torch.Generator().manual_seed(len(shapes) * 100 + before)
    init = [torch.randn(s, generator=gen) for s in shapes]
    targets = [torch.randn(s, generator=gen) for s in shapes]

    def run(params, opt, steps, start):
        for t in range(start, start + steps):
            opt.zero_grad()
            sum(((p - q * (1 + t % 3)) ** 2).sum() for p, q in zip(params, targets)).backward()
            opt.step()

    straight = [torch.nn.Parameter(x.clone()) for x in init]
    opt = LearnedOptimizer(straight, weights=rule, implementation=implementation, chunk_size=7)
    run(straight, opt, before + after, 0)

    first = [torch.nn.Parameter(x.clone()) for x in init]
    opt1 = LearnedOptimizer(first, weights=rule, implementation=implementation, chunk_size=7)
    run(first, opt1, before, 0)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(x.clone()) for x in saved["params"]]
    opt2 = LearnedOptimizer(resumed, weights=rule, implementation=implementation, chunk_size=7)
    opt2.load_state_dict(saved["opt"])
    run(resumed, opt2, after, before)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_state_dict_records_the_weights(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    train(model, opt, 1)
    sd = opt.state_dict()
    assert sd["learned_optim"]["weights_sha256"] == rule.sha256
    assert sd["learned_optim"]["state_names"] == ["h0", "c0", "h1", "c1"]
    first = next(iter(sd["state"].values()))
    assert first["step"] == 1 and first["h0"].dtype == torch.float32


def test_state_from_other_weights_is_refused_and_nothing_changes(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    train(model, opt, 2)
    before = state_of(opt)
    other_model = small_model()
    other = LearnedOptimizer(other_model.parameters(), weights=random_weights(seed=5))
    train(other_model, other, 3)
    with pytest.raises(ValueError, match="produced by weights 'random-5'"):
        opt.load_state_dict(other.state_dict())
    assert_same_state(state_of(opt), before)


def test_state_of_other_shapes_is_refused_and_nothing_changes(rule):
    a = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    b = [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(5))]
    opt_a = LearnedOptimizer(a, weights=rule)
    opt_b = LearnedOptimizer(b, weights=rule)
    for params, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        sum((p**2).sum() for p in params).backward()
        opt.step()
    before = state_of(opt_a)
    with pytest.raises(ValueError, match=r"has shape \(16, 20\), expected \(12, 20\)"):
        opt_a.load_state_dict(opt_b.state_dict())
    assert_same_state(state_of(opt_a), before)
    three = LearnedOptimizer(a + [torch.nn.Parameter(torch.randn(2))], weights=rule)
    with pytest.raises(ValueError, match="has 3 parameters, the state dict's has 2"):
        three.load_state_dict(opt_a.state_dict())
    with pytest.raises(ValueError, match="not saved by a LearnedOptimizer"):
        opt_a.load_state_dict(torch.optim.Adam(a).state_dict())


def test_state_stays_float32_for_half_parameters_after_reload(rule):
    model = small_model(dtype=torch.bfloat16)
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    train(model, opt, 2)
    sd = copy.deepcopy(opt.state_dict())
    fresh = LearnedOptimizer(model.parameters(), weights=rule)
    fresh.load_state_dict(sd)
    p = next(model.parameters())
    assert fresh.state[p]["h0"].dtype == torch.float32
    assert torch.equal(fresh.state[p]["c1"], opt.state[p]["c1"])


def test_deepcopy_steps_like_the_original(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    train(model, opt, 2)
    model2 = copy.deepcopy(model)
    opt2 = LearnedOptimizer(model2.parameters(), weights=rule)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    train(model, opt, 2, start=2)
    train(model2, opt2, 2, start=2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


# -- learning rate, groups, closures --------------------------------------------------


def one_update(rule, lr, maximize=False):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule, lr=lr, maximize=maximize)
    before = params_of(model)
    opt.zero_grad()
    loss_of(model, 0).backward()
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before)], opt


def test_lr_scales_the_update_linearly(rule):
    unit, _ = one_update(rule, 1.0)
    half, _ = one_update(rule, 0.5)
    zero, opt = one_update(rule, 0.0)
    assert any(d.abs().max() > 1e-4 for d in unit)
    for u, h, z in zip(unit, half, zero):
        torch.testing.assert_close(h, 0.5 * u, rtol=1e-3, atol=1e-6)
        assert torch.equal(z, torch.zeros_like(z))
    # lr = 0 still advances the hidden state
    assert all(s["step"] == 1 and s["h0"].abs().sum() > 0 for s in opt.state.values())


def test_maximize_equals_minimizing_the_negated_loss(rule):
    m1, m2 = small_model(), small_model()
    o1 = LearnedOptimizer(m1.parameters(), weights=rule, maximize=True)
    o2 = LearnedOptimizer(m2.parameters(), weights=rule)
    for t in range(3):
        o1.zero_grad(), o2.zero_grad()
        (-loss_of(m1, t)).backward()
        loss_of(m2, t).backward()
        o1.step(), o2.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_lr_schedulers_drive_lr(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    lrs = []
    for t in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        LearnedOptimizer(small_model().parameters(), weights=rule), T_max=10
    )
    assert cosine.get_last_lr()[0] == pytest.approx(1.0)


def test_param_groups_and_add_param_group(rule):
    model = small_model()
    opt = LearnedOptimizer(
        [{"params": model.fc1.parameters(), "lr": 0.0}, {"params": model.fc2.parameters()}], weights=rule
    )
    opt.add_param_group({"params": [model.scale], "lr": 0.5})
    fc1_before, fc2_before = params_of(model.fc1), params_of(model.fc2)
    opt.zero_grad()
    loss_of(model, 0).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(fc1_before, model.fc1.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(fc2_before, model.fc2.parameters()))
    assert model.scale in opt.state and model.conv.weight not in opt.state
    assert len(opt.param_groups) == 3


def test_closure_is_evaluated_with_grad_and_returned(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = loss_of(model, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [True] and torch.is_tensor(loss) and loss.item() > 0


def test_parameters_without_grad_are_skipped(rule):
    used, unused = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))
    opt = LearnedOptimizer([used, unused], weights=rule)
    before = unused.detach().clone()
    (used**2).sum().backward()
    opt.step()
    assert unused not in opt.state and torch.equal(unused, before)
    assert opt.state[used]["step"] == 1


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_zero_size_and_scalar_parameters(rule, implementation):
    empty, scalar = torch.nn.Parameter(torch.empty(0, 3)), torch.nn.Parameter(torch.tensor(2.0))
    opt = LearnedOptimizer([empty, scalar], weights=rule, implementation=implementation)
    ((scalar - 1) ** 2 + empty.sum()).backward()
    opt.step()
    assert opt.state[empty]["h0"].shape == (0, 20)
    assert opt.state[scalar]["h0"].shape == (1, 20) and scalar.item() != 2.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_parameters(rule, dtype):
    m32, mlow = small_model(), small_model(dtype=dtype)
    o32 = LearnedOptimizer(m32.parameters(), weights=rule)
    olow = LearnedOptimizer(mlow.parameters(), weights=rule)
    train(m32, o32, 3)
    train(mlow, olow, 3)
    for p in mlow.parameters():
        assert p.dtype == dtype and olow.state[p]["h0"].dtype == torch.float32
    tol = {torch.float16: 5e-2, torch.bfloat16: 2e-1, torch.float64: 1e-4}[dtype]
    for a, b in zip(m32.parameters(), mlow.parameters()):
        torch.testing.assert_close(b.float(), a, rtol=tol, atol=tol)


def test_non_contiguous_parameter(rule):
    base = torch.randn(6, 4)
    contiguous = torch.nn.Parameter(base.t().contiguous())
    strided = torch.nn.Parameter(base.clone()).t()  # a view: non-contiguous leaf-like tensor
    strided = torch.nn.Parameter(strided.detach())
    assert not strided.is_contiguous()
    o1 = LearnedOptimizer([contiguous], weights=rule)
    o2 = LearnedOptimizer([strided], weights=rule)
    for p, o in ((contiguous, o1), (strided, o2)):
        (p**2).sum().backward()
        o.step()
    torch.testing.assert_close(strided, contiguous, rtol=1e-6, atol=1e-7)


# -- bad input ---------------------------------------------------------------------------


def test_sparse_gradients_are_refused(rule):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = LearnedOptimizer(emb.parameters(), weights=rule)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_complex_and_integer_parameters_are_refused(rule):
    with pytest.raises(ValueError, match="does not support complex parameters"):
        LearnedOptimizer([torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))], weights=rule)
    with pytest.raises(ValueError, match="floating-point"):
        LearnedOptimizer([torch.zeros(3, dtype=torch.int64)], weights=rule)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"lr": float("nan")}, "Invalid learning rate: nan"),
        ({"lr": "fast"}, "Invalid learning rate: 'fast'"),
        ({"chunk_size": 0}, "Invalid chunk_size: 0"),
        ({"chunk_size": 2.5}, "Invalid chunk_size: 2.5"),
        ({"implementation": "foreach"}, "Invalid implementation: 'foreach'"),
        ({"nonfinite": "zero"}, "Invalid nonfinite: 'zero'"),
        ({"state_dtype": torch.int32}, "Invalid state_dtype: torch.int32"),
        ({"maximize": 1}, "Invalid maximize: 1"),
        ({"weight_decay": -1e-4}, "Invalid weight_decay: -0.0001"),
        ({"weight_decay": float("inf")}, "Invalid weight_decay: inf"),
        ({"implementation": "compile"}, "Invalid implementation: 'compile'"),
    ],
)
def test_invalid_arguments(rule, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LearnedOptimizer([torch.nn.Parameter(torch.randn(2))], weights=rule, **kwargs)


def test_unknown_weights_name_lists_the_available_ones():
    with pytest.raises(ValueError) as info:
        LearnedOptimizer([torch.nn.Parameter(torch.randn(2))], weights="l2l-cifar")
    for name in list_pretrained():
        assert name in str(info.value)


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
@pytest.mark.parametrize("at_step", [0, 3])
def test_nonfinite_coordinates_are_frozen(rule, implementation, at_step):
    """A NaN/inf coordinate keeps its value and state; every other coordinate steps as usual."""
    torch.manual_seed(0)
    init = torch.randn(5, 4)
    bad = [(0, 1, float("nan")), (2, 3, float("inf")), (4, 0, -float("inf"))]

    def run(poison):
        p = torch.nn.Parameter(init.clone())
        whole = torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(1)))
        opt = LearnedOptimizer([p, whole], weights=rule, implementation=implementation, chunk_size=8)
        snapshots = None
        for t in range(at_step + 2):
            opt.zero_grad()
            ((p - t) ** 2).sum().backward()
            (whole**2).sum().backward()
            if t == at_step and poison:
                for i, j, v in bad:
                    p.grad[i, j] = v
                whole.grad.fill_(float("nan"))  # the whole tensor
            if t == at_step:
                snapshots = (p.detach().clone(), {k: opt.state[p][k].clone() for k in ("h0", "c1")} if p in opt.state else None,
                             whole.detach().clone(), {k: opt.state[whole][k].clone() for k in ("h0",)} if whole in opt.state else None)
            opt.step()
            if t == at_step:
                after = (p.detach().clone(), {k: opt.state[p][k].clone() for k in ("h0", "c1")},
                         whole.detach().clone(), {k: opt.state[whole][k].clone() for k in ("h0",)})
        return snapshots, after, p, opt

    (p0, s0, w0, ws0), (p1, s1, w1, ws1), p_bad, opt_bad = run(poison=True)
    _, (c1, cs1, _, _), _, _ = run(poison=False)
    mask = torch.zeros(5, 4, dtype=torch.bool)
    for i, j, _ in bad:
        mask[i, j] = True
    # poisoned coordinates: value and hidden state unchanged by the poisoned step
    assert torch.equal(p1[mask], p0[mask])
    rows = mask.reshape(-1)
    for k in ("h0", "c1"):
        before = s0[k][rows] if s0 is not None else torch.zeros(rows.sum(), 20)
        assert torch.equal(s1[k][rows], before)
        # the other coordinates stepped exactly as in a clean run
        torch.testing.assert_close(s1[k][~rows], cs1[k][~rows], rtol=0, atol=0)
    torch.testing.assert_close(p1[~mask], c1[~mask], rtol=0, atol=0)
    # a whole non-finite tensor: untouched
    assert torch.equal(w1, w0)
    assert torch.isfinite(p_bad).all()
    assert all(torch.isfinite(v).all() for st in opt_bad.state.values() for v in st.values() if torch.is_tensor(v))


def test_nonfinite_raise_changes_nothing(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule, nonfinite="raise")
    train(model, opt, 1)
    before_params, before_state = params_of(model), state_of(opt)
    opt.zero_grad()
    loss_of(model, 1).backward()
    model.fc2.bias.grad[0] = float("nan")
    with pytest.raises(FloatingPointError, match="nothing was updated"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before_params, model.parameters()))
    assert_same_state(state_of(opt), before_state)


def test_parameter_that_changes_size_is_a_clear_error(rule):
    p = torch.nn.Parameter(torch.randn(4))
    opt = LearnedOptimizer([p], weights=rule)
    (p**2).sum().backward()
    opt.step()
    p.data = torch.randn(6)
    p.grad = torch.randn(6)
    with pytest.raises(RuntimeError, match="cannot change after its state exists"):
        opt.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_matches_cpu_reference(rule):
    cpu_model, gpu_model = small_model(), small_model().cuda()
    cpu = LearnedOptimizer(cpu_model.parameters(), weights=rule, implementation="reference")
    gpu = LearnedOptimizer(gpu_model.parameters(), weights=rule)
    for t in range(20):
        for model, opt in ((cpu_model, cpu), (gpu_model, gpu)):
            opt.zero_grad()
            x, y = (v.to(next(model.parameters()).device) for v in __import__("conftest").batch(t))
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
    for a, b in zip(cpu_model.parameters(), gpu_model.parameters()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


# -- half-precision state --------------------------------------------------------------

HALF_STATES = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
@pytest.mark.parametrize("dtype", HALF_STATES)
def test_half_state_is_the_float32_state_rounded(rule, implementation, dtype):
    """One step from the same state: a half-precision state is the float32 computation's state, rounded to nearest."""
    m32, mhalf = small_model(), small_model()
    o32 = LearnedOptimizer(m32.parameters(), weights=rule, implementation=implementation)
    ohalf = LearnedOptimizer(mhalf.parameters(), weights=rule, implementation=implementation, state_dtype=dtype)
    train(m32, o32, 1)
    train(mhalf, ohalf, 1)
    for a, b in zip(m32.parameters(), mhalf.parameters()):
        assert torch.equal(a, b)  # the first update does not depend on the (zero) stored state
        for name in o32.config.state_names:
            assert ohalf.state[b][name].dtype == dtype
            assert torch.equal(ohalf.state[b][name], o32.state[a][name].to(dtype))


@pytest.mark.parametrize("dtype", HALF_STATES)
def test_half_state_halves_the_memory_and_trains_like_float32(dtype):
    models = [small_model(), small_model(), small_model()]
    opts = [LearnedOptimizer(models[0].parameters(), weights="default"),
            LearnedOptimizer(models[1].parameters(), weights="default", state_dtype=dtype),
            LearnedOptimizer(models[2].parameters(), weights="default", state_dtype=dtype, implementation="torch")]
    for model, opt in zip(models, opts):
        train(model, opt, 60)

    def state_bytes(opt):
        return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))

    def held_out(model):
        with torch.no_grad():
            return sum(float(loss_of(model, 1000 + i)) for i in range(10)) / 10

    if dtype == torch.bfloat16:
        assert state_bytes(opts[1]) * 2 == state_bytes(opts[0])
    else:  # float16: a moments rule's moving averages stay float32 (backends.state_dtype_of)
        config, numel = opts[1].config, sum(p.numel() for p in models[1].parameters())
        sizes = {n: 4 if state_dtype_of(n, dtype) == torch.float32 else 2 for n in config.state_names}
        assert state_bytes(opts[1]) == numel * sum(config.state_width(n) * sizes[n] for n in config.state_names)
        assert state_bytes(opts[1]) < 0.65 * state_bytes(opts[0])
    start, full, half = held_out(small_model()), held_out(models[0]), held_out(models[1])
    assert full < 0.85 * start  # the shipped rule trains this model ...
    assert abs(half - full) < 0.03 * full  # ... and the rounded state costs little here
    # the torch path rounds (almost) the same float32 values; one flipped rounding changes the
    # trajectory, so compare where it ends, not the parameters
    assert abs(held_out(models[2]) - full) < 0.03 * full


@pytest.mark.parametrize("dtype", HALF_STATES)
def test_half_state_dict_round_trip_continues_bitwise(rule, dtype):
    straight, first = small_model(), small_model()
    o = LearnedOptimizer(straight.parameters(), weights=rule, state_dtype=dtype)
    train(straight, o, 6)
    o1 = LearnedOptimizer(first.parameters(), weights=rule, state_dtype=dtype)
    train(first, o1, 3)
    buffer = io.BytesIO()
    torch.save(o1.state_dict(), buffer)
    resumed = copy.deepcopy(first)
    o2 = LearnedOptimizer(resumed.parameters(), weights=rule, state_dtype=dtype)
    o2.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert all(v.dtype == dtype for s in o2.state.values() for k, v in s.items() if torch.is_tensor(v))
    train(resumed, o2, 3, start=3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


# -- lr and weight decay: what an Adam / AdamW habit meets -------------------------------------------------------


@pytest.mark.parametrize("lr", [1e-3, 3e-4, 0.01])
def test_an_adam_like_lr_is_warned_about_once(rule, lr):
    params = [torch.nn.Parameter(torch.randn(2))]
    with pytest.warns(UserWarning, match=r"multiplies the learned rule's own step") as caught:
        opt = LearnedOptimizer(params, weights=rule, lr=lr)
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(2))], "lr": lr})
    assert len([w for w in caught if "learned rule's own step" in str(w.message)]) == 1
    assert caught[0].filename == __file__  # it points at the user's line


@pytest.mark.parametrize("lr", [1.0, 0.5, 0.1, 0.0])
def test_a_learned_rule_lr_is_not_warned_about(rule, lr):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        param = torch.nn.Parameter(torch.randn(2))
        opt = LearnedOptimizer([param], weights=rule, lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        for _ in range(10):  # a schedule that takes lr toward 0 is no Adam habit
            param.grad = torch.ones(2)
            opt.step()
            scheduler.step()


def test_weight_decay_is_decoupled_as_in_adamw(rule):
    """p <- p (1 - lr wd), then the rule's step: the same as the rule's step from the decayed parameters, with the
    gradient taken before the decay."""
    lr, wd = 0.5, 1e-4
    model_a, model_b = small_model(), small_model()
    opt_a = LearnedOptimizer(model_a.parameters(), weights=rule, lr=lr, weight_decay=wd)
    opt_b = LearnedOptimizer(model_b.parameters(), weights=rule, lr=lr)
    for step in range(3):
        for model in (model_a, model_b):
            model.zero_grad()
            ((model(batch(step)[0]) - batch(step)[1]) ** 2).mean().backward()
        opt_a.step()
        with torch.no_grad():
            for p in model_b.parameters():
                p.mul_(1 - lr * wd)
        opt_b.step()
        for a, b in zip(model_a.parameters(), model_b.parameters()):
            assert torch.equal(a, b)
    assert opt_a.state_dict()["param_groups"][0]["weight_decay"] == wd


def test_weight_decay_per_group_and_scheduled_with_lr(rule):
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = LearnedOptimizer([{"params": [p]}, {"params": [q], "weight_decay": 0.0}], weights=rule, weight_decay=1e-3,
                           lr=0.5)
    zero = LearnedOptimizer([torch.nn.Parameter(torch.ones(3))], weights=rule, lr=0.5)
    for param in (p, q, *zero.param_groups[0]["params"]):
        param.grad = torch.zeros(3)
    opt.step()
    zero.step()
    reference = zero.param_groups[0]["params"][0]
    torch.testing.assert_close(q, reference, rtol=0, atol=0)  # no decay in its group
    # decayed from 1 first, then the same step (zero gradients, the same fresh state)
    torch.testing.assert_close(p, reference - 0.5 * 1e-3, rtol=0, atol=1e-7)


def test_an_adamw_like_weight_decay_is_warned_about(rule):
    with pytest.warns(UserWarning, match=r"weight_decay=0.01 multiplies every parameter"):
        LearnedOptimizer([torch.nn.Parameter(torch.ones(2))], weights=rule, weight_decay=0.01)


@pytest.mark.parametrize("implementation", ["fast", "torch", "reference"])
def test_weight_decay_leaves_a_skipped_coordinate_alone(rule, implementation):
    p = torch.nn.Parameter(torch.ones(4))
    opt = LearnedOptimizer([p], weights=rule, weight_decay=1e-3, implementation=implementation)
    p.grad = torch.tensor([0.1, float("nan"), -0.2, float("inf")])
    opt.step()
    assert p[1] == 1.0 and p[3] == 1.0 and p[0] != 1.0 and p[2] != 1.0


def test_a_state_dict_from_before_weight_decay_loads_with_the_default(rule):
    model = small_model()
    opt = LearnedOptimizer(model.parameters(), weights=rule, weight_decay=1e-5)
    train(model, opt, 2)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        del group["weight_decay"]
    again = LearnedOptimizer(model.parameters(), weights=rule, weight_decay=1e-5)
    again.load_state_dict(saved)
    assert again.param_groups[0]["weight_decay"] == 1e-5


def test_the_compiled_implementation_takes_the_torch_paths_steps(rule):
    """implementation="compiled": the batched network through torch.compile, the same steps to float32 rounding."""
    model_a, model_b = small_model(), small_model()
    train(model_a, LearnedOptimizer(model_a.parameters(), weights=rule, implementation="torch"), 4)
    train(model_b, LearnedOptimizer(model_b.parameters(), weights=rule, implementation="compiled"), 4)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_the_constructor_takes_what_a_user_needs_and_no_rule_settings():
    import inspect

    names = list(inspect.signature(LearnedOptimizer).parameters)
    assert names == ["params", "weights", "lr", "weight_decay", "maximize", "state_dtype", "nonfinite",
                     "implementation", "chunk_size"]
