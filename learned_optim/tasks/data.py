"""Datasets from local files: MNIST and Fashion-MNIST (IDX files), and scikit-learn's digits. Nothing is downloaded.

The data root is, in order: an explicit argument (``--data-root``), the environment
variable ``LEARNED_OPTIM_DATA``, or ``$XDG_CACHE_HOME/learned_optim/data``
(``~/.cache/learned_optim/data``). MNIST's four original files go in
``ROOT/MNIST/raw/``, gzipped or not; Fashion-MNIST's (the same file names) in
``ROOT/FashionMNIST/raw/``, or where Debian's ``dataset-fashion-mnist`` package puts them
(``/usr/share/datasets/fashion-mnist``). The digits (1,797 8×8 images) come with
scikit-learn, where it is installed.

Where torchvision imports and the files are already extracted, its MNIST class
reads them; otherwise a small IDX reader here does (torchvision is optional and
its CUDA wheels do not import beside a CPU-only torch).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

ENV_VAR = "LEARNED_OPTIM_DATA"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual normalization constants of the training set
# IDX datasets: name -> (folder under the data root, other folders to look in, training-set mean and std)
IDX_DATASETS = {
    "mnist": ("MNIST", (), (MNIST_MEAN, MNIST_STD)),
    "fashion_mnist": ("FashionMNIST", (Path("/usr/share/datasets/fashion-mnist"),), (0.2860, 0.3530)),
}
DATASETS = (*IDX_DATASETS, "digits")
DIGITS_TEST = 297  # the digits' last 297 images (after a fixed shuffle) are its test split, the first 1,500 training

# IDX type codes -> numpy dtypes (big-endian where multi-byte)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataNotFoundError(FileNotFoundError):
    """A dataset is not where the data root says; the message says where to put it."""


def default_data_root() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "learned_optim" / "data"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise ValueError(f"{path}: IDX body has {len(data) - header_end} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(root: Path, name: str = "mnist") -> str:
    folder, elsewhere, _ = IDX_DATASETS[name]
    also = "".join(f", or in {path}" for path in elsewhere)
    return (
        f"{folder} not found under {root}: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in {root / folder / 'raw'}{also}, "
        f"or point --data-root / {ENV_VAR} at the folder that holds {folder}/raw/"
    )


def _torchvision_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from torchvision.datasets import MNIST  # optional; CUDA wheels fail to import beside CPU torch
    except Exception:
        return None
    try:
        dataset = MNIST(str(root), train=(split == "train"), download=False)
    except Exception:
        return None  # e.g. only the .gz files are present: the IDX reader handles those
    # torchvision hands labels back as int64; keep the files' uint8 so both paths return the same arrays
    return dataset.data.numpy().astype(np.uint8, copy=False), dataset.targets.numpy().astype(np.uint8)


def idx_files(name: str, root: str | os.PathLike | None = None, split: str = "train") -> list[Path] | None:
    """The (images, labels) files of an IDX dataset's split, where they are found (None where not)."""
    folder, elsewhere, _ = IDX_DATASETS[name]
    for raw in (resolve_data_root(root) / folder / "raw", *elsewhere):
        paths = [_find(raw, stem) for stem in MNIST_FILES[split]]
        if all(p is not None for p in paths):
            return paths
    return None


def load_idx_arrays(name: str, root: str | os.PathLike | None = None,
                    split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """An IDX dataset's images (N, 28, 28) uint8 and labels (N,) of a split, "train" or "test"."""
    if name not in IDX_DATASETS:
        raise ValueError(f"Invalid dataset: {name!r} (allowed: {', '.join(IDX_DATASETS)})")
    if split not in MNIST_FILES:
        raise ValueError(f"Invalid split: {split!r} (allowed: train, test)")
    paths = idx_files(name, root, split)
    if paths is None:
        raise DataNotFoundError(_missing_message(resolve_data_root(root), name))
    if name == "mnist" and all(p.suffix != ".gz" for p in paths):
        via_torchvision = _torchvision_mnist(resolve_data_root(root), split)
        if via_torchvision is not None:
            return via_torchvision
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} files beside {paths[0]} are inconsistent: images {images.shape}, labels {labels.shape}")
    return images, labels


def load_mnist_arrays(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 28, 28) uint8 and labels (N,) of a split, "train" or "test"."""
    return load_idx_arrays("mnist", root, split)


@functools.lru_cache(maxsize=16)
def _tensors(name: str, root: str, split: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "digits":
        images, labels = _digits_arrays(split)
        x = torch.from_numpy(images.astype(np.float32) / 16.0)
        mean, std = _DIGITS_STATS
    else:
        images, labels = load_idx_arrays(name, root, split)
        x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / 255.0)
        mean, std = IDX_DATASETS[name][2]
    x = (x - mean) / std
    y = torch.from_numpy(labels.astype(np.int64))
    return x.to(device), y.to(device)


_DIGITS_STATS = (0.3053, 0.3760)  # mean and std of the digits' pixels / 16 (all 1,797 images)


def _digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataNotFoundError("the digits dataset comes with scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    pick = order[:-DIGITS_TEST] if split == "train" else order[-DIGITS_TEST:]
    return digits.data[pick], digits.target[pick]


def image_dataset(name: str = "mnist", root: str | os.PathLike | None = None, split: str = "train",
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A classification dataset's split as (x (N, D) float32, flattened and normalized; y (N,) int64), cached:
    "mnist", "fashion_mnist" (D = 784) or "digits" (D = 64)."""
    if name not in DATASETS:
        raise ValueError(f"Invalid dataset: {name!r} (allowed: {', '.join(DATASETS)})")
    if split not in ("train", "test"):
        raise ValueError(f"Invalid split: {split!r} (allowed: train, test)")
    return _tensors(name, str(resolve_data_root(root)), split, str(torch.device(device)))


def available_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """The datasets found here, in the order of ``DATASETS``."""
    found = [name for name in IDX_DATASETS if idx_files(name, root, "train") and idx_files(name, root, "test")]
    import importlib.util

    return found + ["digits"] * (importlib.util.find_spec("sklearn") is not None)


def mnist(root: str | os.PathLike | None = None, split: str = "train", device: torch.device | str = "cpu"):
    """Normalized, flattened MNIST of a split as (x (N, 784) float32, y (N,) int64), cached."""
    return image_dataset("mnist", root, split, device)
