"""The main job: scikit-learn's digits, a stratified held-out split, a recorded run that learns them."""

from __future__ import annotations

import pytest
import torch

from loopkit import demo
from loopkit.runs.record import Run, list_runs


def test_split_is_stratified_disjoint_and_complete():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, valid = demo.digits(0.2, seed=0)
    assert len(train) + len(valid) == 1797
    counts = torch.bincount(torch.as_tensor(bunch.target), minlength=10)
    assert torch.equal(torch.bincount(valid.tensors[1], minlength=10), torch.round(0.2 * counts.double()).long())
    rows = {tuple(r.tolist()) for r in valid.tensors[0]}
    # identical images occur in the data set; the split must not hold any *index* twice, so compare counts
    assert len(train.tensors[0]) == 1797 - len(valid.tensors[0]) and len(rows) > 0.95 * len(valid)
    assert float(train.tensors[0].max()) == 1.0 and float(train.tensors[0].min()) == 0.0


def test_the_demo_learns_the_digits_as_a_recorded_run(tmp_path, capsys):
    assert demo.main(["--epochs=6", "--quiet", "--runs-root", str(tmp_path), "--run-name=short"]) == 0
    out = capsys.readouterr().out
    run = Run.load(tmp_path, "digits", "short")
    accuracy = run.info["final"]["valid_accuracy"]
    assert run.info["status"] == "FINISHED" and accuracy > 0.9  # chance is 0.1; 20 epochs reach about 0.98
    assert f"Held-out accuracy: {accuracy:.1%} of the 359 digits" in out
    assert [r.name for r in list_runs(tmp_path, "digits")] == ["short"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--scheduler=foo", "unknown schedule 'foo'; known: constant"),
        ('--scheduler_options={"warmpu": 0.1}', "schedule 'onecycle' has no option"),
        ("--loss=nope", "unknown loss 'nope'"),
        ("--optimizer=adamx", "unknown optimizer 'adamx'"),
        ('--optimizer_options={"wieght_decay": 1}', "AdamW has no option"),
        # The library speaks of a schedule's "peak"; the message names the flag the user gave.
        (
            "--learning_rate=0",
            "learning_rate=0.0, scheduler_options={}: onecycle(peak=0.0): peak must be > 0 (the "
            "schedule's peak is learning_rate)",
        ),
    ],
)
def test_a_bad_name_or_option_is_a_usage_error_and_records_no_run(tmp_path, capsys, flag, message):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--epochs=1", flag, "--runs-root", str(tmp_path)])
    assert exit_info.value.code == 2  # argparse's usage error, before any run exists
    assert message in capsys.readouterr().err
    assert not (tmp_path / "digits").exists()  # no run record, not even a FAILED one


@pytest.mark.parametrize("name", ["short", "a/b", ".hidden"])
def test_a_taken_or_bad_run_name_is_a_usage_error_that_touches_no_run(tmp_path, capsys, name):
    existing = tmp_path / "digits" / "short"
    existing.mkdir(parents=True)
    (existing / "run.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--epochs=1", "--quiet", "--runs-root", str(tmp_path), f"--run-name={name}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ("already exists" if name == "short" else "use letters, digits") in err
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["short"]
    assert (existing / "run.json").read_text() == "{}"
