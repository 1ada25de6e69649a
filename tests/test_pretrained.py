import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import REPO, loss_of, small_model
from learned_optim import LearnedOptimizer, NetConfig, list_pretrained, load_weights, pretrained_card, save_weights
from learned_optim.nets import init_theta
from learned_optim.pretrained import aliases, card_path, pretrained_dir

CARD_FIELDS = ("architecture", "task", "validation", "package_version", "created", "wall_time_s", "sha256", "command")
# how a shipped rule was made: the card's recipe field and the command that reproduces it
MAKERS = {"metatrain": "python -m learned_optim.metatrain", "distill": "python -m learned_optim.distill"}


@pytest.fixture
def saved(tmp_path):
    config = NetConfig(hidden_size=6)
    theta = init_theta(config, torch.Generator().manual_seed(0))
    path = tmp_path / "mine.safetensors"
    save_weights(path, theta, config, {"name": "mine", "task": {"name": "quadratic"}})
    return path, theta, config


def test_round_trip(saved):
    path, theta, config = saved
    rule = load_weights(path)
    assert rule.config == config
    assert rule.theta.keys() == theta.keys()
    assert all(torch.equal(rule.theta[k], theta[k]) for k in theta)
    card = json.loads(card_path(path).read_text())
    assert card["sha256"] == rule.sha256 and card["architecture"] == config.to_dict()
    assert LearnedOptimizer([torch.nn.Parameter(torch.randn(3))], weights=str(path)).config == config


def test_altered_byte_is_refused(saved):
    path = saved[0]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its card: sha256"):
        load_weights(path)


def test_truncated_file_is_refused(saved):
    path = saved[0]
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated, altered"):
        load_weights(path)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/learned_optim_pickle_executed")


@pytest.mark.parametrize("matching_card", [False, True])
def test_pickle_renamed_is_refused_and_never_executed(saved, matching_card):
    import hashlib

    path = saved[0]
    MARKER.unlink(missing_ok=True)
    payload = pickle.dumps({"cells.0.w_ih": _Boom()})
    path.write_bytes(payload)
    if matching_card:  # even a card that vouches for the pickle's bytes does not get it unpickled
        card = json.loads(card_path(path).read_text())
        card["sha256"] = hashlib.sha256(payload).hexdigest()
        card_path(path).write_text(json.dumps(card))
    with pytest.raises(ValueError):
        load_weights(path)
    pt = path.with_suffix(".pt")
    pt.write_bytes(payload)  # the same pickle under the usual torch extension
    with pytest.raises(ValueError, match="never loaded"):
        load_weights(pt)
    assert not MARKER.exists()


def test_card_that_does_not_match_the_tensors_is_refused(saved):
    path = saved[0]
    card = json.loads(card_path(path).read_text())
    card["architecture"]["output_scale"] = 1.0  # the tensors' header still says 0.1
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not match the architecture stored"):
        load_weights(path)


def test_wrong_tensor_shapes_are_refused(tmp_path):
    config = NetConfig(hidden_size=6)
    theta = init_theta(config)
    theta["readout.w"] = torch.zeros(1, 7)
    with pytest.raises(ValueError, match=r"readout.w has shape \(1, 7\), expected \(1, 6\)"):
        save_weights(tmp_path / "bad.safetensors", theta, config)


def test_missing_or_broken_card(saved):
    path = saved[0]
    card_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_weights(path)
    card_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="Card not found"):
        load_weights(path)
    with pytest.raises(FileNotFoundError, match="Weights file not found"):
        load_weights(path.with_name("absent.safetensors"))


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="Available pretrained weights: .*l2l-mnist"):
        load_weights("no-such-rule")


def test_shipped_rules_load_with_complete_cards():
    shipped = list_pretrained()
    assert {"l2l-quadratic", "l2l-mnist", "l2l-mlp-family", "l2l-mlp-family-plus", "l2l-mlp-distill",
            "default"} <= shipped.keys()
    target = aliases()["default"]
    assert shipped["default"] == f"alias of {target}: {shipped[target]}"
    for name, description in shipped.items():
        card = pretrained_card(name)
        # the listing is one line per rule, for a user; the card is one call away
        assert description and "\n" not in description and len(description) < 400, name
        for field in CARD_FIELDS:
            assert field in card, (name, field)
        rule = load_weights(name)
        assert rule.sha256 == card["sha256"] and rule.card == card
        (maker,) = [m for m in MAKERS if m in card]  # one recipe, and the command of its maker
        assert card["command"].startswith(MAKERS[maker]), name
        assert card["validation"]["history"]
        # a card speaks of shipped names and runs/ outputs, never of a path in a research folder
        assert "benchmarks/results" not in json.dumps(card), name
        if card.get("intermediate_of"):  # an intermediate rule names what it is part of, which ships too
            assert card["intermediate_of"] in shipped
    assert load_weights("default").sha256 == load_weights(target).sha256
    with pytest.raises(ValueError, match="not a shipped rule"):
        pretrained_card(str(pretrained_dir() / ".." / "pretrained" / "l2l-mnist.safetensors"))


def test_every_rule_a_shipped_recipe_starts_from_ships_too():
    """What rebuilds a shipped rule lives in pretrained/ and recipes/: every --init-from, --base and --specialist of a
    shipped card's command names a shipped rule (or an output of the recipe's own earlier stage, under runs/)."""
    import re

    shipped = set(list_pretrained())
    for name in shipped:
        command = pretrained_card(name)["command"]
        for flag in ("--init-from", "--base", "--specialist"):
            for value in re.findall(rf"{flag} (\S+)", command):
                assert value in shipped or value.startswith("runs/"), (name, flag, value)


@pytest.mark.parametrize("name", ["default", "l2l-mnist", "l2l-mlp-family", "l2l-mlp-family-plus", "l2l-mlp-distill"])
def test_shipped_rules_reduce_the_loss_of_a_small_model(name):
    model = small_model(seed=3)
    opt = LearnedOptimizer(model.parameters(), weights=name)
    with torch.no_grad():
        start = sum(float(loss_of(model, t)) for t in range(100, 110))
    for t in range(100):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
    with torch.no_grad():
        end = sum(float(loss_of(model, t)) for t in range(100, 110))
    assert end < 0.8 * start


def test_the_quadratic_rule_solves_quadratics():
    """l2l-quadratic is narrow (it barely trains nets; see the README): it is held to its own task."""
    from learned_optim.baselines import train
    from learned_optim.tasks import make_task

    task = make_task("quadratic")
    for seed in (50_000, 50_001):  # outside the evaluation, tuning, validation and training seed ranges
        losses = train(task.sample(seed), lambda params: LearnedOptimizer(params, weights="l2l-quadratic"), 100)
        assert torch.isfinite(losses).all() and losses[-10:].mean() < 0.05 * losses[0]


@pytest.mark.slow
def test_wheel_installs_the_weight_files(tmp_path):
    """Build a wheel, install it in isolation (unpacked, no source tree on the path), load every rule."""
    wheel_dir = tmp_path / "wheel"
    # from a copy without build outputs: a stale build/ would put files in the wheel that the config leaves out
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", ".venv", ".git", "runs", "results", "__pycache__", ".gpu", ".hypothesis", ".pytest_cache"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("learned_optim-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "learned_optim/csrc/lstm_cell.cpp" in names and "learned_optim/csrc/rule_step.cpp" in names
    # every module of the source tree is in the wheel (a subpackage left out of pyproject's list once was)
    package = REPO / "learned_optim"
    for module in sorted(package.rglob("*.py")):
        assert f"learned_optim/{module.relative_to(package).as_posix()}" in names, module
    shipped = sorted(p.name for p in pretrained_dir().glob("*.safetensors"))
    for name in shipped:
        assert f"learned_optim/pretrained_weights/{name}" in names
    script = (
        "import learned_optim, pathlib, sys;"
        "from learned_optim import list_pretrained, load_weights;"
        f"assert pathlib.Path(learned_optim.__file__).is_relative_to({str(site)!r}), learned_optim.__file__;"
        "names = list_pretrained();"
        "[load_weights(n) for n in names];"
        "import learned_optim.analyze, learned_optim.analysis, learned_optim.metatrain, learned_optim.tasks;"
        "print(sorted(names))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in shipped:
        assert name[: -len(".safetensors")] in out.stdout


def test_listing_skips_checkpoints_and_resolves_aliases(tmp_path, monkeypatch):
    import learned_optim.pretrained as pretrained

    config = NetConfig(hidden_size=3)
    save_weights(tmp_path / "rule-a.safetensors", init_theta(config), config, {"name": "rule-a"})
    (tmp_path / "rule-a.ckpt.safetensors").write_bytes(b"checkpoint bytes")
    (tmp_path / "aliases.json").write_text(json.dumps({"default": "rule-a"}))
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: tmp_path)
    listed = list_pretrained()
    assert sorted(listed) == ["default", "rule-a"] and listed["default"].startswith("alias of rule-a")
    assert load_weights("default").config == config
    with pytest.raises(ValueError, match="Available pretrained weights: default, rule-a"):
        load_weights("rule-b")


def test_the_same_weights_are_written_as_the_same_bytes(tmp_path):
    """safetensors orders its header by a hash map seeded per process: save_weights sorts it, so that the same rule
    written by two processes hashes the same (a reproduced rule can be checked by its sha256), and it still loads."""
    code = ("import sys, torch; from learned_optim import NetConfig, save_weights; from learned_optim.nets import "
            "init_theta; c = NetConfig(hidden_size=6, tensor_count_input=True, tensor_count_min=4); "
            "print(save_weights(sys.argv[1], init_theta(c, torch.Generator().manual_seed(0)), c, {'name': 'x'}).sha256)")
    digests = {subprocess.run([sys.executable, "-c", code, str(tmp_path / f"r{i}.safetensors")], capture_output=True,
                              text=True, check=True, cwd=REPO).stdout.strip() for i in range(5)}
    assert len(digests) == 1
    data = (tmp_path / "r0.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    assert length % 8 == 0
    header = json.loads(data[8 : 8 + length])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == ["architecture", "format"]
    assert load_weights(tmp_path / "r0.safetensors").config.tensor_count_min == 4
