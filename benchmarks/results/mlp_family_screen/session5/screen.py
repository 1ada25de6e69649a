"""CPU screen of a rule meta-trained with grad_norm_power a (applied by a wrapper: each tensor's gradient times
target / (RMS_tensor^a RMS_all^(1-a)) before a grad_norm='none' rule): deep_wide cells' final loss at 100/200 steps
over tuned Adam's (deep_wide.json), and the first 100 steps' sum of losses.

The candidates' cards carry grad_norm_power, which only a tree with grad_norm_power.patch applied reads: made
screen.out from the repository root of such a tree (PYTHONPATH=<it>), one thread per process, as
    python .../screen.py WEIGHTS POWER 1x20 20
    python .../screen.py WEIGHTS POWER 5x20,1x20-relu,3x120 10
Candidates: metatrain with the patch, e.g. `python -m learned_optim.metatrain --task mixture --family mlp-family
--grad-norm tensor --grad-norm-target 0.0015 --grad-norm-power 0.75 --steps 100 --runs-per-epoch 16 --val-problems 8
--epochs 44 --device cpu --data-root ../shared/data --out pow0.75.safetensors`, stopped and finished with --resume
--epochs K at epoch K."""
import json, sys, time
import torch
from learned_optim import LearnedOptimizer, load_weights
from learned_optim.baselines import train_and_evaluate
from learned_optim.tasks import EVAL_SEEDS, make_task
from benchmarks import deep_wide
torch.set_num_threads(1)

class Scaled:
    def __init__(self, params, weights, power, target):
        self.params = list(params); self.inner = LearnedOptimizer(self.params, weights=weights, grad_norm="none")
        self.power, self.target = power, target
    def zero_grad(self, set_to_none=True): self.inner.zero_grad(set_to_none=set_to_none)
    def step(self):
        ms = [p.grad.pow(2).mean() for p in self.params]
        n = [p.numel() for p in self.params]
        whole = (sum(m * k for m, k in zip(ms, n)) / sum(n)).sqrt()
        for p, m in zip(self.params, ms):
            p.grad.mul_(self.target / (m.sqrt() ** self.power * whole ** (1 - self.power)))
        self.inner.step()

path, power, cells, seeds = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
w = load_weights(path); target = w.config.grad_norm_target
ref = json.load(open("benchmarks/results/deep_wide.json"))["cells"]
for name in cells:
    (layers, units, act), = deep_wide.parse_cells(name)
    task = make_task("mnist_mlp", data_root="../shared/data", hidden=(units,) * layers, activation=act)
    t0 = time.time()
    curves = torch.stack([train_and_evaluate(task.sample(s), lambda q: Scaled(q, w, power, target), 200)[0] for s in EVAL_SEEDS[:seeds]])
    parts = []
    for h in (100, 200):
        block = ref[name]["results"][str(h)]
        tuned = block[deep_wide.tuned_adam_key(block)]["final_loss"]["mean"]
        parts.append(f"{h}: {curves[:, h-1].mean():.3f} vs {tuned:.3f} ({curves[:, h-1].mean()/tuned:.2f})")
    s = curves[:, :100].sum(1)
    print(f"{path.split('/')[-1]} a={power} {name}: " + "  ".join(parts) + f"  sum100 {s.mean():.2f} +- {s.std()/seeds**.5:.2f}  {time.time()-t0:.0f}s", flush=True)
