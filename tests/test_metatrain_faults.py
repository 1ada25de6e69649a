"""Meta-training that survives faults: SIGKILL at random moments, divergence, and several processes."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from learned_optim import load_weights
from learned_optim.metatrain import MetaTrainConfig, checkpoint_path, load_checkpoint, metatrain
from learned_optim.nets import NetConfig

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def cli(*flags):
    return [sys.executable, "-m", "learned_optim.metatrain", "--kernel", "python", *flags]


def same_weights(a, b, exact=True):
    wa, wb = load_weights(a), load_weights(b)
    for k in wa.theta:
        if exact:
            assert torch.equal(wa.theta[k], wb.theta[k]), k
        else:
            torch.testing.assert_close(wa.theta[k], wb.theta[k], rtol=1e-4, atol=1e-6)


# -- SIGKILL -------------------------------------------------------------------------------

KILL_FLAGS = ["--task", "quadratic", "--epochs", "10", "--runs-per-epoch", "3", "--steps", "40", "--unroll", "10",
              "--val-problems", "2", "--hidden-size", "8"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """At least 20 kills, spread over whole runs: every run then ends with the weights of one never killed."""
    straight = tmp_path / "straight.safetensors"
    started = time.perf_counter()
    subprocess.run(cli(*KILL_FLAGS, "--out", str(straight)), env=ENV, check=True, capture_output=True)
    whole = time.perf_counter() - started  # start-up (about 60% of it here) and 10 short epochs
    rng = random.Random(0)
    kills, runs, attempts, epochs_seen = 0, 0, 0, set()
    while kills < 20:
        out = tmp_path / f"killed{runs}.safetensors"
        runs += 1
        last = -1
        while True:
            proc = subprocess.Popen(cli(*KILL_FLAGS, "--out", str(out), "--resume"), env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            attempts += 1
            assert attempts < 100, f"no progress after {kills} kills"
            time.sleep(rng.uniform(0.4, 1.1) * whole)  # from inside the imports to the last epochs
            if proc.poll() is not None:
                assert proc.returncode == 0
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if checkpoint_path(out).exists():  # never torn: it always loads
                done_epochs = load_checkpoint(checkpoint_path(out))[0]["epochs_done"]
                assert done_epochs >= last  # a resumed run never loses a finished epoch
                last = done_epochs
                epochs_seen.add(done_epochs)
                if done_epochs == 10:  # only the weight file is left to write: let it finish
                    subprocess.run(cli(*KILL_FLAGS, "--out", str(out), "--resume"), env=ENV, check=True, capture_output=True)
                    break
        same_weights(straight, out)
        assert not checkpoint_path(out).exists() or load_checkpoint(checkpoint_path(out))[0]["epochs_done"] == 10
    assert len(epochs_seen) > 3  # the kills landed at many different epochs
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


# -- divergence ------------------------------------------------------------------------------

TINY = dict(task="quadratic", epochs=4, runs_per_epoch=4, steps=20, unroll=5, val_problems=4, net=NetConfig(hidden_size=4))


def test_a_run_removes_the_temporary_files_a_killed_run_left(tmp_path):
    """A kill between writing a temporary file and renaming it leaves the file: the next run on that output removes
    those of its checkpoint, weights and card, and leaves other files alone."""
    out = tmp_path / "a.safetensors"
    ours = [f".{name}.12345.tmp" for name in (checkpoint_path(out).name, out.name, "a.json")]
    theirs = [".b.json.12345.tmp", ".a.json.notes", "a.json.12345.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"torn")
    metatrain(MetaTrainConfig(**TINY), out, log=lambda m: None)
    assert [name for name in ours if (tmp_path / name).exists()] == []
    assert [name for name in theirs if not (tmp_path / name).exists()] == []


def test_divergence_restores_the_state_and_lowers_the_meta_learning_rate(tmp_path):
    out = metatrain(MetaTrainConfig(**TINY, meta_lr=10.0), tmp_path / "a.safetensors", log=lambda m: None)
    card = load_weights(out).card
    reductions = card["lr_reductions"]
    assert reductions and card["stopped"] is None
    assert [r["meta_lr"] for r in reductions] == [10.0 * 0.5 ** (i + 1) for i in range(len(reductions))]
    assert all(r["epoch"] == 1 for r in reductions)  # in this recipe every divergence is in the first epoch
    history = card["validation"]["history"]
    assert sum("diverged" in h for h in history) == len(reductions)
    assert all(torch.isfinite(v).all() for v in load_weights(out).theta.values())
    # restoring means exactly that: the redone first epoch starts from the initial state, so the run equals a
    # fresh one at the final meta-learning rate
    fresh = metatrain(MetaTrainConfig(**TINY, meta_lr=reductions[-1]["meta_lr"]), tmp_path / "b.safetensors", log=lambda m: None)
    same_weights(out, fresh)


def test_divergence_beyond_the_allowed_reductions_stops_and_keeps_the_best(tmp_path):
    config = MetaTrainConfig(**TINY, meta_lr=10.0, max_lr_reductions=1)
    out = metatrain(config, tmp_path / "a.safetensors", log=lambda m: None)
    card = load_weights(out).card
    assert card["stopped"].startswith("diverged at epoch 1 after 1")
    assert card["validation"]["best_epoch"] == 0  # nothing better than the untrained rule was found


def test_divergence_check_can_be_turned_off(tmp_path):
    out = metatrain(MetaTrainConfig(**TINY, meta_lr=10.0, divergence_factor=0), tmp_path / "a.safetensors", log=lambda m: None)
    assert load_weights(out).card["lr_reductions"] == []


# -- several processes ---------------------------------------------------------------------------

DIST_FLAGS = ["--task", "quadratic", "--epochs", "2", "--runs-per-epoch", "4", "--steps", "10", "--unroll", "5",
              "--val-problems", "3", "--hidden-size", "4", "--problems-per-step", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [[], ["--unroll", "10", "--meta-grad", "es", "--es-pairs", "2"]], ids=["tbptt", "es"])
def test_two_ranks_give_the_weights_of_one_on_the_same_problems(tmp_path, estimator):
    flags = DIST_FLAGS + estimator  # a later flag wins
    one = tmp_path / "one.safetensors"
    subprocess.run(cli(*flags, "--out", str(one)), env=ENV, check=True, capture_output=True)
    two = tmp_path / "two.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "learned_optim.metatrain", "--kernel", "python", *flags, "--out", str(two)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    same_weights(one, two, exact=False)
    a, b = load_weights(one).card, load_weights(two).card
    assert a["ranks"] == 1 and b["ranks"] == 2
    for x, y in zip(a["validation"]["history"], b["validation"]["history"]):
        assert x["val"] == pytest.approx(y["val"], rel=1e-4)


def test_problems_per_step_must_split_evenly():
    with pytest.raises(ValueError, match="must divide runs_per_epoch"):
        MetaTrainConfig(runs_per_epoch=20, problems_per_step=3)
