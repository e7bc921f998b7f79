"""The schedule plots in docs/plots/ are what docs/make_plots.py draws from the current code."""

from __future__ import annotations

import importlib.util
import pathlib

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_committed_plots_match_the_generator():
    spec = importlib.util.spec_from_file_location("make_plots", DOCS / "make_plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.figures()
    assert figures, "no figures"
    for name, text in figures.items():
        committed = (DOCS / "plots" / f"{name}.svg").read_text()
        assert committed == text, f"docs/plots/{name}.svg is stale: run python docs/make_plots.py"
