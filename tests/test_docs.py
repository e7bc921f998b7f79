"""Every ```python block in docs/*.md runs, in order, one namespace per page, in a scratch directory.

Pages document behaviour with examples; running them keeps the examples true.
"""

from __future__ import annotations

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def test_there_are_pages_with_examples():
    assert PAGES, f"no ```python blocks found under {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_doc_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    text = page.read_text()
    for block in BLOCK.finditer(text):
        line = text[: block.start()].count("\n") + 2
        # dont_inherit: a page runs as a user would run it, without this file's `from __future__` imports.
        code = compile(block.group(1), f"{page.name}:{line}", "exec", dont_inherit=True)
        exec(code, namespace)
