# which part of per-tensor normalization costs l2l-mnist on the base task: the per-step rescaling (temporal
# magnitude lost) or the equalization across tensors? Scale each tensor's grad before the rule (its own grad_norm off).
# Modes: raw; step (per-tensor RMS each step, as grad_norm='tensor'); init (the first step's RMS, kept); emaB (an
# EMA of the squared RMS, decay B, bias-corrected); powA (target / (RMS_tensor^A RMS_all^(1-A)): pow0 is one scale
# for the whole net). Made normmodes.out with, per cell in 1x20 5x20 (from the repository root, one thread each):
#   python .../normmodes.py 20 l2l-mnist CELL raw step init ema0.9 ema0.99 pow0 pow0.5 [pow0.75]
#   python .../normmodes.py 20 l2l-mlp-family CELL step pow0.75 pow0.5
import sys, torch
from learned_optim import LearnedOptimizer
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task
torch.set_num_threads(1)
TARGET = 1.5e-3

class Wrapped:
    def __init__(self, params, mode, weights):
        self.params = list(params); self.inner = LearnedOptimizer(self.params, weights=weights, grad_norm="none")
        self.mode = mode; self.ms = [None] * len(self.params); self.t = 0
    def zero_grad(self, set_to_none=True): self.inner.zero_grad(set_to_none=set_to_none)
    def step(self):
        self.t += 1
        if self.mode.startswith("pow"):  # the whole net's mean square, read only where a mode uses it
            g2 = torch.cat([p.grad.reshape(-1) for p in self.params]).pow(2).mean()
        for i, p in enumerate(self.params):
            r2 = p.grad.pow(2).mean()
            if self.mode.startswith("pow"):
                a = float(self.mode[3:]); p.grad.mul_(TARGET / (r2.sqrt() ** a * g2.sqrt() ** (1 - a))); continue
            if self.mode == "raw": continue
            if self.mode == "step": m = r2
            elif self.mode == "init": m = self.ms[i] = r2 if self.ms[i] is None else self.ms[i]
            else:
                b = float(self.mode[3:])
                self.ms[i] = (1 - b) * r2 if self.ms[i] is None else b * self.ms[i] + (1 - b) * r2
                m = self.ms[i] / (1 - b ** self.t)
            p.grad.mul_(TARGET / m.sqrt().clamp_min(1e-30))
        self.inner.step()

n = int(sys.argv[1]); weights = sys.argv[2]; cell = sys.argv[3]; modes = sys.argv[4:]
layers, units = cell.split("x"); act = "sigmoid"
if "-" in units: units, act = units.split("-")
task = make_task("mnist_mlp", data_root="../shared/data", hidden=(int(units),) * int(layers), activation=act)
for mode in modes:
    curves = torch.stack([train_and_evaluate(task.sample(s), lambda q: Wrapped(q, mode, weights), 200)[0] for s in EVAL_SEEDS[:n]])
    s = curves[:, :100].sum(1)
    print(weights, cell, mode, f"sum100 {s.mean():.2f} +- {s.std()/n**.5:.2f} final100 {curves[:,99].mean():.3f} final200 {curves[:,199].mean():.3f}", flush=True)
