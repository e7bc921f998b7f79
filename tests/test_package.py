"""Packaging promises: a light core import, the declared dependencies, the public API."""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys

import pytest

import loopkit

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the 3.10 wheel is covered by the other tests

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_loopkit_does_not_import_tensorboard_or_scipy():
    code = (
        "import sys, loopkit, loopkit.callbacks, loopkit.schedules; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorboard', 'scipy', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_loopkit_does_not_import_optuna_sklearn_or_yaml():
    code = (
        "import sys, loopkit, loopkit.runs, loopkit.runs.parameters; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'sklearn', 'yaml', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_pyproject_declares_the_promised_dependencies():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("<")[0].split("=")[0].strip() for d in meta["dependencies"]}
    assert {"torch", "numpy", "scipy", "tensorboard"} <= names
    dev = {d.split(">")[0].split("=")[0].strip() for d in meta["optional-dependencies"]["dev"]}
    assert {"pytest", "pytest-benchmark", "hypothesis", "loopkit[demo,sweep,metrics]"} <= dev
    extras = meta["optional-dependencies"]
    assert {"optuna", "pyyaml", "matplotlib"} <= {d.split(">")[0] for d in extras["sweep"]}
    assert {"scikit-learn"} <= {d.split(">")[0] for d in extras["demo"]}
    assert {"torchmetrics"} <= {d.split(">")[0] for d in extras["metrics"]}
    assert meta["requires-python"] == ">=3.10"


def test_every_public_name_resolves():
    for name in loopkit.__all__:
        assert getattr(loopkit, name) is not None, name


def test_version_comes_from_the_package_metadata():
    # pyproject.toml is the one place the version is written; the installed metadata carries it to __version__.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert loopkit.__version__ == importlib.metadata.version("loopkit") == declared


def test_the_api_reference_lists_every_public_name():
    # docs/api/index.md is the reference's table of contents; mkdocs build --strict checks that its links resolve.
    page = (ROOT / "docs" / "api" / "index.md").read_text()
    missing = [name for name in loopkit.__all__ if name != "__version__" and f"[`{name}`]" not in page]
    assert not missing, f"add these public names to docs/api/index.md: {missing}"
