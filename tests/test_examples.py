"""The scripts in examples/ run, with the learned optimizer and with Adam, and train (a few steps each)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from conftest import REPO


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("optimizer", ["learned", "adam"])
@pytest.mark.parametrize("name, argv", [("mlp", ["--dataset", "digits"]), ("cnn", ["--dataset", "digits"]),
                                        ("transformer_lm", ["--context", "16", "--batch-size", "8"])])
def test_an_example_runs_and_its_loss_falls(name, argv, optimizer, capsys):
    pytest.importorskip("sklearn") if "digits" in argv else None
    first = example(name).main([*argv, "--optimizer", optimizer, "--steps", "1"])
    last = example(name).main([*argv, "--optimizer", optimizer, "--steps", "40"])
    out = capsys.readouterr().out
    assert math.isfinite(last) and "step     0" in out and optimizer in out.splitlines()[-1]
    assert last < first  # forty steps train: the last batch's loss is below the first's
