# The step's work outside the rule kernel, before (BEFORE) and after this folder's change, interleaved:
#   PYTHONPATH=. python benchmarks/results/step_cost_avx512/ab_overhead.py [ROUNDS]     (from the repository root)
# (1) the two per-tensor RMS reductions (kernels' finite_amax_count, finite_scaled_square_sum) as built from
#     BEFORE's source and from the working tree's, on N(0, 1e-3) gradients: median ms of the pair of calls, and
#     whether the results agree; (2) whole LearnedOptimizer steps on benchmarks.step_cost's MLPs, BEFORE's
#     LearnedOptimizer._kernel_update (one tensor prepared, then stepped, in turn) and BEFORE's reductions against
#     the working tree's (every whole-tensor call prepared first, then run back to back), on two copies of one model
#     with one gradient: median ms per step, and whether the parameters stay equal.
import os, statistics, subprocess, sys, tempfile, textwrap, time
import torch
from torch.utils.cpp_extension import load
from benchmarks.step_cost import mlp_for
import learned_optim.optimizer as optimizer_module
from learned_optim import LearnedOptimizer, kernels

BEFORE = "95f0dca"
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 31
show = lambda path: subprocess.run(["git", "show", f"{BEFORE}:{path}"], check=True, capture_output=True, text=True).stdout
build = tempfile.mkdtemp(prefix="ab_overhead_")
with open(os.path.join(build, "before.cpp"), "w") as f:
    f.write(show("learned_optim/csrc/rule_step.cpp"))
assert kernels.cpp_available("rule_step")
new_module = kernels._modules["rule_step"]
old_module = load(name="ab_overhead_before", sources=[os.path.join(build, "before.cpp")],
                  extra_cflags=kernels._FLAGS["rule_step"], extra_ldflags=["-fopenmp"], build_directory=build)
source = show("learned_optim/optimizer.py")
namespace = dict(vars(optimizer_module))
exec(textwrap.dedent(source[source.index("    def _kernel_update("):source.index("    def _run_chunk(")]), namespace)


class Before(LearnedOptimizer):
    """The working tree's optimizer with BEFORE's _kernel_update, and BEFORE's reductions (see step_with)."""
    _kernel_update = namespace["_kernel_update"]


def step_with(module, opt):
    kernels._modules["rule_step"] = module
    try:
        opt.step()
    finally:
        kernels._modules["rule_step"] = new_module


def interleaved(functions):
    times = [[] for _ in functions]
    for r in range(rounds):
        for i in (range(len(functions)) if r % 2 == 0 else reversed(range(len(functions)))):
            t0 = time.perf_counter()
            functions[i]()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {rounds} interleaved rounds; before = {BEFORE}")
print("(1) RMS reductions, ms per tensor (amax and count, then the scaled sum of squares)")
for n in (100_000, 1_000_000, 10_000_000):
    grad = torch.randn(n, generator=torch.Generator().manual_seed(0)) * 1e-3
    grad[::997] = float("nan")
    results = []

    def rms(module):
        amax, count = module.finite_amax_count(grad)
        results.append((amax, count, module.finite_scaled_square_sum(grad, amax)))
    old_ms, new_ms = interleaved([lambda: rms(old_module), lambda: rms(new_module)])
    (a0, c0, s0), (a1, c1, s1) = results[0], results[1]
    print(f"  N = {n:.0e}: before {old_ms:.3f}, after {new_ms:.3f} (x{new_ms / old_ms:.3f}); amax and count "
          f"{'equal' if (a0, c0) == (a1, c1) else 'DIFFER'}, sums of squares differ by {abs(s1 - s0) / s0:.1e} relative")
print("(2) whole steps, ms")
for n in (10_000, 100_000, 1_000_000):
    torch.manual_seed(0)
    models = [mlp_for(n), mlp_for(n)]
    models[1].load_state_dict(models[0].state_dict())
    for model in models:
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 1e-3
    before, after = Before(models[0].parameters()), LearnedOptimizer(models[1].parameters())
    for _ in range(3):
        step_with(old_module, before)
        after.step()
    old_ms, new_ms = interleaved([lambda: step_with(old_module, before), after.step])
    gap = max((p - q).abs().max().item() for p, q in zip(models[0].parameters(), models[1].parameters()))
    print(f"  {sum(p.numel() for p in models[0].parameters()):.3g} parameters: before {old_ms:.3f}, after "
          f"{new_ms:.3f} (x{new_ms / old_ms:.3f}); parameters after {3 + rounds} steps differ by at most {gap:.1e}")
