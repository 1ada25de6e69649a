# Issue 5, session 4 (CPU): does a per-tensor log-RMS input feature let the default rule close the MNIST base-task gap?
# Warm-starts from l2l-mlp-family; "feature": a third input column ln(RMS of the tensor's raw gradient / grad_norm_target), its
# weights starting at zero (so the start is exactly the default); "control": the same fine-tuning without it.
#   python feature_screen.py train {feature|control} OUT EPOCHS      (meta-train on mlp-family-plus, CPU)
#   python feature_screen.py eval {feature|control|default} WEIGHTS N   (base task, first N eval seeds, 100 steps)
import sys, torch
from learned_optim import metatrain as mt, nets, load_weights
from learned_optim.features import normalize_per_tensor, preprocess
from learned_optim.metatrain import MetaTrainConfig
from learned_optim.pretrained import load_safetensors_bytes
from learned_optim.tasks import EVAL_SEEDS, make_task

torch.set_num_threads(1)
mode, variant = sys.argv[1], sys.argv[2]
base = load_weights("l2l-mlp-family")
net = base.config


def feature_step(theta, grad, state, net, impl="fast", sizes=None):
    rms = torch.stack([piece.square().mean().sqrt() for piece in grad.split(sizes)])
    column = (rms.clamp_min(1e-30) / net.grad_norm_target).log().repeat_interleave(torch.tensor(sizes))
    x = preprocess(normalize_per_tensor(grad, sizes, net.grad_norm_target), net.preprocess, net.p)
    return nets.step(theta, torch.cat([x, column.unsqueeze(1)], dim=1), state, net, impl=impl)


def start_theta(config, device="cpu"):
    theta = {k: v.clone().to(device) for k, v in base.theta.items()}
    if variant == "feature":
        w = theta["cells.0.w_ih"]
        theta["cells.0.w_ih"] = torch.cat([w, torch.zeros(w.shape[0], 1, device=device)], dim=1)
    return theta


if variant == "feature":
    mt._rule_step = feature_step
mt.initial_theta = start_theta

if mode == "train":
    out, epochs = sys.argv[3], int(sys.argv[4])
    config = MetaTrainConfig(task="mixture", task_options={"family": "mlp-family-plus"}, net=net, epochs=epochs,
                             runs_per_epoch=16, steps=100, unroll=20, meta_lr=1e-3, val_problems=12, seed=4)
    mt.metatrain(config, out, resume="--resume" in sys.argv, data_root="../shared/data", name=f"screen-{variant}")
else:
    path, n = sys.argv[3], int(sys.argv[4])
    if path == "default":
        theta = start_theta(None)
    else:  # a weight file, or CKPT:theta / CKPT:best for a checkpoint's current or best weights
        path, _, which = path.partition(":")
        tensors = load_safetensors_bytes(open(path, "rb").read())
        theta = {k[len(which) + 1:]: v for k, v in tensors.items() if k.startswith(which + ".")} if which else tensors
    task = make_task("mnist_mlp", data_root="../shared/data")
    sums, finals = [], []
    for seed in EVAL_SEEDS[:n]:
        losses = mt.rollout(theta, net, task.sample(seed), 100, impl="cpp")
        sums.append(float(losses.sum())); finals.append(float(losses[-1]))
    s, f = torch.tensor(sums), torch.tensor(finals)
    print(variant, sys.argv[3], f"sum {s.mean():.2f} +- {s.std()/n**.5:.2f}, final {f.mean():.3f} +- {f.std()/n**.5:.3f}", flush=True)
