# The C++ step kernel's variants against each other on this CPU, interleaved (each round runs every variant once,
# in alternating order) so that the host's drift falls on all alike: median milliseconds of one step (the update
# written to a buffer) of the default rule, N(0, 0.3) states, gradients N(0, 1e-3), per size.
#   python benchmarks/results/step_cost_avx512/ab.py [ROUNDS] [SIZES...]     (from the repository root)
# Variants: the kernel at 9cc703b (before this folder), that kernel with the last block's slack zeroed (the
# denormal fix alone), and the working tree's kernel in blocks of 8 and of 16 units with 1 to 4 coordinates per
# pass over the weights (LEARNED_OPTIM_COORDINATES_PER_PASS; the shipped build picks 4 for 16, 2 for 8 on AVX-512). GFLOP/s counts
# benchmarks.step_cost's FLOPs per coordinate.
import os, statistics, subprocess, sys, tempfile, time
import torch
from torch.utils.cpp_extension import load
from benchmarks.step_cost import rule_flops_per_coordinate
from learned_optim import kernels, load_weights
from learned_optim.optimizer import _fold_tensor_inputs
from learned_optim.nets import NetConfig

BEFORE = "9cc703b"
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 11
sizes = [int(float(s)) for s in sys.argv[2:]] or [100_000, 1_000_000, 10_000_000]
build = tempfile.mkdtemp(prefix="ab_avx512_")
old_source = subprocess.run(["git", "show", f"{BEFORE}:learned_optim/csrc/rule_step.cpp"], check=True,
                            capture_output=True, text=True).stdout
slack = "  for (int v = 0; v < NV; ++v) store(t + 8 * v, vtanh(acc[v]));\n"
assert slack in old_source
tree_source = open("learned_optim/csrc/rule_step.cpp").read()
variants = [  # label, source, block (None: the old signature, blocks of 8)
    (f"{BEFORE}", old_source, None),
    (f"{BEFORE} + zeroed slack", old_source.replace(slack, slack + "  store(t + 8 * NV, splat(0.0f));\n"), None),
    ("blocks of 8 (2 per pass)", tree_source, 8),
] + [(f"blocks of 16, {co} per pass", f"#define LEARNED_OPTIM_COORDINATES_PER_PASS {co}\n" + tree_source, 16)
     for co in (1, 2, 3, 4)]
modules = []
for i, (label, source, block) in enumerate(variants):
    path = os.path.join(build, f"variant{i}.cpp")
    with open(path, "w") as f:
        f.write(source)
    modules.append(load(name=f"ab_avx512_variant{i}", sources=[path], extra_cflags=kernels._FLAGS["rule_step"],
                        extra_ldflags=["-fopenmp"], build_directory=build))
assert kernels.cpp_available("rule_step") and kernels.rule_step_block() == 16, "needs a CPU with AVX-512"
rule = load_weights("default")
# the per-tensor input folded into layer 0's biases, as LearnedOptimizer does (its shift is 0 here)
theta, config, _ = _fold_tensor_inputs(rule.theta, rule.config)
flops = rule_flops_per_coordinate(NetConfig(num_layers=config.num_layers, hidden_size=config.hidden_size))
packs = {b: kernels.pack_lstm(theta, config, block=b) for b in (8, 16)}
readout_w, readout_b = kernels.pack_readout(theta, config)


def step(i, grad, state, out):
    block = variants[i][2]
    args = (grad, 1.0, state, packs[block or 8], config.preprocess, float(config.p), readout_w, readout_b,
            float(config.output_scale), out, False, 0.0)
    modules[i].lstm_rule_step(*args, *(() if block is None else (block,)))


mm = torch.randn(2048, 2048)
print(f"{torch.get_num_threads()} threads; {rounds} interleaved rounds per size after one warm-up step each "
      f"and 2 s of matmuls; rule {rule.name} ({config.num_layers}x{config.hidden_size} LSTM)", flush=True)
for n in sizes:
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(n, generator=gen) * 1e-3
    state = [torch.randn(n, config.hidden_size, generator=gen) * 0.3 for _ in config.state_names]
    out = torch.empty(n)
    diffs = []  # each variant's one step from the same state, against the first's (kept one at a time: memory)
    for i in range(len(variants)):
        s = [t.clone() for t in state]
        step(i, grad, s, out)
        if i == 0:
            ref_u, ref_s = out.clone(), s
        diffs.append(((out - ref_u).abs().max().item(), max((a - b).abs().max().item() for a, b in zip(s, ref_s))))
        del s
    started = time.time()
    while time.time() - started < 2:
        mm @ mm
    times = [[] for _ in variants]
    for r in range(rounds):
        for i in (range(len(variants)) if r % 2 == 0 else reversed(range(len(variants)))):
            t0 = time.perf_counter()
            step(i, grad, state, out)
            times[i].append(time.perf_counter() - t0)
    del ref_u, ref_s
    t0 = time.perf_counter()
    for _ in range(5):
        mm @ mm
    gflops = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
    print(f"\nN = {n:.0e}; float32 matmul 2048^3 after the rounds: {gflops:.0f} GFLOP/s")
    for i, (label, _, _) in enumerate(variants):
        du, ds = diffs[i]
        same = "same bits" if du == 0 and ds == 0 else f"max |du| {du:.1e}, |ds| {ds:.1e}"
        ratio = statistics.median(a / b for a, b in zip(times[i], times[0]))
        med = statistics.median(times[i])
        print(f"  {label:28s} {med * 1e3:9.2f} ms  (min {min(times[i]) * 1e3:8.2f})  x{ratio:.3f} of {BEFORE}'s "
              f"(paired median)  {flops * n / med / 1e9:6.1f} GFLOP/s  [{same} vs {BEFORE}]", flush=True)
