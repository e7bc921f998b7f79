"""Checkpoint: atomic files, keep-last and keep-best, refusing broken weights, and exact resume after SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import loopkit.resume.file
from loopkit import Checkpoint, Learner, Metrics, accuracy
from loopkit.resume.file import save_atomic
from loopkit.resume.load import load_checkpoint

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
    assert state["position"] == {"epoch": 3, "batch": 0, "global_step": 12, "n_epochs": 3, "n_batches": 4}
    # It knows its own files after a resume: by name, within its own directory.
    assert state["callbacks"]["Checkpoint"]["saved"] == [os.path.basename(p) for p in ckpt.saved]
    assert state["callbacks"]["Checkpoint"]["dirpath"] == os.path.realpath(tmp_path)


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

    monkeypatch.setattr(loopkit.resume.file.torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"weights": torch.zeros(5)}, path)
    monkeypatch.setattr(loopkit.resume.file.torch, "save", real_save)
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


# ------------------------------------------------------------------------------------- what is deleted
def listing(directory):
    """Every file in `directory` with its bytes, to prove nothing there changed."""
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def test_resuming_from_another_directory_never_touches_its_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    small_learner([Checkpoint(a, every_n_steps=1, keep_last=3)]).fit(2)
    before = listing(a)
    resume_from = Checkpoint.latest(a)
    ckpt_b = Checkpoint(b, every_n_steps=1, keep_last=2)
    small_learner([ckpt_b]).fit(4, resume_from=resume_from)
    assert listing(a) == before  # the file resumed from included
    assert sorted(os.listdir(b)) == ["epoch-0004.pt", "step-000000016.pt"]
    assert ckpt_b.saved == [os.path.join(b, "step-000000016.pt"), os.path.join(b, "epoch-0004.pt")]


def test_a_resumed_run_in_the_same_directory_prunes_its_own_older_files(tmp_path):
    small_learner([Checkpoint(tmp_path, every_n_steps=1, keep_last=2)]).fit(1)
    ckpt = Checkpoint(tmp_path, every_n_steps=1, keep_last=2)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0001.pt", "step-000000004.pt"]
    small_learner([ckpt]).fit(2, resume_from=os.path.join(tmp_path, "epoch-0001.pt"))
    # The files the first run kept are the resumed run's own: superseded, they go.
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.pt", "step-000000008.pt"]


def test_a_file_of_someone_else_in_the_directory_is_never_pruned(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "step-000000001.pt").write_bytes(b"not this run's")  # same name pattern, not written by it
    (tmp_path / "notes.txt").write_text("mine")
    ckpt = Checkpoint(tmp_path, every_n_steps=2, every_epoch=False, keep_last=1)
    small_learner([ckpt]).fit(2)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "step-000000001.pt", "step-000000008.pt"]


class KilledWhilePruning(Exception):
    pass


def test_a_kill_between_a_save_and_its_pruning_is_cleaned_up_by_the_resumed_run(tmp_path, monkeypatch):
    # The save of step 3 completed; the process died before it deleted step 1 (keep_last=2).
    import loopkit.callbacks.checkpoint as module

    calls = []
    real_unlink = os.unlink

    def dies(path):
        if not str(path).endswith(".pt"):
            return real_unlink(path)  # the writability probe at the start of the fit
        calls.append(os.path.basename(path))
        raise KilledWhilePruning

    monkeypatch.setattr(module.os, "unlink", dies)
    with pytest.raises(KilledWhilePruning):
        small_learner([Checkpoint(tmp_path, every_n_steps=1, every_epoch=False, keep_last=2)]).fit(1)
    monkeypatch.undo()
    assert calls == ["step-000000001.pt"]
    assert sorted(os.listdir(tmp_path)) == ["step-000000001.pt", "step-000000002.pt", "step-000000003.pt"]
    latest = Checkpoint.latest(tmp_path)
    assert latest.endswith("step-000000003.pt")
    assert load_checkpoint(latest)["callbacks"]["Checkpoint"]["pruning"] == ["step-000000001.pt"]
    ckpt = Checkpoint(tmp_path, every_n_steps=1, every_epoch=False, keep_last=2)
    small_learner([ckpt]).fit(1, resume_from=latest)
    assert sorted(os.listdir(tmp_path)) == ["step-000000003.pt", "step-000000004.pt"]


def test_temp_files_of_dead_writers_are_removed_after_a_completed_save(tmp_path):
    from loopkit.resume.file import _HOST
    from tests.test_resume_file import dead_pid

    tmp_path.mkdir(exist_ok=True)
    dead = tmp_path / f".step-000000009.pt.loopkit-tmp-{_HOST}-{dead_pid()}-0badcafe"
    alive = tmp_path / f".step-000000009.pt.loopkit-tmp-{_HOST}-{os.getppid()}-0badcafe"
    dead.write_bytes(b"half"), alive.write_bytes(b"being written")
    small_learner([Checkpoint(tmp_path, every_epoch=True)]).fit(1)
    assert sorted(os.listdir(tmp_path)) == sorted(["epoch-0001.pt", alive.name])


# ------------------------------------------------------------------------------------- saving failures
def test_last_names_the_previous_intact_file_after_a_failed_save(tmp_path, monkeypatch):
    real_save = save_atomic
    import loopkit.callbacks.checkpoint as module

    def full_at_step_3(state, path):
        if state["position"]["global_step"] == 3:
            raise OSError(28, f"could not write checkpoint {path!r}: No space left on device")
        real_save(state, path)

    monkeypatch.setattr(module, "save_atomic", full_at_step_3)
    ckpt = Checkpoint(tmp_path, every_n_steps=1, keep_last=2)
    with pytest.raises(OSError, match=r"step-000000003\.pt'.*No space left"):
        small_learner([ckpt]).fit(1)
    assert ckpt.last == os.path.join(tmp_path, "step-000000002.pt")
    assert load_checkpoint(ckpt.last)["position"]["global_step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["step-000000001.pt", "step-000000002.pt"]  # nothing pruned for it


def test_an_unwritable_directory_is_an_error_when_the_fit_starts(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    learner = small_learner([Checkpoint(blocker / "ckpt")])
    with pytest.raises(OSError, match=f"Checkpoint cannot write to the directory '{blocker / 'ckpt'}'"):
        learner.fit(1)
    assert learner.global_step == 0  # before any training


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_directory_is_an_error_when_the_fit_starts(tmp_path):
    tmp_path.chmod(0o500)
    try:
        learner = small_learner([Checkpoint(tmp_path)])
        with pytest.raises(PermissionError, match=f"cannot write to the directory '{tmp_path}'"):
            learner.fit(1)
    finally:
        tmp_path.chmod(0o700)


def test_a_non_finite_metric_is_recorded_not_a_reason_to_refuse_the_save(tmp_path):
    class InfValidLoss:
        reads = ("phase", "batch_idx")
        writes = ("loss",)
        run_before = ("Metrics",)

        def after_loss(self, learner):
            if learner.phase == "valid" and learner.batch_idx == 0:
                learner.loss = learner.loss * float("inf")

    metrics = Metrics()
    ckpt = Checkpoint(tmp_path, monitor="valid_loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no refusal warning
        small_learner([metrics, ckpt, InfValidLoss()]).fit(2)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0001.pt", "epoch-0002.pt"]  # no best: inf is never the best
    assert ckpt.refused == 0 and ckpt.best is None
    saved = load_checkpoint(ckpt.last)["callbacks"]["Metrics"]["history"]
    assert [row["valid_loss"] for row in saved] == [float("inf")] * 2


def test_non_finite_optimizer_state_is_never_saved(tmp_path):
    class PoisonMomentum:
        reads = ("global_step",)
        writes = ("optimizer.state",)
        run_before = ("Checkpoint",)

        def after_step(self, learner):
            if learner.global_step == 2:
                learner.optimizer.state[learner.model.weight]["momentum_buffer"][0, 0] = float("inf")

    model = torch.nn.Linear(3, 2)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(3)]
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: the weights stay finite
    ckpt = Checkpoint(tmp_path, every_n_steps=1, every_epoch=False, keep_last=5)
    with pytest.warns(RuntimeWarning, match="optimizer state are not finite"):
        Learner(model, data, opt, torch.nn.functional.cross_entropy, callbacks=[ckpt, PoisonMomentum()]).fit(1)
    assert [os.path.basename(p) for p in ckpt.saved] == ["step-000000001.pt"]


def test_latest_can_skip_to_the_newest_intact_file(tmp_path):
    small_learner([Checkpoint(tmp_path, every_n_steps=1, every_epoch=False, keep_last=3)]).fit(1)
    newest = Checkpoint.latest(tmp_path)
    assert newest.endswith("step-000000004.pt")
    data = bytearray(Path(newest).read_bytes())
    data[len(data) // 2] ^= 0x10
    Path(newest).write_bytes(bytes(data))
    assert Checkpoint.latest(tmp_path) == newest  # unread by default
    with pytest.warns(RuntimeWarning, match="skipping a damaged file.*step-000000004.pt.*corrupted"):
        assert Checkpoint.latest(tmp_path, skip_damaged=True).endswith("step-000000003.pt")


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    reference_dir = tmp_path_factory.mktemp("reference")
    finished(run_worker(reference_dir))
    return torch.load(reference_dir / "final.pt", weights_only=False)


def assert_same_run(reference, run_dir, label):
    resumed = torch.load(run_dir / "final.pt", weights_only=False)
    assert resumed["resumed_from"] is not None
    for key, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), (label, key)
    for index, state in reference["optimizer"]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, resumed["optimizer"]["state"][index][name]), (label, name)
    assert resumed["metrics"] == reference["metrics"], label
    assert resumed["schedule"] == reference["schedule"], label


def run_until(run_dir, step, *extra, sleep=0.03):
    proc = run_worker(run_dir, "--step-sleep", str(sleep), *extra)
    deadline = time.monotonic() + 60
    while progress(run_dir) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return proc


def checkpoint_files(directory):
    return sorted(os.listdir(directory))


TOTAL_STEPS = 6 * 8  # 100 samples in batches of 13: 8 batches per epoch, 6 epochs


def test_killed_at_random_points_and_resumed_equals_an_uninterrupted_run(tmp_path, reference):
    rng = random.Random(2026)
    kill_points = sorted(rng.sample(range(2, TOTAL_STEPS - 2), 3))
    for kill_at in kill_points:
        run_dir = tmp_path / f"killed-{kill_at}"
        run_dir.mkdir()
        proc = run_until(run_dir, kill_at)
        # Anywhere inside the next step, possibly in the middle of writing a checkpoint.
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        finished(run_worker(run_dir, "--resume"))
        assert_same_run(reference, run_dir, kill_at)
        assert not [f for f in checkpoint_files(run_dir / "ckpt") if f.startswith(".")]  # no temp file left


@pytest.mark.parametrize("kill_in_prune", [9])
def test_killed_while_pruning_resumes_exactly_and_leaves_no_extra_files(tmp_path, reference, kill_in_prune):
    # The worker SIGKILLs itself as it is about to delete its k-th superseded checkpoint: the save that
    # superseded it is complete, the old file is still there.
    proc = run_worker(tmp_path, "--kill-in-prune", str(kill_in_prune))
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = checkpoint_files(tmp_path / "ckpt")
    assert len(left) == 4  # keep_last=3, plus the one whose deletion was cut off
    finished(run_worker(tmp_path, "--resume"))
    assert_same_run(reference, tmp_path, f"prune {kill_in_prune}")
    assert checkpoint_files(tmp_path / "ckpt") == ["epoch-0006.pt", "step-000000047.pt", "step-000000048.pt"]


def test_resumed_into_another_directory_equals_an_uninterrupted_run_and_leaves_the_first_alone(tmp_path, reference):
    proc = run_until(tmp_path, 20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    first = {name: (tmp_path / "ckpt" / name).read_bytes() for name in checkpoint_files(tmp_path / "ckpt")}
    finished(run_worker(tmp_path, "--resume", "--resume-from", str(tmp_path / "ckpt"), "--ckpt-dir", "elsewhere"))
    assert_same_run(reference, tmp_path, "elsewhere")
    assert {name: (tmp_path / "ckpt" / name).read_bytes() for name in checkpoint_files(tmp_path / "ckpt")} == first
    assert checkpoint_files(tmp_path / "elsewhere") == ["epoch-0006.pt", "step-000000047.pt", "step-000000048.pt"]


def test_sigterm_checkpoints_tears_down_exits_75_and_resumes_exactly(tmp_path, reference):
    proc = run_until(tmp_path, 29)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err.decode()
    assert (tmp_path / "teardown").read_text() == "Preempted"
    newest = load_checkpoint(Checkpoint.latest(tmp_path / "ckpt"))
    assert newest["position"]["global_step"] >= 29  # saved at the first step boundary after the signal
    finished(run_worker(tmp_path, "--resume"))
    assert_same_run(reference, tmp_path, "sigterm")
