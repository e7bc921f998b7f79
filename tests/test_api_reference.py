"""The API reference (docs/api/, built by mkdocs) covers every public module; the strict build checks the rest."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_REFERENCE = {"loopkit.demo"}  # a script (python -m loopkit.demo), documented in the README


def public_modules() -> list[str]:
    found = []
    for path in sorted((ROOT / "loopkit").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") for p in parts):  # private modules and packages' __init__ / __main__
            continue
        if path.read_text().lstrip('"').startswith("Moved to"):  # an old path kept as a re-export
            continue
        found.append(".".join(parts))
    return found


def test_every_public_module_is_on_an_api_page():
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    rendered = set(re.findall(r"^::: ([\w.]+)\s*$", pages, re.M))
    missing = [m for m in public_modules() if m not in rendered and m not in NOT_REFERENCE]
    assert not missing, f"add a '::: module' line for each to the docs/api/ page of its layer: {missing}"
