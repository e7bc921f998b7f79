"""Run records: one directory per run under ``<root>/<experiment>/<run>``, written so a crash never tears a file.

A run directory holds:

============================  ==============================================================================
``run.json``                  name, experiment, status, error, times, parameters, the task, the monitored
                              metric, final and best values, reproducibility info, sweep trial numbers
``metrics.jsonl``             one JSON object per finished epoch (``Metrics.history``)
``heartbeat``                 the time of the last sign of life of the process running it
``checkpoints/``              :class:`~loopkit.callbacks.Checkpoint` files (resume from the latest)
``tensorboard/``              :class:`~loopkit.callbacks.TensorBoard` event files, hparams entry included
``run.lock``                  locked (``flock``) by the process training the run: a second one on the same
                              machine, say a resume started twice, is refused before it writes anything
============================  ==============================================================================

``run.json``, ``metrics.jsonl`` and ``heartbeat`` are replaced whole (temporary file, fsync, rename, directory
fsync), never appended to, so a reader sees the previous version or the next, never half of one.

Status: ``CREATED`` -> ``STARTED`` -> ``FINISHED``, ``FAILED`` (with the error and a reason), ``PRUNED`` or
``PREEMPTED`` (stopped by SIGTERM or SIGINT after a checkpoint; the reason names the signal). A process that dies
without a word (SIGKILL, power loss) leaves ``STARTED`` behind with a heartbeat that stops: once it is older
than ``stale_after`` seconds, :attr:`Run.status` reads ``FAILED`` with reason ``"interrupted"``.

Records are checked when read: ``run.json`` must be UTF-8 JSON with every field of the right type, and carries a
SHA-256 ``checksum`` of its own content and of ``metrics.jsonl``, so an edited or damaged byte that still
parses is reported (:class:`~loopkit.runs.record_check.RecordError`, naming the file and what is wrong) instead
of shown; :mod:`loopkit.runs.record_check` holds those checks.

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> run = Run.create(root, "demo", {"lr": 0.1}, name="first")
    >>> run.status, Run.load(root, "demo", "first").params
    ('CREATED', {'lr': 0.1})
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..resume.file import replace_atomically
from .paths import check_name, inside
from .record_check import RecordError, checksum, read_metrics, read_record

CREATED, STARTED, FINISHED, FAILED, PRUNED, PREEMPTED = (
    "CREATED",
    "STARTED",
    "FINISHED",
    "FAILED",
    "PRUNED",
    "PREEMPTED",
)
FINAL_STATES = (FINISHED, FAILED, PRUNED, PREEMPTED)
STATES = (CREATED, STARTED, *FINAL_STATES)
HEARTBEAT_S = 5.0  # seconds between heartbeats
STALE_AFTER_S = 30.0  # a STARTED run whose heartbeat is older than this is interrupted
RUN_LOCK = "run.lock"  # held by the process training the run (loopkit.runs.locks.held)


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` whole with ``text`` (UTF-8): a crash leaves the old file or the new one, and the rename
    survives a power cut (:func:`loopkit.resume.file.replace_atomically`)."""
    data = text.encode()
    replace_atomically(path, lambda f: f.write(data))


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity")


def metric_mode(metric: str, monitor: str | None = None, mode: str | None = None) -> str:
    """Whether a higher (``"max"``) or lower (``"min"``) ``metric`` is better.

    The rule: the run's monitored metric follows the run's ``mode``; any other metric whose name ends in one of
    :data:`LOWER_IS_BETTER` (``valid_loss``, ``train_error``, ``valid_mse``, ...) is minimised, every other
    one (accuracy, recall, F1, ...) maximised.

    Example:
        >>> metric_mode("valid_loss"), metric_mode("valid_accuracy"), metric_mode("score", "score", "min")
        ('min', 'max', 'min')
    """
    if monitor is not None and metric == monitor and mode in ("min", "max"):
        return mode
    last = metric.lower().replace("-", "_").rsplit("_", 1)[-1]
    return "min" if last in LOWER_IS_BETTER else "max"


def new_run_name() -> str:
    """A fresh, sortable run name: UTC time to the second and 4 random hex digits (``20261130-104300-3fa2``)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class Run:
    """One run's record on disk. Create with :meth:`create`, read with :meth:`load` or :func:`list_runs`.

    Attributes:
        dir: the run directory; ``checkpoints``/``tensorboard`` are sub-directories of it.
        info: the content of ``run.json`` as a dict (``status``, ``params``, ``best``, ``final``, ...).
    """

    def __init__(self, directory: str, info: dict[str, Any]) -> None:
        self.dir = directory
        self.info = info

    # ------------------------------------------------------------------------------------------ creating
    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        experiment: str,
        params: Mapping[str, Any],
        *,
        name: str | None = None,
        task: str | Mapping[str, Any] | None = None,
        monitor: str | None = None,
        mode: str = "max",
        repro: Mapping[str, Any] | None = None,
    ) -> Run:
        """A new run directory with ``run.json`` in status CREATED; a given ``name`` must not exist yet."""
        check_name("experiment", experiment)
        name = check_name("run", name) if name is not None else new_run_name()
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r}: use 'min' or 'max'")
        os.makedirs(inside(root, experiment), exist_ok=True)
        directory = inside(root, experiment, name)
        try:
            os.mkdir(directory)  # atomic: two processes cannot both create the same run
        except FileExistsError:
            raise FileExistsError(
                f"run {experiment}/{name} already exists in {os.fspath(root)!r}; give another name, or resume it "
                f"(python -m loopkit.runs resume {experiment}/{name})"
            ) from None
        info = {
            "name": name,
            "experiment": experiment,
            "status": CREATED,
            "reason": None,
            "error": None,
            "created": now(),
            "started": None,
            "ended": None,
            "task": dict(task) if isinstance(task, Mapping) else task,
            "params": json.loads(json.dumps(dict(params))),
            "monitor": monitor,
            "mode": mode,
            "epochs_done": 0,
            "final": {},
            "best": None,
            "repro": dict(repro or {}),
            "attempts": 0,
            "trials": [],
            "metrics_sha256": None,
            "metrics_previous_sha256": None,
        }
        run = cls(directory, info)
        run.save()
        return run

    @classmethod
    def load(cls, root: str | os.PathLike, experiment: str, name: str) -> Run:
        """The run ``<root>/<experiment>/<name>``, its record checked (:meth:`from_dir`).

        Raises:
            PathError: a name that is not one path component, or a run directory that resolves outside ``root``.
            FileNotFoundError: no record there (naming the path and the runs there).
            RecordError: a damaged record (naming the file and what is wrong).
        """
        check_name("experiment", experiment)
        check_name("run", name)
        return cls.from_dir(inside(root, experiment, name))

    @classmethod
    def from_dir(cls, directory: str) -> Run:
        """The run recorded in ``directory``; its ``run.json`` is decoded, checked field by field and against
        its checksum before anything of it is used."""
        path = _in_run(directory, "run.json")
        if not os.path.isfile(path):
            parent = os.path.dirname(directory)
            known = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
            raise FileNotFoundError(f"no run record at {path!r}; runs there: {', '.join(known) or 'none'}")
        info = read_record(path, states=STATES)
        return cls(directory, info)

    # ------------------------------------------------------------------------------------------ reading
    def file(self, *parts: str) -> str:
        """The path of ``parts`` in the run's directory; ``PathError`` if it resolves out of the root (a file
        there that is a link to elsewhere: a crafted run directory is never read or written through)."""
        return _in_run(self.dir, *parts)

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def experiment(self) -> str:
        return self.info["experiment"]

    @property
    def params(self) -> dict[str, Any]:
        return self.info["params"]

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat, or None if there never was one."""
        try:
            with open(self.file("heartbeat")) as f:
                return time.time() - float(f.read())
        except (OSError, ValueError):  # a PathError too: a heartbeat linked out of the root is not read
            return None

    def is_stale(self, stale_after: float = STALE_AFTER_S) -> bool:
        """True if the run is STARTED but its process has shown no sign of life for ``stale_after`` seconds."""
        if self.info["status"] != STARTED:
            return False
        age = self.heartbeat_age()
        return age is None or age > stale_after

    def effective(self, stale_after: float = STALE_AFTER_S) -> tuple[str, str | None]:
        """``(status, reason)`` as a reader should see them: a stale STARTED run is ``FAILED``, ``interrupted``."""
        if self.is_stale(stale_after):
            return FAILED, "interrupted"
        return self.info["status"], self.info["reason"]

    @property
    def status(self) -> str:
        return self.effective()[0]

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch metrics written so far (``metrics.jsonl``), checked against the checksum in ``run.json``.

        Raises:
            RecordError: the file does not match its checksum, or a line is not a JSON object (naming the line).
        """
        path = self.file("metrics.jsonl")
        expected = {self.info.get("metrics_sha256"), self.info.get("metrics_previous_sha256")} - {None}
        if not os.path.isfile(path):
            if expected:
                raise RecordError(f"{path}: missing, though run.json records metrics for it")
            return []
        return read_metrics(path, expected)

    def value(self, metric: str, which: str = "best") -> float | None:
        """The run's ``best`` or ``final`` value of ``metric``; None if it never produced it.

        The best follows the metric's own direction (:func:`metric_mode`): the lowest ``valid_loss`` and the
        highest ``valid_accuracy`` of the same run, whichever of them the run monitored.
        """
        if which == "final":
            return self.info["final"].get(metric)
        rows = [r[metric] for r in self.metrics() if metric in r]
        if not rows:
            return None
        return max(rows) if metric_mode(metric, self.info["monitor"], self.info["mode"]) == "max" else min(rows)

    # ------------------------------------------------------------------------------------------ writing
    def save(self) -> None:
        """Write ``run.json`` atomically, with the checksum of its content."""
        info = json.loads(json.dumps({k: v for k, v in self.info.items() if k != "checksum"}, default=repr))
        info["checksum"] = checksum(info)
        self.info = info
        write_atomic(os.path.join(self.dir, "run.json"), json.dumps(info, indent=2) + "\n")

    def beat(self) -> None:
        """Record a sign of life (atomically, the current time)."""
        write_atomic(os.path.join(self.dir, "heartbeat"), repr(time.time()))

    def start(self, repro: Mapping[str, Any] | None = None) -> None:
        """CREATED (or an interrupted/failed run being resumed) -> STARTED."""
        self.beat()
        self.info.update(status=STARTED, reason=None, error=None, started=now(), ended=None)
        self.info["attempts"] += 1
        if repro is not None:
            self.info["repro"] = dict(repro)
        self.save()

    def record_epochs(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``history`` and update final and best values."""
        lines = "".join(json.dumps(dict(row), default=repr) + "\n" for row in history).encode()
        # run.json first, naming both checksums: a crash between the two renames leaves the previous
        # metrics.jsonl, which still matches.
        self.info["metrics_previous_sha256"] = self.info.get("metrics_sha256")
        self.info["metrics_sha256"] = hashlib.sha256(lines).hexdigest()
        self.info["epochs_done"] = sum(row.get("epoch", 0) >= 0 for row in history)  # not ValidateFirst's -1
        if history:
            self.info["final"] = {k: v for k, v in history[-1].items() if k != "epoch"}
            monitor = self.info["monitor"]
            values = [(row[monitor], row["epoch"]) for row in history if monitor and monitor in row]
            if values:
                pick = max if self.info["mode"] == "max" else min
                value, epoch = pick(values, key=lambda v: v[0])
                self.info["best"] = {"metric": monitor, "value": value, "epoch": epoch}
        self.save()
        replace_atomically(os.path.join(self.dir, "metrics.jsonl"), lambda f: f.write(lines))

    def finish(self, status: str, error: BaseException | str | None = None, reason: str | None = None) -> None:
        """STARTED -> FINISHED, FAILED (``error`` recorded as ``Type: message``) or PRUNED."""
        if status not in FINAL_STATES:
            raise ValueError(f"finish(status={status!r}): use one of {FINAL_STATES}")
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        self.info.update(status=status, error=error, reason=reason, ended=now())
        self.save()

    def discard(self, written: Sequence[str] = ()) -> None:
        """Remove a run that never started: its ``run.json``, the files named in ``written`` (what this process
        wrote into it, e.g. its console log) and the directories it made, if empty. Nothing else is deleted (a
        file someone put there keeps the directory)."""
        if self.info["status"] != CREATED:
            raise ValueError(
                f"run {self.experiment}/{self.name} is {self.info['status']}: only a CREATED run is discarded"
            )
        for name in ("run.json", *written):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, name))
        for sub in ("checkpoints", "tensorboard", ""):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(self.dir, sub))

    def add_trial(self, study: str, number: int) -> None:
        """Note that Optuna trial ``number`` of ``study`` ran (a resumed run reports to a new trial)."""
        self.info["trials"].append({"study": study, "number": number})
        self.save()


class Heartbeat:
    """A daemon thread calling each of ``beats`` every ``interval`` seconds until :meth:`stop`.

    A beat that raises is reported on stderr once and skipped after; the training never fails because of it.
    """

    def __init__(self, beats: Sequence[Callable[[], None]], interval: float = HEARTBEAT_S) -> None:
        self.beats, self.interval = list(beats), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loopkit-heartbeat", daemon=True)
        self._broken: set[int] = set()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for i, beat in enumerate(self.beats):
                if i in self._broken:
                    continue
                try:
                    beat()
                except Exception as error:  # a full disk must not kill the training; say it once
                    self._broken.add(i)
                    print(f"loopkit: heartbeat {beat!r} failed and is stopped: {error}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(1.0, 2 * self.interval))


class DamagedRun:
    """A directory under an experiment whose record cannot be read: :func:`list_runs` lists it with the problem."""

    def __init__(self, directory: str, problem: str) -> None:
        self.dir, self.name, self.problem = directory, os.path.basename(directory), problem


def _in_run(directory: str, *parts: str) -> str:
    """``os.path.join(directory, *parts)`` checked by :func:`inside` against the root two levels above."""
    experiment_dir = os.path.dirname(os.path.abspath(directory))
    root = os.path.dirname(experiment_dir)
    return inside(root, os.path.basename(experiment_dir), os.path.basename(os.path.abspath(directory)), *parts)


def list_runs(root: str | os.PathLike, experiment: str) -> list[Run | DamagedRun]:
    """Every run directory of ``experiment`` under ``root``, in name order; one whose record is missing,
    damaged or outside the root is a :class:`DamagedRun` naming the file and what is wrong."""
    check_name("experiment", experiment)
    directory = inside(root, experiment)
    if not os.path.isdir(directory):
        known = sorted(os.listdir(os.fspath(root))) if os.path.isdir(os.fspath(root)) else []
        raise FileNotFoundError(
            f"no experiment {experiment!r} under {os.fspath(root)!r}; experiments: {known or 'none'}"
        )
    runs: list[Run | DamagedRun] = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isdir(path):
            continue  # a sweep's storage, plot or lock file
        try:
            check_name("run", name)
            runs.append(Run.from_dir(inside(root, experiment, name)))
        except (OSError, ValueError) as error:  # PathError and RecordError are ValueErrors
            runs.append(DamagedRun(path, str(error)))
    return runs
