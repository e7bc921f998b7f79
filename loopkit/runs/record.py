"""Run records: one directory per run under ``<root>/<experiment>/<run>``, written so a crash never tears a file.

A run directory holds:

============================  ==============================================================================
``run.json``                  name, experiment, status, error, times, parameters, the task, the monitored
                              metric, final and best values, reproducibility info, sweep trial numbers
``metrics.jsonl``             one JSON object per finished epoch (``Metrics.history``)
``heartbeat``                 the time of the last sign of life of the process running it
``checkpoints/``              :class:`~loopkit.callbacks.Checkpoint` files (resume from the latest)
``tensorboard/``              :class:`~loopkit.callbacks.TensorBoard` event files, hparams entry included
============================  ==============================================================================

``run.json``, ``metrics.jsonl`` and ``heartbeat`` are replaced whole (temporary file, fsync, rename, directory
fsync), never appended to, so a reader sees the previous version or the next, never half of one.

Status: ``CREATED`` -> ``STARTED`` -> ``FINISHED``, ``FAILED`` (with the error and a reason) or ``PRUNED``. A
process that dies without a word (SIGKILL, power loss) leaves ``STARTED`` behind with a heartbeat that stops:
once it is older than ``stale_after`` seconds, :attr:`Run.status` reads ``FAILED`` with reason ``"interrupted"``.

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> run = Run.create(root, "demo", {"lr": 0.1}, name="first")
    >>> run.status, Run.load(root, "demo", "first").params
    ('CREATED', {'lr': 0.1})
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..resume.file import replace_atomically

CREATED, STARTED, FINISHED, FAILED, PRUNED = "CREATED", "STARTED", "FINISHED", "FAILED", "PRUNED"
FINAL_STATES = (FINISHED, FAILED, PRUNED)
HEARTBEAT_S = 5.0  # seconds between heartbeats
STALE_AFTER_S = 30.0  # a STARTED run whose heartbeat is older than this is interrupted

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


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


def check_name(kind: str, name: str) -> str:
    """A run or experiment name: letters, digits, ``-``, ``_``, ``.``; not starting with ``.``."""
    if not isinstance(name, str) or not name or name.startswith(".") or not set(name) <= _NAME_CHARS:
        raise ValueError(f"{kind} name {name!r}: use letters, digits, '-', '_' and '.', not starting with '.'")
    return name


def new_run_name() -> str:
    """A fresh, sortable run name: UTC time to the second and 4 random hex digits (``20261130-104300-3fa2``)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def reproducibility(seed: Any = None, source_dir: str | None = None, argv: Sequence[str] | None = None) -> dict:
    """What reproducing a run needs: command line, seed, git commit and dirty flag, Python/torch/loopkit versions."""
    import torch

    try:
        from importlib.metadata import version

        loopkit_version = version("loopkit")
    except Exception:  # not installed (run from a checkout)
        loopkit_version = None
    git_dir = source_dir or os.getcwd()
    commit, dirty = _git(git_dir, "rev-parse", "HEAD"), None
    if commit is not None:
        status = _git(git_dir, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {
        # sys.orig_argv keeps "-m package.module" where sys.argv shows the module's file.
        "command": shlex.join(
            getattr(sys, "orig_argv", [sys.executable, *sys.argv]) if argv is None else [sys.executable, *argv]
        ),
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "seed": seed,
        "git_commit": commit,
        "git_dirty": dirty,
        "git_dir": git_dir if commit is not None else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loopkit": getattr(sys.modules.get("loopkit"), "__version__", None) or loopkit_version,
        "host": platform.node(),
        "pid": os.getpid(),
    }


@functools.lru_cache(maxsize=16)  # once per process and directory: a sweep runs many trials from one tree
def _git(directory: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", directory, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


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
        task: str | None = None,
        monitor: str | None = None,
        mode: str = "max",
        repro: Mapping[str, Any] | None = None,
    ) -> Run:
        """A new run directory with ``run.json`` in status CREATED; a given ``name`` must not exist yet."""
        check_name("experiment", experiment)
        name = check_name("run", name) if name is not None else new_run_name()
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r}: use 'min' or 'max'")
        directory = os.path.join(os.fspath(root), experiment, name)
        os.makedirs(os.path.dirname(directory), exist_ok=True)
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
            "task": task,
            "params": json.loads(json.dumps(dict(params))),
            "monitor": monitor,
            "mode": mode,
            "epochs_done": 0,
            "final": {},
            "best": None,
            "repro": dict(repro or {}),
            "attempts": 0,
            "trials": [],
        }
        run = cls(directory, info)
        run.save()
        return run

    @classmethod
    def load(cls, root: str | os.PathLike, experiment: str, name: str) -> Run:
        """The run ``<root>/<experiment>/<name>``; ``FileNotFoundError`` names the path and the runs there."""
        directory = os.path.join(os.fspath(root), experiment, name)
        return cls.from_dir(directory)

    @classmethod
    def from_dir(cls, directory: str) -> Run:
        path = os.path.join(directory, "run.json")
        if not os.path.isfile(path):
            parent = os.path.dirname(directory)
            known = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
            raise FileNotFoundError(f"no run record at {path!r}; runs there: {', '.join(known) or 'none'}")
        with open(path) as f:
            return cls(directory, json.load(f))

    # ------------------------------------------------------------------------------------------ reading
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
            with open(os.path.join(self.dir, "heartbeat")) as f:
                return time.time() - float(f.read())
        except (OSError, ValueError):
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
        """The per-epoch metrics written so far (``metrics.jsonl``)."""
        path = os.path.join(self.dir, "metrics.jsonl")
        if not os.path.isfile(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

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
        """Write ``run.json`` atomically."""
        write_atomic(os.path.join(self.dir, "run.json"), json.dumps(self.info, indent=2, default=repr) + "\n")

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
        lines = "".join(json.dumps(dict(row), default=repr) + "\n" for row in history)
        write_atomic(os.path.join(self.dir, "metrics.jsonl"), lines)
        self.info["epochs_done"] = len(history)
        if history:
            self.info["final"] = {k: v for k, v in history[-1].items() if k != "epoch"}
            monitor = self.info["monitor"]
            values = [(row[monitor], row["epoch"]) for row in history if monitor and monitor in row]
            if values:
                pick = max if self.info["mode"] == "max" else min
                value, epoch = pick(values, key=lambda v: v[0])
                self.info["best"] = {"metric": monitor, "value": value, "epoch": epoch}
        self.save()

    def finish(self, status: str, error: BaseException | str | None = None, reason: str | None = None) -> None:
        """STARTED -> FINISHED, FAILED (``error`` recorded as ``Type: message``) or PRUNED."""
        if status not in FINAL_STATES:
            raise ValueError(f"finish(status={status!r}): use one of {FINAL_STATES}")
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        self.info.update(status=status, error=error, reason=reason, ended=now())
        self.save()

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


def list_runs(root: str | os.PathLike, experiment: str) -> list[Run]:
    """Every run of ``experiment`` under ``root`` (directories without a readable ``run.json`` are skipped)."""
    directory = os.path.join(os.fspath(root), experiment)
    if not os.path.isdir(directory):
        known = sorted(os.listdir(os.fspath(root))) if os.path.isdir(os.fspath(root)) else []
        raise FileNotFoundError(
            f"no experiment {experiment!r} under {os.fspath(root)!r}; experiments: {known or 'none'}"
        )
    runs = []
    for name in sorted(os.listdir(directory)):
        try:
            runs.append(Run.from_dir(os.path.join(directory, name)))
        except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
            continue
    return runs
