"""The examples run on a small setting and show what they claim."""

from __future__ import annotations

import importlib.util
import itertools
import math
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metric_learning_improves_recall_while_the_margins_follow_their_schedules():
    epochs = 8
    result = load("metric_learning").run(epochs=epochs)
    assert result["recall_before"] < 0.35  # chance is 0.1; nuisance noise dominates at init
    assert result["recall_after"] > result["recall_before"] + 0.3
    # cos from 0.1 to 0.4 over the fit, one value per batch; the last batch sits just before the end.
    margins = result["loss_margin"]
    assert margins[0] == 0.1 and 0.39 < margins[-1] < 0.4
    assert all(b >= a for a, b in itertools.pairwise(margins))
    assert result["miner_margin"][0] == 0.05 and result["final_margins"] == (margins[-1], result["miner_margin"][-1])


def test_finetuning_with_layerwise_decay_and_head_only_warm_up():
    result = load("finetune_layerwise").run(pretrain_epochs=5, finetune_epochs=3)
    assert result["history"][-1]["valid_accuracy"] > 0.75  # chance is 0.5
    lrs = result["group_lrs"]
    assert lrs["block1"] == pytest.approx(lrs["head"] * 0.5, rel=1e-12)
    assert lrs["block0"] == pytest.approx(lrs["head"] * 0.25, rel=1e-12)
    lr = result["lr"]
    steps, warmup = len(lr), len(lr) // 3 // 2  # 3 epochs; warmup is half an epoch
    assert lr[0] == 0.0 and max(lr) == pytest.approx(3e-3, rel=1e-12) and lr.index(max(lr)) == warmup
    assert lr[-1] == pytest.approx(3e-3 * (steps - (steps - 1)) / (steps - warmup), rel=1e-12)


def test_batch_size_ramp_doubles_the_batch_and_halves_the_steps():
    result = load("batch_size_ramp").run(epochs=4)
    assert result["batch_sizes"] == [round(16 * 16 ** (e / 3)) for e in range(4)]  # geometric 16 -> 256
    assert result["steps_per_epoch"] == [math.ceil(1500 / b) for b in result["batch_sizes"]]
    assert len(result["lr"]) == sum(result["steps_per_epoch"])
    assert result["history"][-1]["valid_accuracy"] > 0.6  # chance is 1/3


def test_triplet_finetuning_from_parameters_with_a_scheduled_miner_margin(tmp_path):
    from loopkit.runs.runner import run_task

    task = str(EXAMPLES / "finetune_triplet.py")
    margins = []

    class Watch:
        reads = ("loss_fn",)

        def after_epoch(self, learner):
            margins.append(learner.loss_fn.miner.margin)

    run = run_task(
        task,
        {"epochs": 6, "miner_margin": 0.05, "miner_margin_end": 0.3},
        experiment="t",
        root=tmp_path,
        callbacks=[Watch()],
    )
    rows = run.metrics()
    assert rows[0]["valid_recall_at_1"] < 0.6 and run.info["final"]["valid_recall_at_1"] > 0.7  # chance 0.1
    # the margin follows cos from 0.05 to 0.3 over the fit: after epoch e (of 6), at the fit's last step of e
    assert margins == sorted(margins) and margins[0] > 0.05 and 0.29 < margins[-1] < 0.3
    assert run.info["params"]["loss"] == "pml:triplet_margin" and run.info["params"]["loss_options"] == {"margin": 0.2}


@pytest.mark.parametrize("spec", ["digits_sweep.yaml", "finetune_triplet_sweep.yaml"])
def test_the_example_sweep_files_are_valid_sweeps(spec, tmp_path, capsys, monkeypatch):
    from loopkit.runs import cli

    monkeypatch.chdir(EXAMPLES.parent)  # the triplet file names its task relative to the repository
    assert cli.main(["sweep", str(EXAMPLES / spec), "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("grid of 3 x 2 x 2 = 12 trials" if spec.startswith("digits") else "grid of 4 x 2 = 8 trials") in out
