"""Checkpoint files: what is not one is named as such, damage is detected, loading runs no code, writes fail
clearly and leave the previous file, files get the umask's mode."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import loopkit.resume.file as checkpoint_file
from loopkit import Callback, Learner
from loopkit.resume.file import CheckpointError, save_atomic, stale_temp_files, temp_path_for
from loopkit.resume.load import load_checkpoint

from .test_resume import Snapshot, make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def real_state():
    model, loader, valid, opt = make_run()
    snap = Snapshot(at_step=8)
    Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[snap]).fit(2)
    return snap.state


@pytest.fixture
def real_file(tmp_path, real_state):
    path = tmp_path / "real.pt"
    save_atomic(real_state, path)
    return path


def fresh_learner():
    model, loader, valid, opt = make_run(seed=3)
    return Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=valid)


# ------------------------------------------------------------------------------------------ what is it
def write(path, data):
    path.write_bytes(data)
    return path


def bare_tensor(path):
    torch.save(torch.arange(4.0), path)
    return path


def version_1(path):
    state = {"format": "loopkit-checkpoint-1", "model": {}, "rng": {"numpy": np.random.get_state()}}
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p: write(p, b""), "is empty"),
        (lambda p: write(p, b"epoch,loss\n0,0.5\n"), "is a text file"),
        (lambda p: write(p, random.Random(0).randbytes(3000)), "first bytes are not a loopkit header"),
        (bare_tensor, "a plain torch.save file"),
        (version_1, "loopkit-checkpoint-1 file from an older loopkit, which this version does not read"),
        (lambda p: write(p, pickle.dumps({"format": "loopkit-checkpoint-2"})), "legacy pickle file"),
    ],
    ids=["empty", "text", "random", "bare-tensor", "version-1", "pickle"],
)
def test_files_that_are_not_checkpoints_raise_one_error_naming_the_path(tmp_path, make, says):
    path = make(tmp_path / "thing.pt")
    with pytest.raises(CheckpointError, match=says) as info:
        load_checkpoint(path)
    assert repr(str(path)) in str(info.value) and "not a loopkit checkpoint" in str(info.value)
    learner = fresh_learner()
    weights = [p.clone() for p in learner.model.parameters()]
    with pytest.raises(CheckpointError):
        learner.fit(2, resume_from=path)
    assert all(torch.equal(a, b) for a, b in zip(weights, learner.model.parameters()))


@pytest.mark.parametrize("keep", [0.5, 0.999, 60 / 10_000])
def test_truncated_files_are_named_as_such(tmp_path, real_file, keep):
    data = real_file.read_bytes()
    cut = write(tmp_path / "cut.pt", data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(cut)
    assert repr(str(cut)) in str(info.value)


def test_every_single_bit_flip_is_detected(tmp_path, real_file):
    data = real_file.read_bytes()
    rng = random.Random(12)
    positions = sorted(rng.sample(range(len(data) * 8), 150))
    positions[:3] = [8 * 3 + 1, 8 * 40 + 2, 8 * 80 + 5]  # the magic, the sha256 line, the size line
    flipped = tmp_path / "flipped.pt"
    for bit in positions:
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        flipped.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(flipped)
        assert repr(str(flipped)) in str(info.value), bit


def test_the_checksum_is_the_sha256_of_the_content(real_file):
    data = real_file.read_bytes()
    header_len = checkpoint_file._HEADER_LEN
    assert f"sha256={hashlib.sha256(data[header_len:]).hexdigest()}".encode() in data[:header_len]
    assert data.startswith(b"loopkit-checkpoint\nformat=loopkit-checkpoint-2\n")


# ------------------------------------------------------------------------------------------ no code runs
class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # loading would create the marker file


def file_with_verified_payload(path, obj):
    """A file with a correct loopkit header and checksum around an arbitrary pickle: only weights_only stops it."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    path.write_bytes(checkpoint_file._header(hashlib.sha256(payload).hexdigest(), len(payload)) + payload)
    return path


def test_a_file_carrying_a_pickled_callable_is_refused_without_running_it(tmp_path, real_state):
    marker = tmp_path / "ran"
    state = dict(real_state, run={"payload": RunsCode(str(marker))})
    path = file_with_verified_payload(tmp_path / "evil.pt", state)
    with pytest.raises(CheckpointError, match="holds objects other than data") as info:
        load_checkpoint(path)
    assert repr(str(path)) in str(info.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        fresh_learner().fit(2, resume_from=path)
    assert not marker.exists()
    # The same object in a plain torch.save file: refused at the header, never unpickled.
    torch.save(state, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a loopkit checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    assert not marker.exists()


def test_saving_refuses_what_could_not_be_loaded_back_naming_its_place(tmp_path):
    for value, kind in [(np.float64(1.5), "numpy.float64"), (len, "builtin_function_or_method"), ({1, 2}, "set")]:
        with pytest.raises(
            TypeError, match=f"state/callbacks/Mine/value is a builtins.{kind}|state/callbacks/Mine/value is a {kind}"
        ):
            save_atomic({"callbacks": {"Mine": {"value": value}}}, tmp_path / "x.pt")
    assert os.listdir(tmp_path) == []


def test_a_callback_state_that_is_not_data_fails_at_the_save_not_at_the_resume(tmp_path):
    from loopkit import Checkpoint

    class Bad(Callback):
        def after_epoch(self, learner):
            pass

        def state_dict(self):
            return {"best": np.float32(0.5)}

    model, loader, _, opt = make_run()
    with pytest.raises(TypeError, match=r"state/callbacks/Bad/best is a numpy\.float32"):
        Learner(model, loader, opt, torch.nn.functional.mse_loss, callbacks=[Bad(), Checkpoint(tmp_path)]).fit(1)


def test_rng_states_are_plain_data(real_state):
    checkpoint_file.check_data_only(real_state)  # raises on anything weights_only would refuse
    numpy_state = real_state["rng"]["ranks"][0]["now"]["numpy"]
    assert numpy_state["key"].dtype == torch.int64 and numpy_state["key"].numel() == 624


# ------------------------------------------------------------------------------------------ writing
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_atomic({"x": 1}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c.pt").st_mode & 0o777 == 0o666 & ~umask


class FillsUp:
    """A file on a device that is full after `room` bytes (what the kernel does: ENOSPC from write)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if self.f.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_names_the_file_and_the_cause_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"weights": torch.arange(5.0)}, path)
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        checkpoint_file.os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode, buffering=0), 3000)
    )
    with pytest.raises(
        OSError, match=r"could not write checkpoint .*ckpt\.pt'.*No space left on device.*k \+ 1"
    ) as info:
        save_atomic({"weights": torch.zeros(10_000)}, path)
    assert info.value.errno == errno.ENOSPC
    assert "inline_container" not in str(info.value)  # torch's own report of it says only "unexpected pos"
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["weights"], torch.arange(5.0))
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_a_real_file_size_limit_fails_clearly(tmp_path):
    # RLIMIT_FSIZE makes the kernel refuse the write (EFBIG), as a full disk refuses with ENOSPC.
    script = textwrap.dedent(f"""
        import resource, signal, torch
        from loopkit.resume.file import save_atomic
        from loopkit.resume.load import load_checkpoint
        save_atomic({{"w": torch.arange(3.0)}}, {str(tmp_path / "c.pt")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            save_atomic({{"w": torch.zeros(100_000)}}, {str(tmp_path / "c.pt")!r})
        except OSError as error:
            print("ERROR", error.errno, error)
        print("KEPT", load_checkpoint({str(tmp_path / "c.pt")!r})["w"].tolist())
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        f"ERROR {errno.EFBIG} [Errno {errno.EFBIG}] could not write checkpoint '{tmp_path / 'c.pt'}': File too large"
        in out.stdout
    )
    assert "KEPT [0.0, 1.0, 2.0]" in out.stdout
    assert os.listdir(tmp_path) == ["c.pt"]


# ------------------------------------------------------------------------------------------ temp files
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_temp_files_name_their_writer_and_only_dead_local_writers_are_stale(tmp_path):
    mine = temp_path_for(str(tmp_path / "step-1.pt"))
    host = checkpoint_file._HOST
    assert os.path.basename(mine).startswith(f".step-1.pt.loopkit-tmp-{host}-{os.getpid()}-")
    dead = tmp_path / f".step-2.pt.loopkit-tmp-{host}-{dead_pid()}-00ff00ff"
    alive = tmp_path / f".step-3.pt.loopkit-tmp-{host}-{os.getppid()}-00ff00ff"  # our parent: alive
    elsewhere = tmp_path / f".step-4.pt.loopkit-tmp-otherhost-{dead_pid()}-00ff00ff"  # cannot tell: keep
    not_ours = tmp_path / ".step-5.pt.tmp-12345"
    for f in (mine, dead, alive, elsewhere, not_ours):
        open(f, "w").close()
    assert stale_temp_files(str(tmp_path)) == [str(dead)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="tells a directory's fd by /proc (Linux)")
def test_every_atomic_replace_fsyncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    # Checkpoints and run records share one primitive: the rename survives a power cut only once the directory
    # holding it is fsynced, after the rename (POSIX rename(2) durability).
    from loopkit.runs.record import write_atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_atomic({"x": torch.ones(2)}, tmp_path / "a.pt")
    write_atomic(str(tmp_path / "run.json"), "{}\n")
    assert events == ["fsync-file", "rename", "fsync-dir"] * 2
    assert (tmp_path / "run.json").read_text() == "{}\n" and sorted(os.listdir(tmp_path)) == ["a.pt", "run.json"]
