"""Train an MLP classifier with the learned optimizer, or with Adam for comparison.

    python examples/mlp.py                        # LearnedOptimizer, its lr on a cosine schedule from 1
    python examples/mlp.py --optimizer adam       # the same with Adam at 1e-3, on a cosine schedule from 1e-3

Data: the first of MNIST, Fashion-MNIST and scikit-learn's digits found here (see learned_optim.tasks.data), or
--dataset. Swap in your own model and loader: nothing below is specific to them.
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from learned_optim import LearnedOptimizer
from learned_optim.tasks.data import available_datasets, image_dataset


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=("learned", "adam"), default="learned")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default=None, help="mnist, fashion_mnist or digits (default: the first found)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    dataset = args.dataset or available_datasets(args.data_root)[0]
    x, y = image_dataset(dataset, args.data_root, "train")
    x_test, y_test = image_dataset(dataset, args.data_root, "test")
    torch.manual_seed(0)

    model = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    if args.optimizer == "learned":
        opt = LearnedOptimizer(model.parameters())  # lr=1.0: the rule as meta-trained
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)

    for step in range(args.steps):
        batch = torch.randint(0, len(x), (args.batch_size,))
        loss = F.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  training loss {loss.item():.4f}")

    with torch.no_grad():
        logits = model(x_test)
        test_loss = F.cross_entropy(logits, y_test).item()
        accuracy = (logits.argmax(1) == y_test).float().mean().item()
    print(f"{dataset}, {args.optimizer}: test loss {test_loss:.4f}, test accuracy {accuracy:.2%}")
    return loss.item()


if __name__ == "__main__":
    main()
