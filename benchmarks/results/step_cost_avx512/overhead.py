# Where a LearnedOptimizer step's time goes outside the big kernel call, on benchmarks.step_cost's MLPs:
#   PYTHONPATH=. python benchmarks/results/step_cost_avx512/overhead.py [STEPS] [SIZES...]   (from the repository root)
# Each of the C++ module's functions is wrapped to record when it starts and ends; per step (median over STEPS):
# the whole step, the rule kernel on the largest tensor, on the other tensors, the two per-tensor RMS passes, and
# the time outside all kernel calls (Python, torch ops). The last is then measured again with the rule kernel
# replaced by nothing (the step then leaves parameters and state as they were), and with it replaced by a pass
# that adds 1 to a 40 MB buffer (the memory traffic of the kernel on 1e5 coordinates, without its arithmetic).
import statistics, sys, time
import torch
from benchmarks.step_cost import mlp_for
from learned_optim import LearnedOptimizer, kernels

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 41
sizes = [int(float(s)) for s in sys.argv[2:]] or [10_000, 100_000, 1_000_000]
assert kernels.cpp_available("rule_step")
module = kernels._modules["rule_step"]
buffer = torch.zeros(10_000_000)


class Timed:
    """The C++ module with each call recorded; mode 'noop' skips the rule kernel, 'traffic' streams memory instead."""

    def __init__(self, mode):
        self.mode, self.calls = mode, []

    def __getattr__(self, name):
        function = getattr(module, name)

        def timed(*args):
            t0 = time.perf_counter()
            result = None
            if name != "lstm_rule_step" or self.mode == "kernel":
                result = function(*args)
            elif self.mode == "traffic":
                buffer.add_(1.0)
            self.calls.append((name, args[0].numel(), t0, time.perf_counter()))
            return result
        return timed


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, rule block {kernels.rule_step_block()}; "
      f"median over {steps} steps after 5 warm-up steps; ms per step")
for n in sizes:
    torch.manual_seed(0)
    model = mlp_for(n)
    numel = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    opt = LearnedOptimizer(model.parameters())
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    for _ in range(5):
        opt.step()
    outside = {}
    for mode in ("kernel", "noop", "traffic"):
        timed = kernels._modules["rule_step"] = Timed(mode)
        rows = []
        for _ in range(steps):
            timed.calls.clear()
            t0 = time.perf_counter()
            opt.step()
            total = time.perf_counter() - t0
            inside = lambda keep: sum(e - s for name, k, s, e in timed.calls if keep(name, k))
            rows.append((total,
                         inside(lambda name, k: name == "lstm_rule_step" and k == largest),
                         inside(lambda name, k: name == "lstm_rule_step" and k != largest),
                         inside(lambda name, k: name != "lstm_rule_step"),
                         total - inside(lambda name, k: True)))
        kernels._modules["rule_step"] = module
        med = [statistics.median(col) * 1e3 for col in zip(*rows)]
        outside[mode] = med[4]
        if mode == "kernel":
            print(f"{numel:.3g} parameters ({len(list(model.parameters()))} tensors, largest {largest}): step {med[0]:.3f}; "
                  f"rule kernel on the largest {med[1]:.3f}, on the others {med[2]:.3f}; RMS passes {med[3]:.3f}; "
                  f"outside kernel calls {med[4]:.3f}")
    print(f"    outside kernel calls with the rule kernel replaced by nothing {outside['noop']:.3f}, "
          f"by a 40 MB pass {outside['traffic']:.3f}")
