"""How the C++ kernels are built and cached (no compiler needed for these)."""

from __future__ import annotations

import os
import time

import pytest

from learned_optim import kernels

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
    if not kernels.cpp_available("rule_step"):
        pytest.skip(f"no kernel build here: {kernels.build_error('rule_step')}")
    built = kernels._modules["rule_step"].__file__  # torch's cache: <root>/<module name>/<module name>.so
    assert os.path.basename(os.path.dirname(built)) == name


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    """A killed build leaves <build dir>/lock, on which torch waits forever; an old lock is removed."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "learned_optim_test" / "lock"
    lock.parent.mkdir()
    lock.touch()
    assert not kernels._clear_stale_lock("learned_optim_test") and lock.exists()  # a build may be running
    old = time.time() - kernels.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="stale build lock"):
        assert kernels._clear_stale_lock("learned_optim_test")
    assert not lock.exists()
    assert not kernels._clear_stale_lock("learned_optim_test")  # nothing left to remove
