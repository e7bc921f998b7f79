"""The best is the best: best parameters and table columns are what each trial ran with, under every sampler;
a metric's best follows its own direction in ``runs list``."""

from __future__ import annotations

import pathlib

import optuna
import pytest

from loopkit.runs import cli
from loopkit.runs.record import Run, list_runs, metric_mode
from loopkit.runs.sweep import Sweep
from loopkit.runs.sweep_checks import SweepError

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")


def sweep(tmp_path, dims, **kw):
    return Sweep(TASK, dims, experiment="s", root=tmp_path, base={"epochs": 1}, pruner="none", **kw)


@pytest.mark.parametrize(
    ("sampler", "n_trials"),
    [("grid", None), ("random", 3), ("tpe", 3)],
)
def test_best_parameters_and_columns_are_what_the_trials_ran_with(tmp_path, sampler, n_trials):
    dims = {
        "lr": {"multiple": [0.01, 0.05, 0.1]},
        "width": {"single": 3},
        "scheduler": {"single": "linear"},
        "scheduler_options.warmup": {"single": 0.1},
    }
    s = sweep(tmp_path, dims, sampler=sampler, n_trials=n_trials, seed=1)
    s.run(quiet=True)
    runs = list_runs(tmp_path, "s")
    # The reference: each run's own record (the parameters its task was built with) and its best valid_loss.
    ran = {r.name: r for r in runs}
    assert all(r.params["width"] == 3 and r.params["scheduler_options"] == {"warmup": 0.1} for r in runs)
    best_run = min(runs, key=lambda r: r.value("valid_loss"))
    best = s.best_params()
    assert best == best_run.params, (best, best_run.params)
    rows = s.results()
    assert all(row["params"]["width"] == 3 and row["params"]["scheduler_options.warmup"] == 0.1 for row in rows)
    for row in rows:
        for trial in row["trials"]:  # TPE may suggest one configuration twice: one row, two trials
            assert row["params"]["lr"] == ran[f"trial-{trial:04d}"].params["lr"]
    table = s.table().splitlines()
    assert table[0].split()[:4] == ["lr", "width", "scheduler", "scheduler_options.warmup"]
    assert all(line.split()[1:4] == ["3", "linear", "0.1"] for line in table[2:])


def test_results_pool_hand_made_trials_with_mean_spread_and_count(tmp_path):
    s = sweep(tmp_path, {"lr": {"multiple": [0.01, 0.05]}, "width": {"single": 3}}, sampler="tpe", n_trials=4)
    study = optuna.create_study(storage=s.storage, study_name=s.study_name, direction="minimize")
    dist = {"lr": optuna.distributions.CategoricalDistribution([0.01, 0.05])}

    def add(lr, value, state=optuna.trial.TrialState.COMPLETE, seed=0):
        attrs = {"loopkit_params": {"lr": lr, "width": 3, "seed": seed}}
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value, state=state, user_attrs=attrs)
        )

    add(0.01, 0.5)
    add(0.01, 0.7, seed=1)
    add(0.05, 0.4)
    add(0.05, None, optuna.trial.TrialState.PRUNED, seed=1)
    rows = {row["params"]["lr"]: row for row in s.results()}
    assert rows[0.01]["mean"] == pytest.approx((0.5 + 0.7) / 2) and rows[0.01]["n"] == 2
    assert rows[0.01]["std"] == pytest.approx(0.1414213562, rel=1e-9)  # sample std of (0.5, 0.7)
    assert rows[0.05]["mean"] == 0.4 and rows[0.05]["n"] == 1 and rows[0.05]["pruned"] == 1
    assert rows[0.05]["std"] is None  # one finished value has no spread, not a spread of 0
    assert [r["params"]["lr"] for r in s.results()] == [0.05, 0.01]  # 0.4 < 0.6: lower is better here
    assert s.best_params()["lr"] == 0.05 and s.best_params()["width"] == 3
    header = s.table().splitlines()[0].split()
    assert header[:6] == ["lr", "width", "valid_loss", "mean", "std", "n"]


def test_a_grid_with_n_trials_is_refused():
    with pytest.raises(SweepError, match=r"n_trials=3 with sampler='grid'"):
        Sweep(TASK, {"lr": {"multiple": [0.1]}}, experiment="s", n_trials=3)


def _run(root, name, history, monitor="valid_accuracy", mode="max"):
    run = Run.create(root, "exp", {"name": name}, name=name, monitor=monitor, mode=mode)
    run.record_epochs(history)
    return run


def test_list_sort_takes_each_metrics_own_direction_and_asc_orders_rows(tmp_path, capsys):
    # Monitored by accuracy (max), but a loss's best is its lowest value, not its value at the best accuracy.
    _run(
        tmp_path,
        "a",
        [
            {"epoch": 0, "valid_loss": 2.258, "valid_accuracy": 0.2},
            {"epoch": 1, "valid_loss": 0.0998, "valid_accuracy": 0.9},
        ],
    )
    _run(
        tmp_path,
        "b",
        [
            {"epoch": 0, "valid_loss": 0.5, "valid_accuracy": 0.6},
            {"epoch": 1, "valid_loss": 0.8, "valid_accuracy": 0.7},
        ],
    )
    runs = {r.name: r for r in list_runs(tmp_path, "exp")}
    assert runs["a"].value("valid_loss") == 0.0998 and runs["b"].value("valid_loss") == 0.5
    assert runs["a"].value("valid_accuracy") == 0.9

    def order(*flags):
        assert cli.main(["list", "exp", "--root", str(tmp_path), "--sort", "valid_loss", *flags]) == 0
        lines = capsys.readouterr().out.splitlines()[2:]
        return [(line.split()[0], float(line.split()[3])) for line in lines]

    assert order() == [("a", 0.0998), ("b", 0.5)]  # a loss: lowest first
    assert order("--asc") == [("a", 0.0998), ("b", 0.5)]
    assert order("--desc") == [("b", 0.5), ("a", 0.0998)]  # rows reversed, each run's best unchanged


def test_metric_mode_rule():
    assert [metric_mode(m) for m in ("valid_loss", "train_error", "valid_mse", "valid_accuracy", "valid_f1")] == [
        "min",
        "min",
        "min",
        "max",
        "max",
    ]
    assert metric_mode("valid_score", "valid_score", "min") == "min"  # the monitored metric follows the run's mode
    assert metric_mode("valid_loss", "valid_accuracy", "max") == "min"
