"""The package's floors (docs/contributing.md): every import points down a floor or stays on its own, no module
imports itself back through others (no import cycles, lazy imports inside functions included), and no module only
re-exports another. Read from the source with ``ast``, as a reviewer would read the import lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "loopkit"

# Top floor first. A module's floor is that of its first path component under loopkit/.
FLOORS = [
    {"demo"},
    {"runs"},
    {"callbacks", "param_groups"},
    {"scheduling"},
    {"loop"},
    {"resume"},
    {"schedules"},
    {"distributed"},
    {"optim", "optimizers", "datasets", "_validate", "_version"},
]


def floor_of(module: str) -> int:
    """0 for the top floor, larger further down; ``loopkit`` itself (the table of contents) is above all."""
    parts = module.split(".")
    if parts == ["loopkit"]:
        return -1
    for i, names in enumerate(FLOORS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module} is on no floor: add its folder to FLOORS and to docs/contributing.md")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The loopkit modules ``module`` imports anywhere in its body (top level or inside functions)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for name in candidates:
            if name in known:
                found.add(name)
    found.discard(module)
    return found


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def test_every_import_points_down_or_across():
    upward = [
        f"{source} (floor {floor_of(source)}) imports {target} (floor {floor_of(target)})"
        for source, targets in GRAPH.items()
        for target in sorted(targets)
        if source != "loopkit" and floor_of(target) < floor_of(source)
    ]
    assert upward == []


def test_no_import_cycles():
    # Package __init__ modules import their own submodules (a table of contents), and a submodule importing a
    # sibling through its package is the same edge; cycles are looked for among the modules that define code.
    graph = {
        m: {t for t in ts if not (m.startswith(t + ".") and Path(modules()[t]).name == "__init__.py")}
        for m, ts in GRAPH.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    cycles = [c for c in cycles if not all(modules()[m].name == "__init__.py" for m in c[:-1])]
    assert cycles == []


@pytest.mark.parametrize("name", [n for n, p in modules().items() if p.name != "__init__.py"])
def test_no_module_only_re_exports(name):
    """A module (other than a package's table of contents) defines something: a re-export module gives a public
    name a second import path."""
    tree = ast.parse(modules()[name].read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert not body or not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body), (
        f"{name} only imports: delete it and import from where the names are defined"
    )
