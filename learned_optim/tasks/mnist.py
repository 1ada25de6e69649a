"""MNIST MLPs, the second task of Andrychowicz et al. (2016) and the report's scaling grid.

The default is the paper's optimizee: one hidden layer of 20 sigmoid units,
cross-entropy on minibatches of 128 training images (drawn with replacement,
reproducibly per problem seed and step). Depth, width and activation are
configurable, which is all the deeper/wider experiments need; so is the dataset
(``dataset``: "mnist", "fashion_mnist" or scikit-learn's "digits", see data.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .base import Problem, Task, step_generator

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass(frozen=True)
class MNISTMLPConfig:
    hidden: tuple[int, ...] = (20,)  # units of each hidden layer
    activation: str = "sigmoid"  # "sigmoid", "relu" or "tanh"
    batch_size: int = 128  # training images per step
    dataset: str = "mnist"  # "mnist", "fashion_mnist" or "digits" (data.DATASETS)

    def __post_init__(self) -> None:
        if self.dataset not in data.DATASETS:
            raise ValueError(f"Invalid dataset: {self.dataset!r} (allowed: {', '.join(data.DATASETS)})")
        hidden = tuple(self.hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"Invalid hidden: {self.hidden!r} (a non-empty tuple of ints >= 1)")
        object.__setattr__(self, "hidden", hidden)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Invalid activation: {self.activation!r} (allowed: {', '.join(ACTIVATIONS)})")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"Invalid batch_size: {self.batch_size!r} (must be an int >= 1)")


def mlp(sizes: tuple[int, ...], activation: str, generator: torch.Generator | None = None) -> nn.Sequential:
    """Linear layers of the given sizes with activations between; torch's default init, seeded."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        bound = 1.0 / math.sqrt(fan_in)  # what nn.Linear's kaiming_uniform_(a=sqrt(5)) amounts to
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MNISTProblem(Problem):
    def __init__(self, model, seed, x, y, batch_size, root, dataset: str = "mnist") -> None:
        super().__init__(model, seed)
        self.x, self.y, self.batch_size, self.root, self.dataset = x, y, batch_size, root, dataset

    def batch(self, step: int):
        gen = step_generator(self.seed, step)
        index = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=gen).to(self.x.device)
        return (self.x[index],), self.y[index]

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Accuracy and loss on the test images (MNIST's 10,000)."""
        model = model if model is not None else self.model
        x, y = data.image_dataset(self.dataset, self.root, "test", self.x.device)
        logits = model(x)
        return {
            "test_accuracy": float((logits.argmax(1) == y).float().mean()),
            "test_loss": float(F.cross_entropy(logits, y)),
        }


class MNISTMLPTask(Task):
    name = "mnist_mlp"

    def __init__(self, config: MNISTMLPConfig | None = None, data_root=None, **options) -> None:
        super().__init__(config or MNISTMLPConfig(**options))
        self.data_root = data_root
        # fail now, with the one-line message, if the data is missing
        self.inputs = data.image_dataset(self.config.dataset, data_root, "train")[0].shape[1]

    def sample(self, seed: int, device: torch.device | str = "cpu") -> MNISTProblem:
        gen = torch.Generator().manual_seed(seed)
        model = mlp((self.inputs, *self.config.hidden, 10), self.config.activation, gen).to(device)
        x, y = data.image_dataset(self.config.dataset, self.data_root, "train", device)
        return MNISTProblem(model, seed, x, y, self.config.batch_size, self.data_root, self.config.dataset)

    def describe(self) -> dict:
        described = super().describe()
        if described["dataset"] == "mnist":  # as cards and result files written before the option existed
            del described["dataset"]
        return described


# -- the CNN of Maheswaranathan et al. (2021) -------------------------------------------


@dataclass(frozen=True)
class MNISTCNNConfig:
    channels: int = 16  # of each of the three 3×3 convolutions (valid padding, ReLU)
    batch_size: int = 100  # training images per step, as in the paper

    def __post_init__(self) -> None:
        for name in ("channels", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be an int >= 1)")


def cnn(channels: int, generator: torch.Generator | None = None) -> nn.Sequential:
    """Three 3×3 convolutions (28 → 26 → 24 → 22) with ReLU, then a dense layer: 82,250 parameters at 16 channels."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, 28, 28))]
    for fan_in in (1, channels, channels):
        conv = nn.Conv2d(fan_in, channels, 3)
        bound = 1.0 / math.sqrt(fan_in * 9)
        with torch.no_grad():
            conv.weight.uniform_(-bound, bound, generator=generator)
            conv.bias.uniform_(-bound, bound, generator=generator)
        layers += [conv, nn.ReLU()]
    dense = mlp((channels * 22 * 22, 10), "relu", generator)
    return nn.Sequential(*layers, nn.Flatten(), dense)


class MNISTCNNTask(Task):
    name = "mnist_cnn"

    def __init__(self, config: MNISTCNNConfig | None = None, data_root=None, **options) -> None:
        super().__init__(config or MNISTCNNConfig(**options))
        self.data_root = data_root
        data.mnist(data_root, "train")  # fail now, with the one-line message, if the data is missing

    def sample(self, seed: int, device: torch.device | str = "cpu") -> MNISTProblem:
        gen = torch.Generator().manual_seed(seed)
        model = cnn(self.config.channels, gen).to(device)
        x, y = data.mnist(self.data_root, "train", device)
        return MNISTProblem(model, seed, x, y, self.config.batch_size, self.data_root)
