"""The long-horizon suite: small versions of the models people train, for runs of thousands of steps on a CPU.

    task = make_task("suite", task="fmnist_mlp_relu")
    problem = task.sample(seed)            # problem.model, problem.loss(step), problem.evaluate()

Each task is a model, a data source and a loss, nothing about optimizers. Minibatches are drawn with replacement,
reproducibly per (seed, step). ``evaluate()`` reads the training loss on a fixed subset of the training data (so that
the final training loss is not one minibatch's noise) and the test loss and accuracy where the task has a test set.

The suite is split in two (``PARTS``): a development part, which may be used to choose and make rules, and a held-out
part, used by nothing but the final report. A rule's card lists the tasks it was made or chosen on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .base import Problem, Task, step_generator

TEXT_ROOT = Path("/usr/share/common-licenses")
TRAIN_SUBSET = 4096  # training examples the final training loss is read on


# -- data ------------------------------------------------------------------------------------------------------------


def _images(name: str, root) -> dict[str, torch.Tensor]:
    x, y = data.image_dataset(name, root, "train")
    xt, yt = data.image_dataset(name, root, "test")
    return {"x": x, "y": y, "x_test": xt, "y_test": yt}


def _pooled(images: dict[str, torch.Tensor], side: int, pool: int) -> dict[str, torch.Tensor]:
    """Images (N, side*side) average-pooled by ``pool`` and shaped (N, 1, side/pool, side/pool)."""
    def shape(x):
        x = x.view(-1, 1, side, side)
        return F.avg_pool2d(x, pool) if pool > 1 else x
    return {**images, "x": shape(images["x"]), "x_test": shape(images["x_test"])}


def text_tokens(root: Path = TEXT_ROOT, limit: int = 200_000) -> tuple[torch.Tensor, int]:
    """Characters of the licence texts every Debian machine has (this package's sources where they are missing), as
    token ids over the characters that occur, and the vocabulary size."""
    files = sorted(root.iterdir()) if root.is_dir() else []
    text = "".join(f.read_text(errors="ignore") for f in files if f.is_file())
    if not text:
        text = "".join(p.read_text() for p in sorted(Path(__file__).resolve().parent.parent.glob("*.py")))
    text = text[:limit]
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), len(chars)


def _text(root) -> dict[str, Any]:
    tokens, vocab = text_tokens()
    split = int(0.9 * len(tokens))
    return {"tokens": tokens[:split], "tokens_test": tokens[split:], "vocab": vocab}


def _smooth_regression(seed: int = 0, n: int = 256, dim: int = 8) -> dict[str, torch.Tensor]:
    """A smooth target of 8 inputs that a small tanh MLP fits almost exactly: full-batch regression whose loss can go
    orders of magnitude below its start."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    w = torch.randn(dim, 3, generator=gen) / math.sqrt(dim)
    y = torch.sin(x @ w[:, :1]) + 0.5 * torch.tanh(x @ w[:, 1:2]) * (x @ w[:, 2:3])
    return {"x": x, "y": y}


def _ill_conditioned(seed: int = 1, n: int = 512, dim: int = 64, condition: float = 1e3) -> dict[str, torch.Tensor]:
    """Full-batch least squares with feature scales spread over a factor ``condition``: the loss can reach its floor
    (the noise, 1e-4) only with small steps on the stiff directions and long ones on the flat."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, math.log10(condition) / 2, dim)  # the Hessian's eigenvalues span `condition`
    x = torch.randn(n, dim, generator=gen) / scales
    w = torch.randn(dim, 1, generator=gen)
    y = x @ w + 1e-2 * torch.randn(n, 1, generator=gen)
    return {"x": x, "y": y}


# -- models ----------------------------------------------------------------------------------------------------------


def _mlp(sizes, activation: Callable[[], nn.Module], norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if norm:
                layers.append(nn.LayerNorm(b))
            layers.append(activation())
    return nn.Sequential(*layers)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def _resnet(channels: int = 16, blocks: int = 2) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                         *[_ResidualBlock(channels) for _ in range(blocks)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def _cnn_bn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


class _CharTransformer(nn.Module):
    def __init__(self, vocab: int, context: int, width: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx):
        n = idx.shape[1]
        h = self.tokens(idx) + self.positions(torch.arange(n, device=idx.device))
        return self.head(self.norm(self.blocks(h, mask=self.mask[:n, :n], is_causal=True)))


class _CharGRU(nn.Module):
    def __init__(self, vocab: int, width: int = 64) -> None:
        super().__init__()
        self.embed, self.gru, self.head = nn.Embedding(vocab, 32), nn.GRU(32, width, batch_first=True), nn.Linear(width, vocab)

    def forward(self, idx):
        return self.head(self.gru(self.embed(idx))[0])


# -- the tasks --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteSpec:
    """One task of the suite: how to make its data and model, its batch size and loss, and its horizons."""

    data: Callable[[Any], dict]  # data_root -> tensors
    model: Callable[[dict], nn.Module]  # data -> a fresh model (seeded by the caller)
    loss: str  # "cross_entropy", "mse" or "lm" (next-token cross-entropy)
    batch: int  # examples per step; 0: the whole training set (full batch)
    horizons: tuple[int, ...] = (1000, 10000)
    context: int = 0  # language models: tokens per sequence
    what: str = ""


SUITE: dict[str, SuiteSpec] = {
    # development part: may be used to make and choose rules
    "fmnist_mlp_relu": SuiteSpec(lambda r: _images("fashion_mnist", r), lambda d: _mlp((784, 128, 128, 10), nn.ReLU),
                                 "cross_entropy", 128, what="Fashion-MNIST, MLP 784-128-128-10, ReLU, batch 128"),
    "digits_mlp_gelu": SuiteSpec(lambda r: _images("digits", r), lambda d: _mlp((64, 128, 128, 10), nn.GELU),
                                 "cross_entropy", 64, what="digits, MLP 64-128-128-10, GELU, batch 64"),
    "digits_cnn_bn": SuiteSpec(lambda r: _pooled(_images("digits", r), 8, 1), lambda d: _cnn_bn(), "cross_entropy", 64,
                               what="digits 8x8, CNN: two 3x3 convolutions (16, 32) with BatchNorm, max-pool, linear"),
    "text_transformer": SuiteSpec(_text, lambda d: _CharTransformer(d["vocab"], 32), "lm", 16, (1000, 5000), 32,
                                  what="licence texts, character transformer LM: width 32, 2 pre-LN layers, 4 heads, "
                                       "GELU, context 32, batch 16"),
    "mnist_logreg": SuiteSpec(lambda r: _images("mnist", r), lambda d: nn.Linear(784, 10), "cross_entropy", 128,
                              what="MNIST, logistic regression, batch 128"),
    "regression_fullbatch": SuiteSpec(lambda r: _smooth_regression(), lambda d: _mlp((8, 32, 32, 1), nn.Tanh), "mse", 0,
                                      what="synthetic smooth target of 8 inputs, MLP 8-32-32-1 tanh, full batch (256)"),
    # held-out part: used by no choice; reported apart
    "mnist_mlp_deep_silu": SuiteSpec(lambda r: _images("mnist", r),
                                     lambda d: _mlp((784, 64, 64, 64, 64, 64, 64, 10), nn.SiLU), "cross_entropy", 128,
                                     what="MNIST, MLP of 6 hidden layers of 64, SiLU, batch 128"),
    "fmnist_resnet": SuiteSpec(lambda r: _pooled(_images("fashion_mnist", r), 28, 2), lambda d: _resnet(), "cross_entropy",
                               32, (1000, 5000),
                               what="Fashion-MNIST at 14x14, ResNet: a stem and 2 residual blocks of 16 channels with "
                                    "BatchNorm, batch 32"),
    "text_gru": SuiteSpec(_text, lambda d: _CharGRU(d["vocab"]), "lm", 16, (1000, 5000), 32,
                          what="licence texts, character GRU LM: embedding 32, 64 units, context 32, batch 16"),
    "mnist_autoencoder": SuiteSpec(lambda r: _images("mnist", r), lambda d: _mlp((784, 128, 32, 128, 784), nn.ReLU),
                                   "autoencoder", 128, what="MNIST, autoencoder 784-128-32-128-784 ReLU, MSE, batch 128"),
    "linreg_illcond": SuiteSpec(lambda r: _ill_conditioned(), lambda d: nn.Linear(64, 1), "mse", 0,
                                what="synthetic least squares, 64 features, condition number 1e3, full batch (512)"),
    "digits_mlp_tanh_small_batch": SuiteSpec(lambda r: _images("digits", r), lambda d: _mlp((64, 256, 10), nn.Tanh),
                                             "cross_entropy", 16, what="digits, MLP 64-256-10, tanh, batch 16"),
}
PARTS = {
    "dev": ("fmnist_mlp_relu", "digits_mlp_gelu", "digits_cnn_bn", "text_transformer", "mnist_logreg",
            "regression_fullbatch"),
    "held_out": ("mnist_mlp_deep_silu", "fmnist_resnet", "text_gru", "mnist_autoencoder", "linreg_illcond",
                 "digits_mlp_tanh_small_batch"),
}


class SuiteProblem(Problem):
    def __init__(self, model: nn.Module, seed: int, spec: SuiteSpec, tensors: dict) -> None:
        super().__init__(model, seed)
        self.spec, self.data = spec, tensors

    def _sequences(self, tokens: torch.Tensor, starts: torch.Tensor):
        rows = torch.stack([tokens[s : s + self.spec.context + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def batch(self, step: int):
        spec, d = self.spec, self.data
        gen = step_generator(self.seed, step)
        if spec.loss == "lm":
            starts = torch.randint(0, len(d["tokens"]) - spec.context - 1, (spec.batch,), generator=gen)
            x, y = self._sequences(d["tokens"], starts)
            return (x,), y
        if spec.batch == 0:
            return (d["x"],), d["y"]
        index = torch.randint(0, d["x"].shape[0], (spec.batch,), generator=gen)
        x = d["x"][index]
        return (x,), (x.flatten(1) if spec.loss == "autoencoder" else d["y"][index])

    def loss_fn(self, output, target):
        if self.spec.loss == "lm":
            return F.cross_entropy(output.flatten(0, 1), target.flatten())
        if self.spec.loss in ("mse", "autoencoder"):
            return F.mse_loss(output, target)
        return F.cross_entropy(output, target)

    @torch.no_grad()
    def _loss_on(self, x, y) -> tuple[float, "float | None"]:
        losses, correct, count = 0.0, 0, 0
        for start in range(0, len(x), 1024):
            out = self.model(x[start : start + 1024])
            target = y[start : start + 1024]
            losses += float(self.loss_fn(out, target)) * len(target)
            if self.spec.loss in ("cross_entropy", "lm"):
                correct += int((out.argmax(-1) == target).sum())
            count += len(target)
        return losses / count, (correct / (count * (target.shape[1] if target.dim() > 1 else 1))
                                if self.spec.loss in ("cross_entropy", "lm") else None)

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """The training loss on a fixed subset of the training data, and the test loss (and accuracy)."""
        was_training = self.model.training
        self.model.eval()
        try:
            spec, d = self.spec, self.data
            out = {}
            if spec.loss == "lm":
                gen = torch.Generator().manual_seed(12345)
                for name, tokens in (("train", d["tokens"]), ("test", d["tokens_test"])):
                    starts = torch.randint(0, len(tokens) - spec.context - 1, (256,), generator=gen)
                    loss, acc = self._loss_on(*self._sequences(tokens, starts))
                    out[f"{name}_loss"], out[f"{name}_accuracy"] = loss, acc
                return out
            x, y = d["x"][:TRAIN_SUBSET], d["y"][:TRAIN_SUBSET]
            if spec.loss == "autoencoder":
                y = x.flatten(1)
            out["train_loss"], accuracy = self._loss_on(x, y)
            if accuracy is not None:
                out["train_accuracy"] = accuracy
            if "x_test" in d:
                xt = d["x_test"]
                yt = xt.flatten(1) if spec.loss == "autoencoder" else d["y_test"]
                out["test_loss"], test_accuracy = self._loss_on(xt, yt)
                if test_accuracy is not None:
                    out["test_accuracy"] = test_accuracy
            return out
        finally:
            self.model.train(was_training)


@dataclass(frozen=True)
class SuiteConfig:
    task: str = "fmnist_mlp_relu"  # a task of SUITE

    def __post_init__(self) -> None:
        if self.task not in SUITE:
            raise ValueError(f"Invalid task: {self.task!r} (the suite's tasks: {', '.join(SUITE)})")


_DATA: dict[tuple[str, str], dict] = {}


class SuiteTask(Task):
    name = "suite"

    def __init__(self, config: SuiteConfig | None = None, data_root=None, **options) -> None:
        super().__init__(config or SuiteConfig(**options))
        self.spec = SUITE[self.config.task]
        key = (self.config.task, str(data_root))
        if key not in _DATA:  # read once per process: the datasets are shared by every problem
            _DATA[key] = self.spec.data(data_root)
        self.data = _DATA[key]

    def sample(self, seed: int, device: torch.device | str = "cpu") -> SuiteProblem:
        with torch.random.fork_rng():  # the model's init from the seed alone, the global generator left alone
            torch.manual_seed(seed)
            model = self.spec.model(self.data).to(device)
        tensors = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.data.items()}
        return SuiteProblem(model, seed, self.spec, tensors)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.config.task, "what": self.spec.what}
