"""How the C++ kernels are built and cached (no compiler needed for these)."""

from __future__ import annotations

import os
import time

import pytest

from learned_optim import cpp_build as kernels

CPUINFO = """processor\t: {n}
model name\t: Some CPU 9000
cpu MHz\t\t: {mhz}
flags\t\t: fpu sse2 avx avx2 fma{extra}
"""


def cpuinfo(extra: str = "", cores: int = 2) -> str:
    return "\n".join(CPUINFO.format(n=n, mhz=2400 + 37 * n, extra=extra) for n in range(cores))


def test_the_cpu_tag_follows_the_instruction_set_and_nothing_else():
    tag = kernels.cpu_tag(cpuinfo())
    assert len(tag) == 8 and int(tag, 16) >= 0
    assert kernels.cpu_tag(cpuinfo()) == tag
    assert kernels.cpu_tag(cpuinfo(cores=16)) == tag  # core count and clock readings do not matter
    assert kernels.cpu_tag(cpuinfo(" avx512f")) != tag  # another instruction set: another build
    assert kernels.cpu_tag(cpuinfo().replace("Some CPU 9000", "Other CPU 1")) != tag


def test_builds_are_cached_per_cpu():
    name = kernels.module_name("rule_step")
    assert name == f"learned_optim_rule_step_{kernels.cpu_tag()}"
    if not kernels.available("rule_step"):
        pytest.skip(f"no kernel build here: {kernels.build_error('rule_step')}")
    built = kernels.module("rule_step").__file__  # torch's cache: <root>/<module name>/<module name>.so
    assert os.path.basename(os.path.dirname(built)) == name


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    """A killed build leaves <build dir>/lock, on which torch waits forever; an old lock is removed."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "learned_optim_test" / "lock"
    lock.parent.mkdir()
    lock.touch()
    assert not kernels.clear_stale_lock("learned_optim_test") and lock.exists()  # a build may be running
    old = time.time() - kernels.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="stale build lock"):
        assert kernels.clear_stale_lock("learned_optim_test")
    assert not lock.exists()
    assert not kernels.clear_stale_lock("learned_optim_test")  # nothing left to remove


def test_a_build_says_so_on_stderr_and_a_cached_one_is_quiet(monkeypatch, capsys):
    """The first step must not wait in silence: a build that is not in the cache announces itself and its end."""
    import torch.utils.cpp_extension as extension

    built = object()
    monkeypatch.setattr(extension, "load", lambda **kwargs: built)
    monkeypatch.delenv("LEARNED_OPTIM_QUIET", raising=False)
    for cached in (False, True):
        monkeypatch.setattr(kernels, "_modules", {})
        monkeypatch.setattr(kernels, "_errors", {})
        monkeypatch.setattr(kernels, "is_cached", lambda name, cached=cached: cached)
        assert kernels.module("rule_step") is built
        err = capsys.readouterr().err
        if cached:
            assert err == ""
        else:
            assert "compiling the C++ kernel 'rule_step'" in err and "is ready" in err
    monkeypatch.setenv("LEARNED_OPTIM_QUIET", "1")
    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels, "is_cached", lambda name: False)
    kernels.module("rule_step")
    assert capsys.readouterr().err == ""


def test_a_failed_build_warns_once_and_reports_why(monkeypatch):
    import torch.utils.cpp_extension as extension

    def fail(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(extension, "load", fail)
    monkeypatch.setattr(kernels, "_modules", {})
    monkeypatch.setattr(kernels, "_errors", {})
    monkeypatch.setenv("LEARNED_OPTIM_QUIET", "1")
    with pytest.warns(RuntimeWarning, match="pip install ninja"):
        assert kernels.module("lstm_cell") is None
    assert not kernels.available("lstm_cell")  # no second attempt, no second warning
    assert "Ninja is required" in kernels.build_error("lstm_cell")


def test_the_cache_check_compares_the_library_with_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = kernels.module_name("rule_step")
    assert not kernels.is_cached("rule_step")
    library = tmp_path / name / f"{name}.so"
    library.parent.mkdir(exist_ok=True)  # asking torch for the build directory makes it
    library.touch()
    assert kernels.is_cached("rule_step")
    old = (kernels.CSRC / "rule_step.cpp").stat().st_mtime - 60
    os.utime(library, (old, old))
    assert not kernels.is_cached("rule_step")  # the source changed after the build: it builds again
