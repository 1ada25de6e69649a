import gzip
import struct

import numpy as np
import pytest
import torch

from conftest import needs_mnist
from learned_optim.tasks import FAMILIES, DataNotFoundError, make_task
from learned_optim.tasks import data
from learned_optim.tasks.data import load_mnist_arrays, mnist, read_idx
from learned_optim.tasks.mnist import MNISTMLPConfig, mlp


def write_idx(path, array: np.ndarray, gz: bool):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as handle:
        handle.write(header + body)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    ints = np.arange(-3, 9, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), images, gz)
    write_idx(tmp_path / ("b.idx.gz" if gz else "b.idx"), ints, gz)
    assert np.array_equal(read_idx(tmp_path / ("a.idx.gz" if gz else "a.idx")), images)
    assert np.array_equal(read_idx(tmp_path / ("b.idx.gz" if gz else "b.idx")), ints)


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5]) + b"abc")
    with pytest.raises(ValueError, match="expected 5"):
        read_idx(tmp_path / "short")


def make_fake_mnist(root, n=6, gz=True, folder="MNIST"):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, count in (("train", n), ("t10k", n // 2)):
        suffix = ".gz" if gz else ""
        write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), gz)
        write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (count,), dtype=np.uint8), gz)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_a_small_root(tmp_path, gz):
    make_fake_mnist(tmp_path, gz=gz)
    images, labels = load_mnist_arrays(tmp_path, "train")
    assert images.shape == (6, 28, 28) and labels.shape == (6,)
    x, y = mnist(tmp_path, "test")
    assert x.shape == (3, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    # flattened and normalized with the usual constants
    test_images = load_mnist_arrays(tmp_path, "test")[0]
    expected = (test_images[0].reshape(-1).astype(np.float32) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x[0], torch.from_numpy(expected))
    task = make_task("mnist_mlp", data_root=tmp_path, batch_size=4)
    problem = task.sample(0)
    (xb,), yb = problem.batch(0)
    assert xb.shape == (4, 784) and yb.shape == (4,)


def test_torchvision_path_gives_the_idx_readers_arrays(tmp_path, monkeypatch):
    """Where torchvision imports and the files are extracted, its MNIST class is used: same values and dtypes."""
    import sys
    import types

    make_fake_mnist(tmp_path, gz=False)
    raw = tmp_path / "MNIST" / "raw"
    calls = []

    class MNIST:  # stands in for torchvision.datasets.MNIST: torch tensors, int64 targets, as torchvision returns
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            prefix = "train" if train else "t10k"
            self.data = torch.from_numpy(read_idx(raw / f"{prefix}-images-idx3-ubyte").copy())
            self.targets = torch.from_numpy(read_idx(raw / f"{prefix}-labels-idx1-ubyte").astype(np.int64))

    datasets = types.ModuleType("torchvision.datasets")
    datasets.MNIST = MNIST
    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    for split in ("train", "test"):
        images, labels = load_mnist_arrays(tmp_path, split)
        prefix = "train" if split == "train" else "t10k"
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        assert np.array_equal(images, read_idx(raw / f"{prefix}-images-idx3-ubyte"))
        assert np.array_equal(labels, read_idx(raw / f"{prefix}-labels-idx1-ubyte"))
    assert calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]


def test_missing_data_root_says_where_to_put_the_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        make_task("mnist_mlp", data_root=tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message and "LEARNED_OPTIM_DATA" in message


def test_quadratic_problems():
    task = make_task("quadratic")
    a, b, c = task.sample(1), task.sample(1), task.sample(2)
    assert torch.equal(a.w, b.w) and torch.equal(a.y, b.y) and not torch.equal(a.w, c.w)
    assert torch.equal(a.model.theta, torch.zeros(10))
    torch.testing.assert_close(a.loss(0), (a.y**2).sum())
    theta = torch.randn(10)
    torch.testing.assert_close(a.loss(5, {"theta": theta}), ((a.w @ theta - a.y) ** 2).sum())
    normal = make_task("quadratic", init="normal", dim=4).sample(1)
    assert normal.model.theta.shape == (4,) and normal.model.theta.abs().sum() > 0
    with pytest.raises(ValueError, match="Invalid init: 'ones'"):
        make_task("quadratic", init="ones")


def test_unknown_task():
    with pytest.raises(ValueError, match="Unknown task: 'cifar'.*mnist_mlp, quadratic"):
        make_task("cifar")


def test_mlp_sizes_and_seeded_init():
    model = mlp((784, 20, 10), "sigmoid", torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == 15910
    again = mlp((784, 20, 10), "sigmoid", torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    deep = mlp((784, 20, 20, 20, 10), "relu")
    assert sum(isinstance(m, torch.nn.ReLU) for m in deep) == 3
    assert MNISTMLPConfig(hidden=[20, 20]).hidden == (20, 20)
    assert sum(isinstance(m, torch.nn.GELU) for m in mlp((784, 20, 20, 10), "gelu")) == 2
    with pytest.raises(ValueError, match="Invalid activation: 'swish'"):
        MNISTMLPConfig(activation="swish")
    with pytest.raises(ValueError, match="Invalid hidden"):
        MNISTMLPConfig(hidden=())


@needs_mnist
def test_real_mnist_matches_its_readme():
    images, labels = load_mnist_arrays(None, "train")
    assert images.shape == (60000, 28, 28)
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_images, test_labels = load_mnist_arrays(None, "test")
    assert test_images.shape == (10000, 28, 28)
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_mnist
def test_mnist_problem_is_reproducible_and_functional():
    task = make_task("mnist_mlp")
    p1, p2 = task.sample(7), task.sample(7)
    (x1,), y1 = p1.batch(3)
    (x2,), y2 = p2.batch(3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(p1.batch(4)[1], y1)
    params = dict(p1.model.named_parameters())
    torch.testing.assert_close(p1.loss(3, params), p1.loss(3))
    metrics = p1.evaluate()
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0


# -- mixtures of tasks ----------------------------------------------------------------------


def test_mixture_problem_is_its_member_tasks_problem():
    from learned_optim.tasks import make_task

    members = [("quadratic", {"dim": 5}), ("linreg", {}), ("quadratic", {"dim": 3, "init": "normal"})]
    mixture = make_task("mixture", members=members)
    alone = [make_task(name, **options) for name, options in members]
    for seed in [0, 1, 2, 3, 10_001, 1_000_005]:
        index = mixture.member(seed)
        assert index == seed % 3
        a, b = mixture.sample(seed), alone[index].sample(seed)
        for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
            assert na == nb and torch.equal(pa, pb)
        for t in (0, 7):
            assert torch.equal(a.loss(t), b.loss(t))
    description = mixture.describe()
    assert description["name"] == "mixture" and [m["name"] for m in description["members"]] == ["quadratic", "linreg", "quadratic"]
    assert description["members"][2]["dim"] == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"members": []}, "at least one member"),
        ({"members": [("mixture", {})]}, "do not nest"),
        ({"members": [("quadratic",)]}, "Invalid member"),
        ({"members": [("nonesuch", {})]}, "Unknown task: 'nonesuch'"),
        ({"family": "nonesuch"}, "Unknown family: 'nonesuch'"),
        ({"family": "mlp-family", "members": [("quadratic", {})]}, "not both"),
    ],
)
def test_mixture_refuses_bad_members(kwargs, message):
    from learned_optim.tasks import make_task

    with pytest.raises(ValueError, match=message):
        make_task("mixture", **kwargs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mlp_families_share_no_model_with_the_deep_wide_grid(family):
    """A rule meta-trained on a family is evaluated on deep_wide's cells (MNIST MLPs) and on the long-horizon suite:
    no member may be a grid cell, and the MLP families vary depth and activation."""
    from benchmarks.deep_wide import CELLS

    members = FAMILIES[family]
    assert len(set(map(repr, members))) == len(members)  # no member twice
    mlps = [opts for name, opts in members if name == "mnist_mlp"]
    assert len(members) >= 5 and len(mlps) >= 4
    grid = {((units,) * layers, activation) for layers, units, activation in CELLS}
    shapes = {(tuple(opts["hidden"]), opts["activation"]) for opts in mlps if opts.get("dataset", "mnist") == "mnist"}
    assert not shapes & grid
    every = {(tuple(opts["hidden"]), opts["activation"]) for opts in mlps}
    assert len({len(h) for h, _ in every}) >= 2 and len({a for _, a in every}) >= 3  # depths and activations vary


def test_fashion_mnist_from_a_small_root_or_debians_folder(tmp_path, monkeypatch):
    """Fashion-MNIST: the same IDX files under ROOT/FashionMNIST/raw, or in the folder Debian's package fills."""
    make_fake_mnist(tmp_path, folder="FashionMNIST")
    x, y = data.image_dataset("fashion_mnist", tmp_path, "test")
    images = data.load_idx_arrays("fashion_mnist", tmp_path, "test")[0]
    expected = (images[0].reshape(-1).astype(np.float32) / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x[0], torch.from_numpy(expected))
    assert y.shape == (3,) and data.available_datasets(tmp_path)[0] == "fashion_mnist"
    debian = tmp_path / "debian"
    make_fake_mnist(debian, n=8, folder="x")
    monkeypatch.setitem(data.IDX_DATASETS, "fashion_mnist", ("FashionMNIST", (debian / "x" / "raw",), (0.286, 0.353)))
    assert data.load_idx_arrays("fashion_mnist", tmp_path / "empty", "train")[0].shape == (8, 28, 28)
    monkeypatch.setitem(data.IDX_DATASETS, "fashion_mnist", ("FashionMNIST", (), (0.286, 0.353)))
    with pytest.raises(DataNotFoundError, match="FashionMNIST not found"):
        data.load_idx_arrays("fashion_mnist", tmp_path / "empty", "train")


def test_the_digits_split_and_an_mlp_on_them():
    pytest.importorskip("sklearn")
    x, y = data.image_dataset("digits", split="train")
    xt, yt = data.image_dataset("digits", split="test")
    assert x.shape == (1500, 64) and xt.shape == (data.DIGITS_TEST, 64) and set(y.tolist()) == set(range(10))
    assert abs(float(torch.cat([x, xt]).mean())) < 0.01 and abs(float(torch.cat([x, xt]).std()) - 1) < 0.01
    task = make_task("mnist_mlp", dataset="digits", hidden=(16,))
    problem = task.sample(0)
    assert problem.model[0].in_features == 64 and task.describe()["dataset"] == "digits"
    assert "dataset" not in make_task("quadratic").describe() and set(problem.evaluate()) == {"test_accuracy",
                                                                                              "test_loss"}
    with pytest.raises(ValueError, match="Invalid dataset"):
        make_task("mnist_mlp", dataset="cifar")
