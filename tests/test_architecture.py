"""The package's shape, held: no import cycles, no module importing another's private names, small modules, one
definition of the rule's inputs."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "learned_optim"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]):
    """(module imported, names imported from it) for every import of the package's own modules in ``path``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "learned_optim":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full, None) if full in known else (target, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, None


def test_no_module_imports_another_modules_private_names():
    known = modules()
    private = [(name, target, imported) for name, path in known.items()
               for target, imported in imports(name, path, known)
               if imported and imported.startswith("_") and not imported.startswith("__")]
    assert private == []


def test_there_are_no_import_cycles():
    """A child importing its own package's __init__ is not a cycle (the package is initialized first)."""
    known = modules()
    edges = collections.defaultdict(set)
    for name, path in known.items():
        for target, _ in imports(name, path, known):
            if target != name and not name.startswith(target + "."):
                edges[name].add(target)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(stack[stack.index(nxt):] + [nxt])}"
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in known:
        if name not in state:
            visit(name, [name])


def test_no_module_is_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_rules_inputs_are_defined_once():
    """features.py is the one place that turns gradients into what the rule sees: nowhere else preprocesses a
    gradient or computes the per-tensor inputs."""
    users = {name for name, path in modules().items()
             if any(word in path.read_text() for word in ("log_rms_ratio(", "clipped_tensor_count(", "log_sign("))}
    assert users <= {"learned_optim.features", "learned_optim.analysis.rules"}
