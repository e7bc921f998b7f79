"""A griffe extension for the API reference: turns loopkit's Sphinx-style docstring markup into Markdown.

1. ``:class:`~loopkit.callbacks.metrics.Metrics``` and friends (``:func:``, ``:meth:``, ``:attr:``, ``:mod:``,
   ``:data:``, ``:exc:``) become mkdocs-autorefs links to the object's canonical path, so a re-exported name
   links to the one place it is documented. A target is looked up the way a reader would: as written, then
   relative to the docstring's own scope (method, class, module, parents), then under ``loopkit``. Objects the
   reference does not render (private, undocumented, a module on no API page) link to their nearest rendered
   parent. A loopkit target that matches nothing stays a link to that name, so ``mkdocs build --strict`` fails
   on it; targets outside loopkit (``torch.utils.data.DistributedSampler``) become plain code, since the build
   downloads no inventories.
2. Doctest runs (a ``>>>`` line and its continuation and output lines) are fenced as ``pycon`` code, so that
   output such as ``[0.0, 1.0]`` is not read as Markdown.
3. reStructuredText simple tables (``=====  =====`` borders) become Markdown tables.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|data|exc|obj):`(~?)([\w.]+)(\(\))?`")
PACKAGE = "loopkit"
API_PAGES = Path(__file__).resolve().parent / "api"


def _rendered_modules() -> set[str]:
    """The modules the API pages render (their ``::: module`` lines)."""
    found = set()
    for page in API_PAGES.glob("*.md"):
        found.update(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.M))
    return found


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:  # re-exports are documented where they are defined
            yield from _objects(member)  # type: ignore[arg-type]


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i, in_fence = 0, False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


BORDER = re.compile(r"^(\s*)=+( +=+)+\s*$")


def _rst_tables(text: str) -> str:
    """Rewrite simple tables: border, header row, border, rows, border."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = BORDER.match(lines[i])
        if not (border and i + 2 < len(lines) and lines[i + 2] == lines[i]):
            out.append(lines[i])
            i += 1
            continue
        spans = [m.span() for m in re.finditer(r"=+", lines[i])]
        end = next((j for j in range(i + 3, len(lines)) if lines[j] == lines[i]), None)
        if end is None:
            out.append(lines[i])
            i += 1
            continue

        def cells(row: str, spans: list[tuple[int, int]] = spans) -> str:
            starts = [a for a, _ in spans] + [len(row) + 1]
            return "| " + " | ".join(row[starts[k] : starts[k + 1]].strip() for k in range(len(spans))) + " |"

        indent = border.group(1)
        out.append(indent + cells(lines[i + 1]))
        out.append(indent + "|" + "---|" * len(spans))
        out.extend(indent + cells(row) for row in lines[i + 3 : end] if row.strip())
        i = end + 1
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    def __init__(self) -> None:
        self.rendered = _rendered_modules()

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        for obj in _objects(pkg):
            if obj.docstring is not None:
                text = ROLE.sub(lambda m, o=obj: self._link(m, o, loader), obj.docstring.value)
                obj.docstring.value = _rst_tables(_fence_doctests(text))

    def _is_rendered(self, obj: griffe.Object) -> bool:
        if obj.is_module:
            return obj.path in self.rendered
        if any(part.startswith("_") for part in obj.path.split(".")[1:]) or obj.docstring is None:
            return False
        return obj.parent is not None and (obj.parent.is_module or self._is_rendered(obj.parent))

    def _find(self, loader: griffe.GriffeLoader, path: str) -> str | None:
        """The path of the rendered object nearest to ``path`` (following re-exports), or None if loopkit has no
        object at ``path``; "" if it has one, but neither it nor a parent is rendered."""
        try:
            found: Any = loader.modules_collection[path]
            while found.is_alias:
                found = found.final_target
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        while found is not None and not self._is_rendered(found):
            found = found.parent
        return "" if found is None else str(found.path)

    def _link(self, match: re.Match[str], obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
        role, short, target = match.group(1), match.group(2), match.group(3)
        shown = target.rsplit(".", 1)[-1] if short else target
        if role in ("func", "meth"):
            shown += "()"
        scopes: list[str] = []
        scope: griffe.Object | None = obj
        while scope is not None:
            scopes.append(f"{scope.path}.{target}")
            scope = scope.parent
        for candidate in [target, *scopes, f"{PACKAGE}.{target}"]:
            if candidate.split(".", 1)[0] == PACKAGE and (path := self._find(loader, candidate)) is not None:
                return f"[`{shown}`][{path}]" if path else f"`{shown}`"
        top = target.split(".", 1)[0]
        if top == PACKAGE or ("." not in target and importlib.util.find_spec(top) is None):
            # Meant to be loopkit's, and nothing matches: keep the link so that the strict build reports it.
            return f"[`{shown}`][{target}]"
        return f"`{shown}`"
