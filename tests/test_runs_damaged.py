"""Damaged run records are reported, never shown as if intact (issue 23, point 7)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from loopkit.runs import cli
from loopkit.runs.record import DamagedRun, Run, list_runs
from loopkit.runs.record_check import RecordError
from loopkit.runs.runner import run_task

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_task(TASK, {"epochs": 2}, experiment="exp", root=root, name="good")
    return root, Run.load(root, "exp", "good")


def _copy(root, tmp_path, name):
    src = pathlib.Path(root) / "exp" / "good"
    dst = tmp_path / "exp" / name
    dst.mkdir(parents=True)
    run = Run.from_dir(str(src))
    run.dir, run.info["name"] = str(dst), name
    run.save()  # the record of a run of that name, with its own checksum
    (dst / "metrics.jsonl").write_bytes((src / "metrics.jsonl").read_bytes())
    return dst


def _damage(path, how):
    data = path.read_bytes()
    if how == "renamed key":
        data = data.replace(b'"epochs_done"', b'"epochs_dune"')
    elif how == "non-UTF-8":
        data = data.replace(b'"exp"', b'"e\xffp"', 1)
    elif how == "bad JSON":
        data = data[: len(data) // 2]
    elif how == "changed value":
        data = data.replace(b'"attempts": 1', b'"attempts": 7')
    path.write_bytes(data)


@pytest.mark.parametrize(
    "how, words",
    [
        ("renamed key", "field 'epochs_done' is missing"),
        ("non-UTF-8", "not UTF-8"),
        ("bad JSON", "not valid JSON"),
        ("changed value", "does not match its checksum"),
    ],
)
def test_list_shows_every_run_and_marks_the_damaged_one_naming_the_file(finished, tmp_path, capsys, how, words):
    root, _ = finished
    for name in ("a", "b", "c"):
        _copy(root, tmp_path, name)
    _damage(tmp_path / "exp" / "b" / "run.json", how)
    runs = list_runs(tmp_path, "exp")
    assert [r.name for r in runs] == ["a", "b", "c"]
    assert [isinstance(r, DamagedRun) for r in runs] == [False, True, False]
    assert cli.main(["list", "exp", "--root", str(tmp_path), "--sort", "valid_loss"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("b "))
    assert "DAMAGED" in line and "run.json" in line and words in line
    assert cli.main(["show", "exp/b", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "exp" / "b" / "run.json") in err and words in err and "Traceback" not in err


def test_every_single_bit_flip_of_run_json_is_detected_or_harmless(finished, tmp_path):
    root, good = finished
    path = _copy(root, tmp_path, "r") / "run.json"
    original = path.read_bytes()
    detected = 0
    for i in range(len(original)):
        flipped = bytearray(original)
        flipped[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(flipped))
        try:
            info = Run.from_dir(str(path.parent)).info
        except RecordError:
            detected += 1
            continue
        assert info == dict(good.info, name="r", checksum=info["checksum"]), f"byte {i} flipped: shown silently"
    assert detected >= len(original) * 0.99  # JSON whitespace flips may be harmless; none may change content


def test_every_single_bit_flip_of_metrics_jsonl_is_detected(finished, tmp_path):
    root, good = finished
    directory = _copy(root, tmp_path, "r")
    run = Run.from_dir(str(directory))
    path = directory / "metrics.jsonl"
    original = path.read_bytes()
    for i in range(len(original)):
        flipped = bytearray(original)
        flipped[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(RecordError, match=r"metrics\.jsonl"):
            run.metrics()
    path.write_bytes(original)
    assert run.metrics() == good.metrics() and len(run.metrics()) == 2


def test_a_record_whose_name_is_a_path_is_damaged(finished, tmp_path):
    root, good = finished
    directory = _copy(root, tmp_path, "r")
    info = dict(good.info, name="../../x")  # (its checksum no longer matches either)
    (directory / "run.json").write_text(json.dumps(info))
    with pytest.raises(RecordError, match="run name"):
        Run.from_dir(str(directory))
    assert os.listdir(tmp_path) == ["exp"]
