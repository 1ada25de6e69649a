"""Train a small CNN with BatchNorm with the learned optimizer, or with Adam for comparison.

    python examples/cnn.py                        # LearnedOptimizer with a one-cycle schedule on its lr
    python examples/cnn.py --optimizer adam       # Adam with a one-cycle schedule peaking at 3e-3

The learned optimizer steps every parameter the same way, BatchNorm's scales and shifts included; OneCycleLR needs
cycle_momentum=False with it (the rule has no momentum for the scheduler to cycle).
"""

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

from learned_optim import LearnedOptimizer
from learned_optim.tasks.data import available_datasets, image_dataset


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=("learned", "adam"), default="learned")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dataset", default=None, help="mnist, fashion_mnist or digits (default: the first found)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    dataset = args.dataset or available_datasets(args.data_root)[0]
    x, y = image_dataset(dataset, args.data_root, "train")
    x_test, y_test = image_dataset(dataset, args.data_root, "test")
    side = math.isqrt(x.shape[1])  # 28 for (Fashion-)MNIST, 8 for the digits
    x, x_test = x.view(-1, 1, side, side), x_test.view(-1, 1, side, side)
    torch.manual_seed(0)

    model = make_cnn()
    if args.optimizer == "learned":
        opt = LearnedOptimizer(model.parameters())
        peak = 1.0  # lr multiplies the rule's own step: 1 is the rule as trained
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        peak = 3e-3
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=args.steps, cycle_momentum=False)

    model.train()
    for step in range(args.steps):
        batch = torch.randint(0, len(x), (args.batch_size,))
        loss = F.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  training loss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in x_test.split(1000)])
        accuracy = (logits.argmax(1) == y_test).float().mean().item()
    print(f"{dataset}, {args.optimizer}: test loss {F.cross_entropy(logits, y_test).item():.4f}, "
          f"test accuracy {accuracy:.2%}")
    return loss.item()


if __name__ == "__main__":
    main()
