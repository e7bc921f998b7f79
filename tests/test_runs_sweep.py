"""Sweeps on Optuna in one process: grids, seeds, samplers, pruning, failures, results, bad input."""

from __future__ import annotations

import json
import os
import pathlib
import statistics

import optuna
import pytest

from loopkit.runs import cli
from loopkit.runs.record import Run, list_runs
from loopkit.runs.sweep import Sweep
from loopkit.runs.sweep_checks import SweepError
from loopkit.runs.sweep_config import from_config

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")
COMPLETE, PRUNED, FAIL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def sweep(tmp_path, dims, **kw):
    kw.setdefault("base", {"epochs": 2})
    kw.setdefault("pruner", "none")
    return Sweep(TASK, dims, experiment=kw.pop("experiment", "s"), root=tmp_path, **kw)


def test_a_grid_with_seeds_runs_each_point_once_and_reports_mean_and_spread(tmp_path, capsys):
    s = sweep(
        tmp_path,
        {"lr": {"multiple": [0.02, 0.1]}, "width": {"linear": {"start": 2, "end": 4, "count": 2}}},
        seeds=[0, 1],
    )
    assert s.size() == 8
    study = s.run()
    assert "grid of 2 x 2 x 2 = 8 trials" in capsys.readouterr().out  # printed before any trial ran
    trials = study.get_trials()
    assert len(trials) == 8 and all(t.state == COMPLETE for t in trials)
    points = sorted((t.params["lr"], t.params["width"], t.user_attrs["seed"]) for t in trials)
    assert points == sorted((lr, w, seed) for lr in (0.02, 0.1) for w in (2, 4) for seed in (0, 1))
    runs = {r.name: r for r in list_runs(tmp_path, "s")}
    assert len(runs) == 8 and all(r.info["status"] == "FINISHED" for r in runs.values())
    for t in trials:  # each trial's value is its run's best valid_loss, from the run's own metrics file
        (name,) = t.user_attrs["loopkit_runs"]
        run = runs[name]
        assert t.value == min(row["valid_loss"] for row in run.metrics())
        assert (run.params["lr"], run.params["width"], run.params["seed"]) == (
            t.params["lr"],
            t.params["width"],
            t.user_attrs["seed"],
        )
        assert run.info["trials"] == [{"study": "s", "number": t.number}]
    rows = s.results()
    assert len(rows) == 4 and all(r["n"] == 2 for r in rows)
    for row in rows:
        values = [t.value for t in trials if t.params == row["params"]]
        assert row["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert row["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert [r["mean"] for r in rows] == sorted(r["mean"] for r in rows)  # a loss: lowest first
    assert s.best_params() == {**s.base, **rows[0]["params"]}
    table = s.table().splitlines()
    assert table[0].split()[:3] == ["lr", "width", "valid_loss"] and len(table) == 2 + 4
    png = pathlib.Path(s.plot())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # Running it again joins the finished study and runs nothing more.
    assert len(s.run(quiet=True).get_trials()) == 8


def test_random_sampler_is_reproducible_with_its_seed_and_honours_the_budget(tmp_path):
    dims = {
        "lr": {"random": {"low": 0.01, "high": 0.1, "count": 1, "distribution": "loguniform"}},
        "width": {"multiple": [2, 3, 4]},
    }
    a = sweep(tmp_path, dims, sampler="random", n_trials=3, seed=5, experiment="a")
    b = sweep(tmp_path, dims, sampler="random", n_trials=3, seed=5, experiment="b")
    c = sweep(tmp_path, dims, sampler="random", n_trials=3, seed=6, experiment="c")
    assert a.points == b.points != c.points and len(a.points) == 3
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for point in a.points:  # the draws are Optuna's RandomSampler's, in order
        t = reference.ask()
        assert point == {
            "lr": t.suggest_float("lr", 0.01, 0.1, log=True),
            "width": t.suggest_categorical("width", [2, 3, 4]),
        }
        reference.tell(t, 0.0)
    study = a.run(quiet=True)
    assert [t.params for t in study.get_trials()] == a.points


def test_tpe_with_a_seed_repeats_itself_and_runs_exactly_n_trials(tmp_path):
    dims = {"lr": {"logspace": {"start": -2, "end": -1, "count": 2}}, "width": {"multiple": [2, 4]}}
    kw = {"sampler": "tpe", "n_trials": 4, "seed": 1, "base": {"epochs": 1}}
    first = sweep(tmp_path, dims, experiment="t1", **kw).run(quiet=True)
    second = sweep(tmp_path, dims, experiment="t2", **kw).run(quiet=True)
    assert len(first.get_trials()) == 4
    assert [t.params for t in first.get_trials()] == [t.params for t in second.get_trials()]
    assert all(0.01 <= t.params["lr"] <= 0.1 for t in first.get_trials())


def test_a_failing_trial_is_failed_and_the_sweep_goes_on(tmp_path):
    s = sweep(tmp_path, {"fail_at_epoch": {"multiple": [-1, 1, -1]}, "lr": {"single": 0.05}})
    study = s.run(quiet=True)
    states = [t.state for t in study.get_trials()]
    assert states == [COMPLETE, FAIL, COMPLETE]
    failed = study.get_trials()[1]
    assert failed.user_attrs["loopkit_error"] == "RuntimeError: planned failure in epoch 1"
    run = Run.load(tmp_path, "s", failed.user_attrs["loopkit_runs"][0])
    assert run.info["status"] == "FAILED" and "planned failure" in run.info["error"]
    assert s.results()[-1]["failed"] == 1


def test_pruned_trials_are_pruned_runs_and_an_all_pruned_sweep_ends(tmp_path):
    always = optuna.pruners.ThresholdPruner(upper=-1.0)  # any loss is above -1: prune at the first report
    s = sweep(tmp_path, {"lr": {"multiple": [0.01, 0.02, 0.05]}}, pruner=always, base={"epochs": 3})
    study = s.run(quiet=True)
    assert [t.state for t in study.get_trials()] == [PRUNED] * 3
    for t in study.get_trials():
        run = Run.load(tmp_path, "s", t.user_attrs["loopkit_runs"][0])
        assert run.info["status"] == "PRUNED" and run.info["epochs_done"] == 1
        assert t.intermediate_values == {0: run.metrics()[0]["valid_loss"]}  # reported each epoch
    with pytest.raises(SweepError, match="no trial of this sweep has finished"):
        s.best_params()


def test_the_median_pruner_stops_a_trial_worse_than_the_median(tmp_path):
    s = sweep(tmp_path, {"lr": {"multiple": [0.1, 0.0001]}}, pruner="median", base={"epochs": 3})
    study = s.run(quiet=True)
    good, bad = study.get_trials()
    assert good.state == COMPLETE and bad.state == PRUNED
    assert bad.intermediate_values[0] > good.intermediate_values[0]


def test_a_schedule_argument_is_a_search_dimension(tmp_path):
    """one-cycle's pct_start, searched: each run's learning rate peaks where its pct_start says."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = sweep(
        tmp_path,
        {"scheduler_options.pct_start": {"multiple": [0.25, 0.75]}},
        base={"epochs": 2, "scheduler": "onecycle", "lr": 0.1},
    )
    study = s.run(quiet=True)
    steps = 2 * 4  # 2 epochs of 4 batches
    for t in study.get_trials():
        pct = t.params["scheduler_options.pct_start"]
        run = Run.load(tmp_path, "s", t.user_attrs["loopkit_runs"][0])
        assert run.params["scheduler_options"] == {"pct_start": pct} and run.params["scheduler"] == "onecycle"
        acc = EventAccumulator(os.path.join(run.dir, "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        lrs = [e.value for e in acc.Scalars("hparams/lr")]
        assert len(lrs) == steps and max(lrs) == pytest.approx(0.1, rel=1e-6)
        assert lrs.index(max(lrs)) == round(pct * steps)  # the peak sits at pct_start of the fit


@pytest.mark.parametrize(
    "dims, kw, match",
    [
        ({}, {}, "search space is empty"),
        ({"lr": {"logspace": {"start": -4, "end": -2, "count": 0}}}, {}, "count=0"),
        ({"lr": {"random": {"low": 0.5, "high": 0.1, "count": 2}}}, {}, r"low=0\.5, high=0\.1"),
        (
            {"lr": {"random": {"low": 0.1, "high": 0.5, "count": 2, "distribution": "beta"}}},
            {},
            "unknown distribution 'beta'",
        ),
        ({"lr": {"multiple": [0.1]}}, {"monitor": "valid_accuracy"}, "produces metric 'valid_accuracy'.*'valid_loss'"),
        (
            {"lr": {"multiple": [0.1]}},
            {"storage": "postgresql://nobody@127.0.0.1:9/none"},
            "cannot open the sweep storage",
        ),
        ({"lr": {"multiple": [0.1, -1.0]}}, {}, r"configuration \{'lr': -1\.0\}.*'lr' must be >= 0"),
        ({"lr": {"multiple": [0.1]}}, {"sampler": "tpe"}, "needs a budget"),
        ({"lr": {"multiple": [0.1]}}, {"sampler": "bayes"}, "unknown sampler 'bayes'"),
        ({"lr": {"multiple": [0.1]}}, {"seeds": [0, 1], "base": {"epochs": 2, "lrr": 1}}, "unknown parameter.*'lrr'"),
    ],
)
def test_bad_sweeps_fail_before_any_trial_runs(tmp_path, dims, kw, match):
    with pytest.raises(SweepError, match=match):
        sweep(tmp_path, dims, **kw).run(quiet=True)
    assert not (tmp_path / "s").exists() or not any(p.name.startswith("trial-") for p in (tmp_path / "s").iterdir())


def test_joining_a_study_of_another_sweep_is_refused(tmp_path):
    sweep(tmp_path, {"lr": {"multiple": [0.05]}}).run(quiet=True)
    with pytest.raises(SweepError, match="holds a different sweep"):
        sweep(tmp_path, {"lr": {"multiple": [0.06]}}).run(quiet=True)


def test_the_command_line_runs_a_sweep_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"task: {TASK}\nexperiment: cli\nbase: {{epochs: 1}}\npruner: none\n"
        "parameters:\n  lr: {logspace: {start: -2, end: -1, count: 2}}\n  width: {multiple: [2, 3]}\n"
    )
    assert cli.main(["sweep", str(spec), "--dry-run"]) == 0
    assert "grid of 2 x 2 = 4 trials" in capsys.readouterr().out
    assert not list((tmp_path / "runs" / "cli").glob("trial-*"))  # checked (storage opened), nothing ran
    assert cli.main(["sweep", str(spec), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best parameters:" in out and "plot: runs/cli/sweep.png" in out
    best = json.loads(out.split("best parameters:")[1].splitlines()[0])
    assert best["epochs"] == 1 and best["lr"] in (0.01, 0.1)
    (tmp_path / "bad.yaml").write_text(f"task: {TASK}\nparameters: {{}}\n")
    assert cli.main(["sweep", str(tmp_path / "bad.yaml")]) == 2
    assert "search space is empty" in capsys.readouterr().err
    with pytest.raises(SweepError, match=r"unknown sweep setting.*'sampelr'"):
        from_config({"task": TASK, "parameters": {"lr": {"single": 0.1}}, "sampelr": "tpe"})


def test_an_sqlite_file_storage_holds_the_study_and_a_rerun_joins_it(tmp_path):
    db = tmp_path / "sweep.db"
    s = sweep(tmp_path, {"lr": {"multiple": [0.05, 0.1]}}, storage=str(db), base={"epochs": 1})
    assert len(s.run(quiet=True).get_trials()) == 2
    again = sweep(tmp_path, {"lr": {"multiple": [0.05, 0.1]}}, storage=f"sqlite:///{db}", base={"epochs": 1})
    study = again.run(quiet=True)  # the same study through its URL: nothing left to run
    assert [t.state for t in study.get_trials()] == [COMPLETE, COMPLETE] and db.stat().st_size > 0
