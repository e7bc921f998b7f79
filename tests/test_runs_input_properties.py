"""Property tests over the three input surfaces (flags, config files, sweep files): every input is either a clean
usage error (exit status 2, the parameter or file named, no traceback) or a valid parameter set / sweep, and
nothing in between (issue 23, point 6). Parsing and checking only: nothing trains."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pathlib
import tempfile

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from loopkit import demo
from loopkit.runs.flags import parse_params
from loopkit.runs.parameters import INT_RANGE, fields, make_params, to_dict
from loopkit.runs.sweep_cli import sweep_main

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")
FIELDS = {f.name: f for f in fields(demo.Params)}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
flag_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.text(max_size=12),
    json_data.map(json.dumps),
    st.sampled_from(
        [
            '{"betas": [0.9]}',
            '{"weight_decay": Infinity}',
            "[" * 3000,
            '{"label_smoothing": 2}',
            "linaer",
            "cosine",
            "sgd",
            "1e999",
            "nan",
            "-0",
            "true",
            "none",
            "batch",
        ]
    ),
)
flag_names = st.sampled_from([*FIELDS, "learning_rat", "epoch", "config", "no-quiet", "shuffle"])


def _valid(params) -> bool:
    """An independent check of a parameter set: every value of its declared type, finite, in its bounds, and
    unchanged when checked again from a plain dict."""
    for name, f in FIELDS.items():
        value = getattr(params, name)
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, int) and not isinstance(value, bool) and not INT_RANGE[0] <= value < INT_RANGE[1]:
            return False
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            return False
    return make_params(demo.Params, to_dict(params)) == params


def _parse(argv):
    """``("ok", params)`` or ``("usage", exit status, stderr)``; any other exception escapes (and fails)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return ("ok", parse_params(demo.Params, argv, prog="demo"))  # as the command line parses them
        except SystemExit as stop:
            return ("usage", stop.code, err.getvalue())


def _check(outcome, named):
    if outcome[0] == "ok":
        assert _valid(outcome[1])
        return
    _, code, err = outcome
    assert code == 2 and "Traceback" not in err
    assert any(n in err for n in named), err


@SETTINGS
@given(st.lists(st.tuples(flag_names, flag_values), max_size=3))
def test_flags_give_a_clean_usage_error_or_valid_parameters(pairs):
    argv = [f"--{name}={value}" for name, value in pairs if name != "config"]
    _check(_parse(argv), [name for name, _ in pairs] + ["unrecognized"])


@SETTINGS
@given(st.dictionaries(st.sampled_from([*FIELDS, "lr", "defaults"]), json_data, max_size=4))
def test_config_files_give_a_clean_usage_error_or_valid_parameters(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(table, f)
        _check(_parse([f"--config={path}"]), [path])


@SETTINGS
@given(st.text(alphabet="ab: -[]{}&*!\n\"'#.,1e", max_size=60))
def test_any_text_as_a_config_file_is_a_clean_usage_error_or_valid_parameters(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.yaml")
        with open(path, "w") as f:
            f.write(text)
        _check(_parse([f"--config={path}"]), [path])


sweep_values = st.one_of(json_data, st.sampled_from(["grid", "random", "tpe", "median", "none", "e", "../x", ""]))
dimensions = st.one_of(
    st.dictionaries(
        st.sampled_from(["lr", "width", "seed", "nope", "scheduler_options.warmup"]),
        st.one_of(
            st.builds(lambda v: {"multiple": v}, st.lists(st.floats(0.001, 0.1) | st.integers(1, 8), max_size=3)),
            st.builds(
                lambda a, b, c: {"linear": {"start": a, "end": b, "count": c}},
                st.integers(-3, 3),
                st.integers(-3, 3),
                st.integers(-2, 20),
            ),
            st.builds(
                lambda a, c: {"logspace": {"start": a, "end": -1, "count": c}}, st.integers(-2000, 0), st.integers(0, 4)
            ),
            json_data,
        ),
        max_size=2,
    ),
    json_data,
)
sweep_keys = st.sampled_from(
    [
        "experiment",
        "sampler",
        "n_trials",
        "seed",
        "seeds",
        "base",
        "monitor",
        "mode",
        "study_name",
        "pruner",
        "heartbeat",
        "stale_after",
        "defaults",
    ]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dimensions, st.dictionaries(sweep_keys, sweep_values, max_size=3))
def test_sweep_files_give_a_clean_usage_error_or_a_valid_sweep(dims, extra):
    config = {"task": TASK, "parameters": dims, "experiment": "e", **extra}
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "sweep.yaml")
        with open(spec, "w") as f:
            yaml.safe_dump(config, f)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = sweep_main([spec, "--root", os.path.join(tmp, "runs"), "--dry-run"])
            except SystemExit as stop:
                code = stop.code
        assert "Traceback" not in err.getvalue()
        if code == 0:
            assert "trials" in out.getvalue()  # the plan of a sweep that was built and checked
        else:
            assert code == 2 and spec in err.getvalue(), err.getvalue()
            runs = os.path.join(tmp, "runs")
            assert not os.path.exists(runs) or not os.listdir(runs) or os.listdir(runs) == ["e"]
