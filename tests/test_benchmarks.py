import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from conftest import mnist_root, needs_mnist
from learned_optim import LearnedOptimizer, NetConfig, save_weights
from learned_optim.baselines import LR_GRID, baseline, compare, train, tune_lr
from learned_optim.nets import init_theta
from learned_optim.tasks import EVAL_SEEDS, make_task


@pytest.fixture
def tiny_rule(tmp_path):
    config = NetConfig(hidden_size=4)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, init_theta(config, torch.Generator().manual_seed(0)), config, {"name": "tiny"})
    return str(path)


def test_train_records_losses_before_each_step_and_stops_on_divergence():
    task = make_task("quadratic")
    problem = task.sample(0)
    losses = train(problem, baseline("SGD", 0.01), 5)
    assert losses[0] == pytest.approx(float((task.sample(0).y ** 2).sum()))
    assert (losses[1:] < losses[:-1]).all()
    diverged = train(task.sample(0), baseline("SGD", 1e3), 50)
    assert torch.isinf(diverged[-1]) and torch.isfinite(diverged[0])


def test_tuning_picks_the_best_rate_and_refuses_evaluation_seeds():
    task = make_task("quadratic")
    best, scores = tune_lr(task, "Adam", seeds=range(10_000, 10_002), steps=20)
    assert best in LR_GRID and scores[best] == min(scores.values())
    with pytest.raises(ValueError, match="TUNING_SEEDS"):
        tune_lr(task, "Adam", seeds=EVAL_SEEDS[:2], steps=5)


def test_compare_runs_every_optimizer_on_the_same_problems():
    task = make_task("quadratic")
    results = compare(task, {"a": baseline("SGD", 0.01), "b": baseline("SGD", 0.01)}, [3, 4], 6)
    assert torch.equal(results["a"]["losses"], results["b"]["losses"])
    assert results["a"]["losses"].shape == (2, 6)


@needs_mnist
def test_base_tasks_quick_writes_its_result_files(tmp_path, tiny_rule):
    from benchmarks import base_tasks

    assert base_tasks.main(["--quick", "--out", str(tmp_path), "--weights", tiny_rule]) == 0
    data = json.loads((tmp_path / "base_tasks.json").read_text())
    for key in ("command", "git_commit", "device", "wall_time_s"):
        assert key in data["provenance"]
    for task in ("quadratic", "mnist_mlp"):
        results = data["tasks"][task]["results"]
        assert f"LearnedOptimizer ({tiny_rule})" in results and "Adam (lr=1e-3, default)" in results
        assert set(data["tasks"][task]["tuning"]) == {"Adam", "RMSprop", "SGD", "NAG"}
        assert (tmp_path / f"base_tasks_{task}.png").stat().st_size > 1000
    assert "test_accuracy" in data["tasks"]["mnist_mlp"]["results"]["Adam (lr=1e-3, default)"]
    assert "| optimizer | sum of losses | final loss |" in (tmp_path / "base_tasks.md").read_text()


@needs_mnist
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]
)
def test_metatrain_speed_quick(tmp_path, device):
    from benchmarks import metatrain_speed

    assert metatrain_speed.main(["--quick", "--out", str(tmp_path), "--device", device]) == 0
    data = json.loads((tmp_path / "metatrain_speed.json").read_text())
    assert data["results"]["ours, PyTorch cell"]["optimizee_steps_per_s"] > 0
    assert data["results"]["notebook-style, PyTorch cell"]["optimizee_steps_per_s"] > 0


@pytest.mark.parametrize("argv, says", [(["--tasks", "quadratic,nope"], "unknown task(s) ['nope']"),
                                         (["--weights", "no-such-rule"], "--weights 'no-such-rule'")])
def test_demo_rejects_bad_input_as_a_usage_error(capsys, argv, says):
    from learned_optim import demo
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_demo_runs_and_prints_the_comparison(capsys, tiny_rule):
    from learned_optim import demo

    assert demo.main(["--weights", tiny_rule, "--steps", "5", "--seeds", "2", "--tune-seeds", "1", "--tasks", "quadratic"]) == 0
    out = capsys.readouterr().out
    assert "LearnedOptimizer" in out and "Adam (lr=1e-3, its default)" in out and "tuned" in out


def test_demo_runs_without_mnist_on_the_next_dataset_found(capsys, tmp_path):
    """A fresh machine has no MNIST: the demo trains its MLP on Fashion-MNIST (Debian's package) or the digits, and
    names the default rule by what it is, not by a file path."""
    from learned_optim import demo
    from learned_optim.pretrained import aliases
    from learned_optim.tasks.data import available_datasets

    found = available_datasets(tmp_path)
    if not found:
        pytest.skip("neither Fashion-MNIST nor scikit-learn here")
    assert "mnist" not in found
    assert demo.main(["--steps", "3", "--seeds", "2", "--tune-seeds", "1", "--tasks", "mlp", "--data-root",
                      str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"MLP 1x20 sigmoid on {found[0]}" in out and "test accuracy" in out
    assert f"weights: default ({aliases()['default']})" in out and "/" not in out.splitlines()[1]


def test_quick_never_writes_over_the_committed_results(capsys):
    """--quick without --out writes to a new temporary folder and says where; benchmarks/results/ is left alone."""
    from benchmarks import step_cost
    from benchmarks.common import DEFAULT_OUT

    before = {path: path.stat().st_mtime_ns for path in DEFAULT_OUT.glob("step_cost*")}
    assert step_cost.main(["--quick", "--sizes", "1e3"]) == 0
    assert {path: path.stat().st_mtime_ns for path in DEFAULT_OUT.glob("step_cost*")} == before
    written = Path(capsys.readouterr().err.split("--quick: writing to ")[1].split()[0])
    assert (written / "step_cost.json").is_file() and not written.is_relative_to(DEFAULT_OUT)
    shutil.rmtree(written)


@needs_mnist
def test_deep_wide_quick_writes_tables_plots_and_a_summary(tmp_path, tiny_rule):
    from benchmarks import deep_wide

    assert deep_wide.main(["--quick", "--out", str(tmp_path), "--weights", tiny_rule]) == 0
    data = json.loads((tmp_path / "deep_wide.json").read_text())
    assert set(data["cells"]) == {"1x20", "2x20"} and data["settings"]["horizons"] == [5, 10]
    for cell in data["cells"].values():
        for horizon in ("5", "10"):
            results = cell["results"][horizon]
            assert {"Adam", "RMSprop", "SGD", "NAG"} == {k.split(" (")[0] for k in results if k.endswith("tuned)")}
            assert f"LearnedOptimizer ({tiny_rule})" in results and "Adam (lr=1e-3, default)" in results
            # the shorter horizon is read off the same runs: its curve is the longer one's prefix
        learned = f"LearnedOptimizer ({tiny_rule})"
        assert cell["results"]["5"][learned]["curve_mean"] == cell["results"]["10"][learned]["curve_mean"][:5]
    summary = data["summary"][f"{tiny_rule}@10"]
    assert summary["cells"] == 2 and 0 <= summary["beats_tuned_adam"] <= 2
    assert (tmp_path / "deep_wide_10.png").stat().st_size > 1000
    for key in ("command", "git_commit", "device", "wall_time_s"):
        assert key in data["provenance"]
    # --resume reuses the finished cells
    (tmp_path / "deep_wide.json").unlink()
    assert deep_wide.main(["--quick", "--out", str(tmp_path), "--weights", tiny_rule, "--resume"]) == 0
    again = json.loads((tmp_path / "deep_wide.json").read_text())
    assert again["cells"] == data["cells"]
    # ... and the report says what the kept cells cost when they ran, not only its own (near 0) wall time
    kept = [json.loads((tmp_path / "deep_wide_cells" / f"{c}.json").read_text()) for c in ("1x20", "2x20")]
    assert all(k["compute_time_s"] > 0 and k["git_commit"] for k in kept)
    assert again["provenance"]["wall_time_s"] < sum(k["compute_time_s"] for k in kept)
    took = f"took {sum(k['compute_time_s'] for k in kept):.0f} s of compute"
    assert took in again["provenance"]["kept_runs"] and took in (tmp_path / "deep_wide.md").read_text()


def test_deep_wide_cells_parse():
    from benchmarks.deep_wide import CELLS, cell_name, parse_cells

    assert len(CELLS) == 13 and parse_cells("2x100,1x20-relu") == [(2, 100, "sigmoid"), (1, 20, "relu")]
    with pytest.raises(ValueError, match="Invalid cell"):
        parse_cells("wide")
    assert cell_name((1, 20, "relu")) == "1x20-relu"


def test_step_cost_quick_writes_its_result_files(tmp_path):
    from benchmarks import step_cost
    from learned_optim import load_weights

    assert step_cost.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "step_cost.json").read_text())
    row = data["rows"][0]
    learned = row["optimizers"]["LearnedOptimizer"]
    config = load_weights("default").config  # float32 state: the LSTM's h and c per layer, and any moving averages
    assert learned["state_bytes_per_parameter"] == 4 * sum(config.state_width(n) for n in config.state_names)
    assert row["optimizers"]["Adam (foreach)"]["state_bytes_per_parameter"] == 8
    assert 0 < learned["fraction_of_matmul_throughput"] and learned["step_s"] > 0
    from learned_optim.features import num_features
    from learned_optim.pretrained import aliases
    flops = step_cost.rule_flops_per_coordinate(config, num_features(config.preprocess))
    hidden = config.hidden_size
    assert data["rule_flops_per_coordinate"] == flops > 2 * 4 * hidden * (hidden + num_features(config.preprocess))
    assert data["weights"] == {"name": "default", "resolved": aliases()["default"],
                               "sha256": load_weights("default").sha256}  # the result names the rule it timed
    # the roofline bound: the larger of the compute time at matmul speed and the traffic at copy bandwidth
    state_bytes = learned["state_bytes_per_parameter"]
    n, bytes_each = row["parameters"], step_cost.bytes_per_coordinate(state_bytes)
    assert bytes_each == 2 * state_bytes + 12 and data["copy_bytes_per_s"] > 0
    expected = max(data["rule_flops_per_coordinate"] * n / data["matmul_flops_per_s"], bytes_each * n / data["copy_bytes_per_s"])
    assert learned["roofline_s"] == pytest.approx(expected) and learned["step_over_roofline"] == pytest.approx(learned["step_s"] / expected)
    assert "step / roofline" in (tmp_path / "step_cost.md").read_text()
    # paired readings: one per repeat, each a step's FLOP rate over a matmul's timed just before it
    pairs = learned["paired_fractions_of_matmul"]
    assert len(pairs) == 2  # --quick's repeats
    assert all(0 < f < 5 for f in pairs) and learned["fraction_of_matmul_throughput_paired"] == statistics.median(pairs)
    assert "of matmul, paired" in (tmp_path / "step_cost.md").read_text()


def test_paired_fractions_compare_each_step_with_the_matmul_timed_beside_it(monkeypatch):
    """A host twice as slow during the second pair slows the matmul and the step alike: the ratios stay equal."""
    from benchmarks import step_cost

    clock = iter([0.0, 1.0, 1.0, 3.0, 10.0, 12.0, 12.0, 16.0])  # matmul 1 s, step 2 s; then matmul 2 s, step 4 s
    monkeypatch.setattr(step_cost.time, "perf_counter", lambda: next(clock))
    n = 2048
    fractions = step_cost.paired_fractions(lambda: None, 2 * n**3, "cpu", 2)
    assert fractions == [pytest.approx(0.5), pytest.approx(0.5)]


def test_step_cost_passes_its_chunk_size_to_the_learned_optimizers():
    from benchmarks import step_cost

    made = [make([torch.nn.Parameter(torch.zeros(3))]) for make in step_cost.optimizers("cpu", chunk_size=7).values()]
    learned = [opt for opt in made if isinstance(opt, LearnedOptimizer)]
    assert len(learned) == 2 and all(opt.chunk_size == 7 for opt in learned)
    assert {opt.implementation for opt in learned} == {"fast", "torch"}


@needs_mnist
def test_paper_sweep_quick_meta_trains_each_rate_and_reuses_finished_runs(tmp_path):
    from benchmarks import paper

    assert paper.main(["--quick", "--part", "sweep", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "paper.json").read_text())
    assert [(r["grid"], r["meta_lr"]) for r in data["sweep"].values()] == [("fine", 0.002), ("fine", 0.003), ("coarse", 1.0), ("coarse", 0.3)]
    assert all(r["best_validation"] <= r["untrained_validation"] for r in data["sweep"].values())
    runs = sorted((tmp_path / "paper_sweep").glob("*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    assert paper.main(["--quick", "--part", "sweep", "--out", str(tmp_path)]) == 0  # a second call trains nothing
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps
    assert "| fine | 0.002 | 1 |" in (tmp_path / "paper.md").read_text()
    assert (tmp_path / "paper_sweep.png").exists() and data["sweep"]["fine 0.002"]["history"][0]["epoch"] == 0


def test_random_search_samples_its_ranges_and_keeps_the_best():
    from learned_optim.baselines import SEARCH_SPACES, random_search

    task = make_task("rosenbrock")
    best, tried = random_search(task, "Momentum", samples=12, seeds=range(10_000, 10_002), steps=30)
    assert len(tried) == 12 and best == min(tried, key=lambda t: t[1])[0]
    for config, _ in tried:
        assert 1e-5 <= config["lr"] <= 1.0 and 0.5 <= config["momentum"] <= 1 - 1e-3
    assert len({round(c["lr"], 12) for c, _ in tried}) == 12  # really sampled
    again, _ = random_search(task, "Momentum", samples=12, seeds=range(10_000, 10_002), steps=30)
    assert again == best  # reproducible for a search seed
    for name in SEARCH_SPACES:
        random_search(task, name, samples=2, seeds=[10_000], steps=5)
    with pytest.raises(ValueError, match="TUNING_SEEDS"):
        random_search(task, "Adam", samples=1, seeds=[0], steps=5)


@needs_mnist
def test_paper_variants_reuse_the_deep_wide_cells(tmp_path):
    from benchmarks import deep_wide, paper

    assert deep_wide.main(["--quick", "--out", str(tmp_path)]) == 0
    cell_file = tmp_path / "deep_wide_cells" / "2x20.json"
    before = (cell_file.stat().st_mtime_ns, json.loads(cell_file.read_text()))
    assert paper.main(["--quick", "--part", "variants", "--out", str(tmp_path)]) == 0
    assert (cell_file.stat().st_mtime_ns, json.loads(cell_file.read_text())) == before  # not run again
    variants = json.loads((tmp_path / "paper.json").read_text())["variants"]
    assert variants["2 layers"]["results"] == before[1]["result"]["results"]["10"]
    assert {v["cell"] for v in variants.values()} == {"1x40", "2x20", "1x20-relu", "1x20"}
    assert (tmp_path / "deep_wide_cells" / "1x40.json").exists()  # the cells deep_wide had not run are now kept
    assert (tmp_path / "paper_variants.png").stat().st_size > 10_000 and "![paper_variants.png]" in (tmp_path / "paper.md").read_text()


@needs_mnist
def test_state_precision_quick_compares_each_state_dtype_on_the_same_seeds(tmp_path):
    from benchmarks import state_precision

    assert state_precision.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "state_precision.json").read_text())
    assert set(data["tasks"]) == {"quadratic (l2l-quadratic)", "mnist_mlp (l2l-mnist)", "deep_wide 1x20 (default)"}
    block = data["tasks"]["deep_wide 1x20 (default)"]["10"]
    assert set(block) == {"float32", "bfloat16", "float16"}
    assert block["float32"]["final_loss_ratio_to_float32"] == 1.0
    assert block["float32"]["ratio_se"] == 0.0  # float32 against itself: no paired difference
    reference = block["float32"]["final_loss_per_seed"]
    for name in ("bfloat16", "float16"):  # a real, different run: not the float32 numbers again, but close
        ratio = block[name]["final_loss_ratio_to_float32"]
        assert ratio != 1.0 and 0.8 < ratio < 1.2
        seeds = block[name]["final_loss_per_seed"]
        assert len(seeds) == len(reference) == 2
        assert ratio == pytest.approx(sum(seeds) / sum(reference))
        assert block[name]["ratio_se"] > 0
    assert "| deep_wide 1x20 (default) | 5 | float32 |" in (tmp_path / "state_precision.md").read_text()
    # the MNIST tasks are also read on the 10,000 test images after each horizon's steps, paired the same way
    for task in ("mnist_mlp (l2l-mnist)", "deep_wide 1x20 (default)"):
        for h, by_dtype in data["tasks"][task].items():
            tests = {name: r["test_loss_per_seed"] for name, r in by_dtype.items()}
            assert len(tests["float32"]) == 2 and all(0 < t < 5 for t in tests["float32"])
            for name, r in by_dtype.items():
                assert 0 < r["test_accuracy"]["mean"] <= 1
                assert r["test_loss_ratio_to_float32"] == pytest.approx(sum(tests[name]) / sum(tests["float32"]))
    assert "test_loss" not in data["tasks"]["quadratic (l2l-quadratic)"]["10"]["float32"]  # nothing to evaluate
    assert "against 2% (test loss)" in (tmp_path / "state_precision.md").read_text()

    # each task was kept as it finished; --resume reuses a kept task of the same settings instead of running it
    kept = tmp_path / "state_precision_tasks" / "deep_wide_1x20_default.json"
    stored = json.loads(kept.read_text())
    assert stored["result"] == data["tasks"]["deep_wide 1x20 (default)"] and stored["compute_time_s"] > 0
    assert "of compute when run" in (tmp_path / "state_precision.md").read_text()
    stored["result"]["10"]["float32"]["final_loss"]["mean"] = 123.0  # a marker only a reuse can return
    kept.write_text(json.dumps(stored))
    assert state_precision.main(["--quick", "--no-base-tasks", "--resume", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "state_precision.json").read_text())
    assert set(again["tasks"]) == {"deep_wide 1x20 (default)"}
    assert again["tasks"]["deep_wide 1x20 (default)"]["10"]["float32"]["final_loss"]["mean"] == 123.0
    assert again["compute"]["deep_wide 1x20 (default)"]["compute_time_s"] == stored["compute_time_s"]
    # other settings (here one evaluation seed) run the task again
    assert state_precision.main(["--quick", "--no-base-tasks", "--resume", "--eval-seeds", "1", "--out", str(tmp_path)]) == 0
    rerun = json.loads((tmp_path / "state_precision.json").read_text())["tasks"]["deep_wide 1x20 (default)"]["10"]
    assert len(rerun["float32"]["final_loss_per_seed"]) == 1 and rerun["float32"]["final_loss"]["mean"] != 123.0
    # one cell with fewer seeds than the rest: that 1-seed run is reused, and the table says so
    assert state_precision.main(["--quick", "--no-base-tasks", "--resume", "--cell-seeds", "1x20=1", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "state_precision.json").read_text())["tasks"]["deep_wide 1x20 (default)"]["10"]
    assert again == rerun
    assert "| deep_wide 1x20 (default), 1 seeds | 5 | float32 |" in (tmp_path / "state_precision.md").read_text()
    with pytest.raises(SystemExit):
        state_precision.main(["--quick", "--cell-seeds", "1x20=0", "--out", str(tmp_path)])


@needs_mnist
def test_state_precision_seed_shards_assemble_to_the_unsharded_run(tmp_path):
    """Processes with --seed-shard I/K each keep their seeds and stop; a last --resume run assembles the same
    report as one process running every seed, and a larger seed count reuses the seeds already kept."""
    from benchmarks import state_precision

    common = ["--quick", "--no-base-tasks", "--eval-seeds", "3"]
    assert state_precision.main([*common, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "state_precision.json").read_text())["tasks"]
    sharded = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        assert state_precision.main([*common, "--seed-shard", shard, "--out", str(sharded)]) == 0
        assert not (sharded / "state_precision.json").exists()  # a shard keeps seeds, reports nothing
    kept = sorted(p.name for p in (sharded / "state_precision_tasks" / "deep_wide_1x20_default").iterdir())
    assert kept == ["seed_0.json", "seed_1.json", "seed_2.json"]
    assert state_precision.main([*common, "--resume", "--out", str(sharded)]) == 0
    assert json.loads((sharded / "state_precision.json").read_text())["tasks"] == whole
    # one more seed: the three kept are reused (a marker in one shows it), only seed 3 runs
    seed_0 = sharded / "state_precision_tasks" / "deep_wide_1x20_default" / "seed_0.json"
    record = json.loads(seed_0.read_text())
    record["result"]["losses"]["float32"][9] = 50.0
    seed_0.write_text(json.dumps(record))
    assert state_precision.main(["--quick", "--no-base-tasks", "--eval-seeds", "4", "--resume", "--out", str(sharded)]) == 0
    four = json.loads((sharded / "state_precision.json").read_text())["tasks"]["deep_wide 1x20 (default)"]["10"]
    assert four["float32"]["final_loss_per_seed"][0] == 50.0 and len(four["float32"]["final_loss_per_seed"]) == 4
    for bad in ("2/2", "x/2", "0/0"):
        with pytest.raises(SystemExit):
            state_precision.main([*common, "--seed-shard", bad, "--out", str(tmp_path / "bad")])


def test_state_precision_verdict_separates_noise_from_a_real_excess():
    from benchmarks.state_precision import verdict

    assert verdict(1.0199, 0.0) == "within 2%"
    assert verdict(0.95, 0.5) == "within 2%"
    assert verdict(1.03, 0.002) == "over 2% (> 2 s.e.)"
    assert verdict(1.03, 0.01) == "over 2%, within 2 s.e."


@needs_mnist
def test_levers_quick_compares_each_lever_with_deep_wides_tuned_adam(tmp_path):
    from benchmarks import deep_wide, levers

    assert levers.main(["--quick", "--out", str(tmp_path), "--levers", "l2l-mnist,tensor-1.5e-3"]) == 0
    data = json.loads((tmp_path / "levers.json").read_text())
    assert list(data["cells"]) == ["1x20", "2x20"]
    cell = json.loads((tmp_path / "deep_wide_cells" / "1x20.json").read_text())["result"]["results"]["10"]
    block = data["cells"]["1x20"]
    # l2l-mnist and the Adams are deep_wide's runs on the same seeds, not new ones
    assert block["l2l-mnist"]["10"] == cell[levers.SHIPPED_KEY]
    assert block["Adam 1e-3"]["10"] == cell["Adam (lr=1e-3, default)"]
    assert block["tuned Adam"]["10"]["final_loss"] == cell[block["tuned Adam"]["10"]["label"]]["final_loss"]
    # the normalized rule is a different run
    assert block["tensor-1.5e-3"]["10"]["final_loss"] != block["l2l-mnist"]["10"]["final_loss"]
    summary = data["summary"]["tensor-1.5e-3@10"]
    ratios = summary["final_loss_ratio_to_tuned_adam"]
    assert set(ratios) == {"1x20", "2x20"} and summary["worst_ratio"] == max(ratios.values())
    assert summary["beats_tuned_adam"] == sum(r <= 1 for r in ratios.values())
    text = (tmp_path / "levers.md").read_text()
    assert "| tensor-1.5e-3 @ 10 |" not in text and "| tensor-1.5e-3@10 |" in text
    assert (tmp_path / "levers_10.png").exists()
    # a second run reads its cached runs
    stamp = (tmp_path / "levers_cells" / "2x20--tensor-1.5e-3.json").stat().st_mtime
    assert levers.main(["--quick", "--out", str(tmp_path), "--levers", "tensor-1.5e-3", "--report", "only_tensor"]) == 0
    assert (tmp_path / "levers_cells" / "2x20--tensor-1.5e-3.json").stat().st_mtime == stamp
    # --report names a second set of files; the first set is left as it was
    assert json.loads((tmp_path / "only_tensor.json").read_text())["levers"] == ["tensor-1.5e-3"]
    assert (tmp_path / "only_tensor_10.png").exists() and "only_tensor_10.png" in (tmp_path / "only_tensor.md").read_text()
    assert json.loads((tmp_path / "levers.json").read_text())["levers"] == ["l2l-mnist", "tensor-1.5e-3"]


@needs_mnist
def test_levers_reuse_reports_reads_a_committed_deep_wide_report_of_the_same_settings(tmp_path, monkeypatch):
    from benchmarks import deep_wide, levers

    assert deep_wide.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "deep_wide.json").read_text())
    assert report["settings"]["rules_sha256"] == {"l2l-mnist": levers.load_weights("l2l-mnist").sha256}
    for kept in (tmp_path / "deep_wide_cells").iterdir():  # a fresh clone: the report is committed, the cache is not
        kept.unlink()

    def no_runs(*args, **kwargs):
        raise AssertionError("deep_wide's runs were repeated")

    monkeypatch.setattr(deep_wide, "run_cell", no_runs)
    assert levers.main(["--quick", "--out", str(tmp_path), "--levers", "l2l-mnist", "--reuse-reports"]) == 0
    data = json.loads((tmp_path / "levers.json").read_text())
    for name in ("1x20", "2x20"):
        assert data["cells"][name]["l2l-mnist"]["10"] == report["cells"][name]["results"]["10"][levers.SHIPPED_KEY]
    assert "2 of 2 were read from the committed deep_wide.json" in data["provenance"]["kept_runs"]
    # without the flag, or when the report ran other settings, the runs are not taken from it
    for kept in (tmp_path / "deep_wide_cells").iterdir():
        kept.unlink()
    with pytest.raises(AssertionError, match="repeated"):
        levers.main(["--quick", "--out", str(tmp_path), "--levers", "l2l-mnist"])
    report["settings"]["eval_seeds"] = 3
    (tmp_path / "deep_wide.json").write_text(json.dumps(report))
    with pytest.raises(AssertionError, match="repeated"):
        levers.main(["--quick", "--out", str(tmp_path), "--levers", "l2l-mnist", "--reuse-reports"])
    report["settings"]["eval_seeds"], report["settings"]["rules_sha256"] = 2, {"l2l-mnist": "0" * 64}
    (tmp_path / "deep_wide.json").write_text(json.dumps(report))
    with pytest.raises(AssertionError, match="repeated"):
        levers.main(["--quick", "--out", str(tmp_path), "--levers", "l2l-mnist", "--reuse-reports"])


def test_seed_kept_fills_only_an_empty_cache_from_a_matching_report(tmp_path):
    from benchmarks.common import compute_note, seed_kept

    report, cache = tmp_path / "r.json", tmp_path / "cache" / "c.json"
    assert not seed_kept(cache, {"s": 1}, report, {"a": 1}, lambda d: d["x"])  # no report
    report.write_text(json.dumps({"settings": {"a": 1, "b": 2}, "x": {"v": 3}, "provenance": {"git_commit": "abc"}}))
    assert not seed_kept(cache, {"s": 1}, report, {"a": 2}, lambda d: d["x"])  # other settings
    assert not seed_kept(cache, {"s": 1}, report, {"c": None}, lambda d: d["x"])  # a setting it lacks
    assert not seed_kept(cache, {"s": 1}, report, {"a": 1}, lambda d: None) and not cache.exists()  # not in it
    assert seed_kept(cache, {"s": 1}, report, {"a": 1}, lambda d: d["x"])
    record = json.loads(cache.read_text())
    assert record == {"settings": {"s": 1}, "result": {"v": 3}, "git_commit": "abc", "seeded_from": "r.json"}
    assert not seed_kept(cache, {"s": 9}, report, {"a": 1}, lambda d: d["x"])  # never over a kept run
    assert json.loads(cache.read_text()) == record
    timed = {"settings": {}, "result": {}, "git_commit": "def", "compute_time_s": 7.0}
    note = compute_note([record, timed])
    assert "took 7 s of compute" in note and "1 of 2 were read from the committed r.json of commit `abc`" in note
    assert "predate" not in note and "predate" not in compute_note([record])


def test_levers_refuses_an_unknown_lever(capsys):
    from benchmarks import levers

    with pytest.raises(SystemExit) as exit_info:
        levers.main(["--quick", "--levers", "nope"])
    assert exit_info.value.code == 2 and "unknown lever" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        levers.main(["--quick", "--report", "../elsewhere"])
    assert exit_info.value.code == 2 and "invalid --report" in capsys.readouterr().err


@needs_mnist
def test_deep_wide_keeps_a_cells_tuning_apart_so_a_crash_does_not_lose_it(tmp_path, tiny_rule):
    from benchmarks import deep_wide

    argv = ["--quick", "--weights", tiny_rule, "--cells", "1x20", "--out", str(tmp_path), "--resume"]
    assert deep_wide.main(argv) == 0
    tuning_file = tmp_path / "deep_wide_cells" / "1x20.tuning.json"
    stored = json.loads(tuning_file.read_text())
    cell = json.loads((tmp_path / "deep_wide_cells" / "1x20.json").read_text())["result"]
    assert stored["tuned_lr"] == cell["tuned_lr"]
    # as after a crash in the runs: the cell is gone, its tuning is there (marked, to see it reused)
    (tmp_path / "deep_wide_cells" / "1x20.json").unlink()
    other = next(lr for lr in LR_GRID[::3] if lr != stored["tuned_lr"]["Adam"]["10"])
    stored["tuned_lr"]["Adam"]["10"] = other
    tuning_file.write_text(json.dumps(stored))
    assert deep_wide.main(argv) == 0
    again = json.loads((tmp_path / "deep_wide_cells" / "1x20.json").read_text())["result"]
    assert again["tuned_lr"]["Adam"]["10"] == other
    assert f"Adam (lr={other:g}, tuned)" in again["results"]["10"]
    # other settings (the data root named): tuned afresh, the mark gone
    assert deep_wide.main(argv + ["--data-root", str(mnist_root())]) == 0
    fresh = json.loads(tuning_file.read_text())
    assert fresh["settings"]["data_root"] == str(mnist_root()) and fresh["tuned_lr"] == cell["tuned_lr"]


def test_grid_summary_counts_the_grid_targets_terms():
    """At most tuned Adam's counts a tie; below Adam at 1e-3 is strict; a diverged run is the worst ratio."""
    from benchmarks.common import grid_summary

    s = grid_summary({"a": (1.0, 1.0, 1.0), "b": (0.5, 1.0, 2.0), "c": (float("nan"), 1.0, 1.0)})
    assert s["cells"] == 3 and s["beats_tuned_adam"] == 2 and s["beats_default_adam"] == 1
    assert s["final_loss_ratio_to_tuned_adam"]["b"] == 0.5 and s["worst_ratio"] == float("inf")


def test_kept_run_reuses_equal_settings_and_says_what_old_records_lack(tmp_path):
    from benchmarks.common import compute_note, kept_run

    calls = []
    path = tmp_path / "run.json"
    first = kept_run(path, {"a": 1}, lambda: calls.append(1) or {"x": 2.0}, commit="abc")
    assert first["result"] == {"x": 2.0} and first["git_commit"] == "abc" and first["compute_time_s"] >= 0
    assert kept_run(path, {"a": 1}, lambda: calls.append(1) or {"x": 3.0}) == first and calls == [1]
    assert kept_run(path, {"a": 2}, lambda: calls.append(1) or {"x": 3.0})["result"] == {"x": 3.0} and calls == [1, 1]
    assert kept_run(path, {"a": 2}, lambda: calls.append(1) or {"x": 4.0}, reuse=False)["result"] == {"x": 4.0}
    old = {"settings": {}, "result": {}}  # kept before the commit and time were stored
    assert "predate" in compute_note([old]) and compute_note([]) == ""
    note = compute_note([{**first, "compute_time_s": 10.0}, {**first, "compute_time_s": 5.4, "git_commit": "def"}, old])
    assert "took 15 s of compute" in note and "`abc`, `def`" in note and "1 of 3 predate" in note


def test_cpu_model_names_the_widest_vector_instructions():
    """Result files name the CPU and its vector width: step costs are read against a matmul that AVX-512 speeds up."""
    from benchmarks.common import cpu_model

    text = "processor : 0\nmodel name : Some CPU\nflags : fpu sse2 avx avx2 {}\n\nprocessor : 1\nmodel name : Other\n"
    assert cpu_model(text.format("avx512f avx512bw")) == "Some CPU, AVX-512"  # the first processor's lines
    assert cpu_model(text.format("")) == "Some CPU, AVX2"
    assert cpu_model("model name : Plain\nflags : fpu sse2\n") == "Plain"
    assert cpu_model("") == ""


def test_long_horizon_quick_tunes_baselines_and_reports_both_parts(tmp_path):
    """The suite's runner: tuned baselines per schedule and horizon, the learned rule beside them, a stability verdict
    per task, the runs kept (a second call runs nothing)."""
    pytest.importorskip("sklearn")
    from benchmarks import long_horizon

    argv = ["--quick", "--tasks", "regression_fullbatch,linreg_illcond", "--out", str(tmp_path)]
    assert long_horizon.main(argv) == 0
    data = json.loads((tmp_path / "long_horizon.json").read_text())
    task = data["tasks"]["regression_fullbatch"]
    assert set(task["results"]) == {"30", "60"}
    summary = task["results"]["60"]["summary"]
    assert {"default (constant)", "default (cosine)", "Adam (constant, lr=1e-3)"} <= summary.keys()
    assert sum(name.endswith("tuned)") for name in summary) == 6  # Adam, AdamW, SGD x constant, cosine
    assert set(task["tuned_lr"]) == {f"{f}/{s}/{h}" for f in ("Adam", "AdamW", "SGD") for s in ("constant", "cosine")
                                     for h in (30, 60)}
    verdict = long_horizon.verdicts(task, "default", 60)
    assert verdict["vs_tuned_adam"] > 0 and isinstance(verdict["ends_near_best"], bool)
    text = (tmp_path / "long_horizon.md").read_text()
    assert "dev part" in text and "held_out part" in text and (tmp_path / "long_horizon_long.png").exists()
    assert "at or below tuned AdamW on" in text and "at or below tuned SGD on" in text
    kept = sorted((tmp_path / "long_horizon_runs").rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in kept]
    assert long_horizon.main(argv) == 0
    assert [p.stat().st_mtime_ns for p in kept] == stamps  # every run was kept, none rerun


def test_long_horizon_verdicts_read_memorized_losses_as_the_floor():
    """Two classification runs that both memorized their data (1e-7 and 1e-6 nats) tie; regression losses are
    compared as they are, and a rule that ends higher loses."""
    from benchmarks import long_horizon
    from learned_optim.tasks import SUITE

    assert {spec.loss for spec in SUITE.values()} <= set(long_horizon.MEMORIZED)  # every task's loss has its floor

    def task(loss, mine, adam):
        entry = lambda value: {"final_train_loss": {"mean": value, "se": 0.0}, "param_norm": 1.0,  # noqa: E731
                               "ends_near_best": True, "never_above_start": True}
        summary = {"Adam (constant, lr=0.01, tuned)": entry(adam), "Adam (cosine, lr=0.01, tuned)": entry(adam * 2),
                   "AdamW (constant, lr=0.01, tuned)": entry(adam), "SGD (constant, lr=0.1, tuned)": entry(adam),
                   "Adam (constant, lr=1e-3)": entry(adam * 3), "r (constant)": entry(mine), "r (cosine)": entry(mine)}
        return {"loss": loss, "results": {"10": {"summary": summary}}}

    assert long_horizon.verdicts(task("cross_entropy", 1e-6, 1e-7), "r", 10)["vs_tuned_adam"] == 1.0
    assert long_horizon.verdicts(task("cross_entropy", 1e-3, 1e-7), "r", 10)["vs_tuned_adam"] == pytest.approx(10)
    assert long_horizon.verdicts(task("mse", 1e-6, 1e-7), "r", 10)["vs_tuned_adam"] == pytest.approx(10)
    assert long_horizon.verdicts(task("mse", 1e-7, 1e-6), "r", 10)["vs_adam_1e-3"] == pytest.approx(1 / 30)


def test_long_horizon_caps_horizons_for_all_tasks_or_one():
    import argparse

    from benchmarks import long_horizon

    assert long_horizon._caps("5000,fmnist_resnet=1000") == {"": 5000, "fmnist_resnet": 1000}
    assert long_horizon._caps("") == {}
    for bad in ("nonesuch=10", "fmnist_resnet=0", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            long_horizon._caps(bad)


def test_long_horizon_runs_every_task_at_the_horizons_given(tmp_path):
    """--horizons replaces each task's own step counts (the tuning, the runs and the report follow), then --max-horizon
    caps them; a bad list is refused."""
    import argparse

    from benchmarks import long_horizon

    argv = ["--tasks", "regression_fullbatch", "--horizons", "40,20", "--max-horizon", "30", "--baselines", "Adam",
            "--eval-seeds", "1", "--out", str(tmp_path), "--report", "r"]
    assert long_horizon.main(argv) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["settings"]["horizons"] == [20, 40]
    task = data["tasks"]["regression_fullbatch"]
    assert set(task["results"]) == {"20", "30"} and "Adam/cosine/30" in task["tuned_lr"]
    assert "20 / 30" in (tmp_path / "r.md").read_text()
    assert long_horizon._horizons("100000") == [100000]
    for bad in ("", "0,10", "10,20,30", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            long_horizon._horizons(bad)


def test_without_correction_keeps_the_step_size_and_steps_along_adams_direction():
    """Setting a residual rule's correction to zero leaves its LSTM state and step size s as they were (the readout
    does not feed back), and its update is then -step · exp(s) · m̂/√v̂ exactly; the shipped weights are untouched."""
    from benchmarks.residual_correction import without_correction
    from learned_optim import features, load_weights, nets

    shipped = load_weights("default")
    before = {k: v.clone() for k, v in shipped.theta.items()}
    off = without_correction(shipped)
    assert all(torch.equal(before[k], shipped.theta[k]) for k in before)
    assert off.sha256 != shipped.sha256 and off.config == shipped.config
    config, generator = shipped.config, torch.Generator().manual_seed(3)
    state_on = state_off = nets.init_state(config, 500)
    changed = False
    for t in range(1, 6):
        grad = torch.randn(500, generator=generator) * 10.0 ** torch.randint(-6, 1, (500,), generator=generator)
        x, _ = features.moment_features(grad, state_off[0], t)  # the rule's inputs, from the moments before the step
        u_on, state_on = nets.rule_step(shipped.theta, grad, state_on, config, step_count=t)
        u_off, state_off = nets.rule_step(off.theta, grad, state_off, config, step_count=t)
        assert all(torch.equal(a, b) for a, b in zip(state_on, state_off))
        h = state_off[-2]
        s = (h @ off.theta["readout.w"][1] + off.theta["readout.b"][1]).clamp(-nets.RESIDUAL_CLAMP, nets.RESIDUAL_CLAMP)
        torch.testing.assert_close(u_off, -nets.nominal_step(config, t) * s.exp() * x[:, 0])
        changed |= not torch.allclose(u_on, u_off)
    assert changed  # the shipped rule's correction is not zero


def test_residual_correction_quick_compares_both_variants_on_the_same_seeds(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from benchmarks import residual_correction

    assert residual_correction.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "residual_correction.json").read_text())
    assert set(data["tasks"]) == {"regression_fullbatch"}
    assert [float(k) for k in data["floor"]] == pytest.approx(residual_correction.FLOOR_LRS)
    for pair in [*data["tasks"].values(), *data["floor"].values()]:
        assert set(pair) == set(residual_correction.VARIANTS)
        for result in pair.values():
            assert not result["diverged"] and -1.0 <= result["lag1_cosine"][0] <= 1.0
    # a smaller lr moves less in 60 steps: the loss ends higher
    floor = data["floor"]
    assert floor["0.1"]["shipped"]["train_loss"][0] > floor["1"]["shipped"]["train_loss"][0]
    assert "correction off" in (tmp_path / "residual_correction.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        residual_correction.main(["--quick", "--weights", "l2l-mlp-distill", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "residual" in capsys.readouterr().err


def test_long_horizon_marks_every_ratio_the_rule_loses():
    from benchmarks.long_horizon import _ratio_text

    assert _ratio_text(1.2) == "1.20 **loses**" and _ratio_text(0.97) == "0.97" and _ratio_text(1.0) == "1.00"
    assert _ratio_text(float("nan")) == "—"  # a baseline that was not run
