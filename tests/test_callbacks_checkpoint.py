"""Checkpoint: atomic files, keep-last and keep-best, refusing broken weights, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import loopkit.loop.checkpoint
from loopkit import Checkpoint, Learner, Metrics, accuracy
from loopkit.checkpoint import load_checkpoint, save_atomic

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_learner(callbacks, n_batches=4):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(n_batches)]
    model = torch.nn.Linear(3, 2)
    return Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        valid_data=data[:2],
        callbacks=callbacks,
    )


def test_keep_last_and_resume_from_the_newest(tmp_path):
    ckpt = Checkpoint(tmp_path, every_n_steps=3, keep_last=2)
    small_learner([ckpt]).fit(3)
    files = sorted(os.listdir(tmp_path))
    # steps 3, 6, 9, 12 and epochs 1, 2, 3 were saved in order step-3, step-6, epoch-2? no: the last two saved
    assert files == sorted(os.path.basename(p) for p in ckpt.saved) and len(files) == 2
    assert ckpt.last == os.path.join(tmp_path, "epoch-0003.pt") == Checkpoint.latest(tmp_path)
    state = load_checkpoint(ckpt.last)
    assert state["position"] == {"epoch": 3, "batch": 0, "global_step": 12, "n_epochs": 3}
    assert state["callbacks"]["Checkpoint"]["saved"] == ckpt.saved  # it knows its own files after a resume


def test_keep_best_by_a_monitored_metric(tmp_path):
    metrics = Metrics(accuracy)
    ckpt = Checkpoint(tmp_path, every_epoch=False, monitor="valid_loss", mode="min")
    small_learner([metrics, ckpt]).fit(5)
    best = min(row["valid_loss"] for row in metrics.history)
    assert ckpt.best[0] == best
    saved = load_checkpoint(os.path.join(tmp_path, "best.pt"))
    assert saved["callbacks"]["Metrics"]["history"][-1]["valid_loss"] == best
    assert os.listdir(tmp_path) == ["best.pt"]


def test_monitor_needs_metrics():
    with pytest.raises(ValueError, match="needs a Metrics callback"):
        small_learner([Checkpoint("unused", monitor="valid_loss")])


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"weights": torch.arange(5.0)}, path)
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(loopkit.loop.checkpoint.torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"weights": torch.zeros(5)}, path)
    monkeypatch.setattr(loopkit.loop.checkpoint.torch, "save", real_save)
    assert torch.equal(load_checkpoint(path)["weights"], torch.arange(5.0))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_non_finite_weights_are_never_saved(tmp_path):
    class Poison:
        reads = ("global_step",)
        writes = ("model.parameters",)
        run_before = ("Checkpoint",)

        def after_batch(self, learner):
            if learner.global_step == 3:
                with torch.no_grad():
                    learner.model.weight[0, 0] = float("nan")

    ckpt = Checkpoint(tmp_path, every_n_steps=1, keep_last=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small_learner([ckpt, Poison()]).fit(1)
    assert [os.path.basename(p) for p in ckpt.saved] == ["step-000000001.pt", "step-000000002.pt"]
    assert ckpt.refused == 3  # steps 3, 4 and the epoch end
    assert any("not finite" in str(w.message) for w in caught)


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_steps=0"):
        Checkpoint("d", every_n_steps=0)
    with pytest.raises(ValueError, match="keep_last=0"):
        Checkpoint("d", keep_last=0)
    with pytest.raises(ValueError, match="mode='best'"):
        Checkpoint("d", mode="best")


# ----------------------------------------------------------------------------------------------- SIGKILL
def run_worker(run_dir, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, WORKER, str(run_dir), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finished(proc):
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


def progress(run_dir):
    try:
        return int((run_dir / "progress").read_text() or -1)
    except (FileNotFoundError, ValueError):
        return -1


def test_killed_at_random_points_and_resumed_equals_an_uninterrupted_run(tmp_path):
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    finished(run_worker(reference_dir))
    reference = torch.load(reference_dir / "final.pt", weights_only=False)
    total_steps = 6 * 8  # 100 samples in batches of 13: 8 batches per epoch
    rng = random.Random(2026)
    kill_points = sorted(rng.sample(range(2, total_steps - 2), 3))
    for kill_at in kill_points:
        run_dir = tmp_path / f"killed-{kill_at}"
        run_dir.mkdir()
        proc = run_worker(run_dir, "--step-sleep", "0.03")
        deadline = time.monotonic() + 60
        while progress(run_dir) < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        # Anywhere inside the next step, possibly in the middle of writing a checkpoint.
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        finished(run_worker(run_dir, "--resume"))
        resumed = torch.load(run_dir / "final.pt", weights_only=False)
        assert resumed["resumed_from"] is not None
        for key, tensor in reference["model"].items():
            assert torch.equal(tensor, resumed["model"][key]), (kill_at, key)
        for index, state in reference["optimizer"]["state"].items():
            for name, tensor in state.items():
                assert torch.equal(tensor, resumed["optimizer"]["state"][index][name]), (kill_at, name)
        assert resumed["metrics"] == reference["metrics"], kill_at
        assert resumed["schedule"] == reference["schedule"], kill_at
