# The C++ step kernel at a commit against the working tree's, interleaved (A B A B ...) so that the host's drift
# falls on both alike: median milliseconds of one fused step (lstm_rule_step writing the parameter) per size.
#   python benchmarks/results/step_cost_tanh/ab.py COMMIT [REPEATS]     (from the repository root)
import os, subprocess, sys, tempfile, time
import torch
from torch.utils.cpp_extension import load
from learned_optim import kernels, load_weights

commit, repeats = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 9
build = tempfile.mkdtemp(prefix="ab_kernel_")
source = os.path.join(build, "rule_step_at_commit.cpp")
with open(source, "w") as f:
    f.write(subprocess.run(["git", "show", f"{commit}:learned_optim/csrc/rule_step.cpp"], check=True,
                           capture_output=True, text=True).stdout)
before = load(name="rule_step_at_commit", sources=[source], extra_cflags=kernels._FLAGS["rule_step"],
              extra_ldflags=["-fopenmp"], build_directory=build)
assert kernels.cpp_available("rule_step")
now = kernels._modules["rule_step"]
rule = load_weights("default")
config, packed = rule.config, kernels.pack_lstm(rule.theta, rule.config)
print(f"kernel at {commit} (A) against the working tree's (B); torch {torch.get_num_threads()} threads; "
      f"{repeats} interleaved pairs per size, after one warm-up each", flush=True)
for n in (100_000, 1_000_000, 10_000_000):
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(n, generator=gen) * 1e-3
    param = torch.zeros(n)
    state = [torch.randn(n, config.hidden_size, generator=gen) * 0.3 for _ in config.state_names]
    # one step from the same state: how far the two kernels' results are apart
    outs = []
    for module in (before, now):
        kernels._modules["rule_step"] = module
        s = [t.clone() for t in state]
        outs.append((kernels.lstm_rule_step(grad, s, packed, rule.theta, config), s))
    du = (outs[0][0] - outs[1][0]).abs().max().item()
    ds = max((a - b).abs().max().item() for a, b in zip(outs[0][1], outs[1][1]))
    times = {"A": [], "B": []}
    for rep in range(repeats + 1):
        for label, module in (("A", before), ("B", now)):
            kernels._modules["rule_step"] = module
            started = time.perf_counter()
            kernels.lstm_rule_step(grad, state, packed, rule.theta, config, param=param, lr=1.0)
            if rep:
                times[label].append(time.perf_counter() - started)
    ratios = sorted(b / a for a, b in zip(times["A"], times["B"]))
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    print(f"{n:.0e}: A {med['A']:.2f} ms, B {med['B']:.2f} ms; B/A per pair median {ratios[len(ratios) // 2]:.3f} "
          f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}); max |update difference| {du:.2e}, max |state difference| {ds:.2e}",
          flush=True)
kernels._modules["rule_step"] = now
