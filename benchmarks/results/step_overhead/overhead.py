# What LearnedOptimizer.step() costs beyond the kernel's arithmetic: steps on 1 and on 33 tensors of 10 elements
# (too small for the network's work to count), median of 300 steps each after a warm-up, in microseconds; the
# difference over 32 is the cost of each further tensor. Run from the root of the checkout to measure, e.g.
#   python benchmarks/results/step_overhead/overhead.py
#   git worktree add /tmp/before 96cfe80 && (cd /tmp/before && python /path/to/this/overhead.py)
import statistics, subprocess, sys, time
import torch

sys.path.insert(0, ".")  # the package of the checkout this runs in
import learned_optim
from learned_optim import LearnedOptimizer


def median_step_us(tensors: int, repeats: int = 300) -> float:
    params = [torch.nn.Parameter(torch.zeros(10)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(10) * 1e-3
    opt = LearnedOptimizer(params)
    opt.step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
print(f"{learned_optim.__file__} at {commit}{'+dirty' if dirty else ''}; torch {torch.__version__}, {torch.get_num_threads()} threads")
one, many = median_step_us(1), median_step_us(33)
print(f"1 tensor: {one:.0f} us per step; 33 tensors: {many:.0f} us; each tensor past the first: {(many - one) / 32:.1f} us")
