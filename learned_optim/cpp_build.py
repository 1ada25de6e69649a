"""Building the optional C++ kernels (csrc/) on first use, and saying so.

Two kernels, compiled with torch.utils.cpp_extension (a C++ compiler and ``ninja`` are needed;
``pip install ninja``, or the ``fast`` extra):

- ``rule_step`` (csrc/rule_step.cpp): the optimizer's whole step on the CPU for the log-sign rules (backends/cpp.py);
- ``moments_step`` (csrc/moments_step.cpp): the same for the "moments" rules (backends/cpp.py);
- ``lstm_cell`` (csrc/lstm_cell.cpp): the meta-trainer's LSTM cell with autograd (cells.py).

A build takes about 40 s and is cached (torch's extension cache, ``~/.cache/torch_extensions``
unless ``TORCH_EXTENSIONS_DIR`` says otherwise); while a kernel builds, one line on stderr says
so, and one more when it is ready, so a first ``opt.step()`` never waits in silence
(``LEARNED_OPTIM_QUIET=1`` turns the lines off). ``build()`` builds both ahead of time. Where a
kernel cannot be built, callers fall back to PyTorch code and one warning says why.

The kernels are compiled for the CPU they are built on (-march=native), so the cached module's
name carries a tag of the CPU (``cpu_tag``): machines that share a home directory with different
CPUs each build their own.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import time
import warnings
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
KERNELS = ("rule_step", "moments_step", "lstm_cell")
# rule_step.cpp tests for non-finite gradients, which -ffast-math would let the compiler drop
FLAGS = {
    "lstm_cell": ["-O3", "-ffast-math", "-march=native", "-fopenmp"],
    "rule_step": ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"],
    "moments_step": ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp"],
}
# a build takes about a minute; a build lock older than this was left by a killed build
STALE_LOCK_SECONDS = 900.0

_lock = threading.Lock()
_modules: dict[str, object] = {}
_errors: dict[str, str] = {}


def cpu_tag(cpuinfo: str | None = None) -> str:
    """8 hex digits naming this CPU: its model and instruction-set flags (from /proc/cpuinfo where there is one)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    wanted = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
              if line.split(":", 1)[0].strip() in ("model name", "flags", "Features", "CPU part")]
    # the first processor's lines describe them all (no per-core noise such as MHz or core ids)
    text = "\n".join([platform.machine(), platform.processor(), *dict.fromkeys(wanted)])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def module_name(name: str) -> str:
    """The name a kernel is built and cached under."""
    return f"learned_optim_{name}_{cpu_tag()}"


def build_directory(module: str) -> Path | None:
    """Where torch builds and caches the extension module ``module`` (``module_name(kernel)``); None where this
    torch does not say."""
    try:
        from torch.utils.cpp_extension import _get_build_directory
    except ImportError:  # a torch without this helper: nothing to inspect
        return None
    return Path(_get_build_directory(module, verbose=False))


def clear_stale_lock(module: str, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the build lock that a killed build of the extension ``module`` left (torch waits forever on it); True
    if one was removed. A lock untouched for ``max_age`` seconds is taken to be such a leftover."""
    try:
        directory = build_directory(module)
        if directory is None:
            return False
        lock = directory / "lock"
        if time.time() - lock.stat().st_mtime <= max_age:
            return False
        lock.unlink()
    except OSError:  # no lock (the usual case)
        return False
    warnings.warn(f"learned_optim: removed a stale build lock {lock} (left by a killed build)", RuntimeWarning,
                  stacklevel=3)
    return True


def is_cached(name: str) -> bool:
    """Whether kernel ``name`` is already compiled for this CPU and newer than its source (loading is then quick)."""
    directory = build_directory(module_name(name))
    if directory is None:
        return False
    library = directory / f"{module_name(name)}.so"
    try:
        return library.stat().st_mtime >= (CSRC / f"{name}.cpp").stat().st_mtime
    except OSError:
        return False


def _say(message: str) -> None:
    if os.environ.get("LEARNED_OPTIM_QUIET", "0") != "1":
        print(f"learned_optim: {message}", file=sys.stderr, flush=True)


def module(name: str):
    """The built kernel module ``name``, building it on first call; None where it cannot be built (warned once)."""
    built = _modules.get(name)
    if built is not None:  # every optimizer step asks: no lock once built
        return built
    with _lock:
        if name in _modules or name in _errors:
            return _modules.get(name)
        announce = not is_cached(name)
        started = time.perf_counter()
        if announce:
            _say(f"compiling the C++ kernel '{name}' for this CPU (once, about 40 s; cached afterwards) ...")
        try:
            from torch.utils.cpp_extension import load

            clear_stale_lock(module_name(name))
            _modules[name] = load(name=module_name(name), sources=[str(CSRC / f"{name}.cpp")],
                                  extra_cflags=FLAGS[name], extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as exc:  # no compiler, no ninja, a failed build: fall back, say so once
            first = str(exc).splitlines()[0] if str(exc) else ""
            _errors[name] = f"{type(exc).__name__}: {first}"
            hint = " (pip install ninja, or learned_optim[fast], to build it)" if "ninja" in _errors[name].lower() else ""
            warnings.warn(f"learned_optim: the C++ kernel {name} could not be built ({_errors[name]}){hint}; "
                          "using the PyTorch implementation instead", RuntimeWarning, stacklevel=3)
        else:
            if announce:
                _say(f"the C++ kernel '{name}' is ready ({time.perf_counter() - started:.0f} s)")
        return _modules.get(name)


def available(name: str) -> bool:
    """Whether kernel ``name`` is (or can be) built here; builds it on first call."""
    return module(name) is not None


def build_error(name: str) -> str | None:
    """Why kernel ``name`` could not be built, or None."""
    module(name)
    return _errors.get(name)


def build(names=KERNELS) -> dict[str, str | None]:
    """Build the kernels now (e.g. in a Dockerfile or a job's setup): {name: None, or why it failed}."""
    return {name: build_error(name) for name in names}


if __name__ == "__main__":  # python -m learned_optim.cpp_build
    failed = {name: error for name, error in build().items() if error}
    for name, error in failed.items():
        print(f"{name}: not built ({error})", file=sys.stderr)
    sys.exit(1 if failed else 0)
