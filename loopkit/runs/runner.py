"""Run a task as a recorded run, and resume one by name.

A *task* is a module (or a ``.py`` file) that defines:

- ``Params``: a dataclass of the run's parameters (:mod:`loopkit.runs.parameters`) with the fit's budget:
  an ``epochs`` field, a ``max_steps`` field (optimizer steps), or both (the fit stops at whichever comes
  first; a value of None leaves that budget out), and optionally ``valid_every`` (for a stream: an epoch of
  the loop is this many batches) and ``threads`` (the run's CPU thread count, see :func:`run_threads`);
- ``build(params, callbacks) -> Learner``: the Learner for those parameters, with ``callbacks`` added to its own;
- optionally ``MONITOR`` and ``MODE``: the metric a sweep optimises by default and ``"min"``/``"max"``;
- optionally ``EXPERIMENT``: the experiment its runs go to from the command line when ``--experiment`` is not
  given (else ``"default"``).

:func:`run_task` creates the run record, adds a :class:`~loopkit.runs.recorder.RunRecorder`, a
:class:`~loopkit.callbacks.Checkpoint` into ``<run>/checkpoints`` (every epoch, the last one kept) and a
:class:`~loopkit.callbacks.TensorBoard` into ``<run>/tensorboard`` whose hparams entry holds the parameters, and
fits the budget the parameters give (:func:`fit_budget`) with ``threads`` CPU threads, the console output copied
into ``<run>/output.log``. A task whose ``build`` refuses the parameters (a misspelt schedule name) is a
:class:`RunError` and leaves no run behind. SIGTERM and SIGINT during the fit save a checkpoint at the next step
boundary (:class:`~loopkit.callbacks.Preemption`), record the run PREEMPTED with the signal named, and end the
process with status 75; such a run resumes at once.

:func:`resume_run` continues a run that did not finish from its last checkpoint, in the same run directory,
exactly as if it had never stopped. It runs only code the user chose: the record names the task relative to
the project (the working directory) with the SHA-256 of its source, and a task outside the project, inside the
run root, or whose source changed since is refused unless the caller names the task (``task=``, ``--task``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import torch

from ..callbacks.checkpoint import Checkpoint
from ..callbacks.preemption import Preempted, Preemption
from ..callbacks.tensorboard import TensorBoard
from ..distributed import is_main_process
from .console import LOG_FILE, console_copied_to
from .locks import held
from .parameters import ParameterError, make_params, to_dict
from .paths import check_name, inside
from .record import FINAL_STATES, FINISHED, HEARTBEAT_S, RUN_LOCK, STALE_AFTER_S, STARTED, Run, now
from .recorder import RunRecorder, outcome
from .reproducibility import reproducibility
from .task import RunError, load_task, task_id, task_record, trusted_task, where

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGINT)


BUDGET_FIELDS = ("epochs", "max_steps", "valid_every")


def fit_budget(params: Any) -> dict[str, Any]:
    """The keyword arguments of ``Learner.fit`` that ``params`` give: ``n_epochs`` (``epochs``), ``max_steps`` and
    ``valid_every``, each None where the task has no such field or its value is None.

    Raises:
        ValueError: neither ``epochs`` nor ``max_steps`` is given (both None), naming both ways out.
    """
    epochs, max_steps, valid_every = (getattr(params, name, None) for name in BUDGET_FIELDS)
    if epochs is None and max_steps is None:
        raise ValueError(
            "the run has no length: give epochs (--epochs=N) or a step budget (--max_steps=N), or both; "
            f"got epochs={epochs!r}, max_steps={max_steps!r}"
        )
    return {"n_epochs": epochs, "max_steps": max_steps, "valid_every": valid_every}


#: The CPU threads a run uses unless told otherwise: see :func:`run_threads`.
DEFAULT_THREADS = 1


def run_threads(params: Any, threads: int | None = None) -> int:
    """The run's CPU thread count (``torch.set_num_threads``): ``threads`` if given, else the task's ``threads``
    parameter if it has one and it is not None, else :data:`DEFAULT_THREADS` (1).

    Why 1: loopkit's tasks are small models on small batches, where torch's default (one thread per core)
    spends more time waking and synchronising threads than it saves, and several processes (sweep workers,
    ranks) on one machine multiply the threads past the cores. docs/benchmarks.md has the measurements; give
    ``threads`` (``--threads``) for a model whose matrix products are large enough to share.

    Raises:
        ValueError: a count that is not a whole number >= 1.
    """
    value = threads if threads is not None else getattr(params, "threads", None)
    if value is None:
        return DEFAULT_THREADS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads must be a whole number >= 1, got threads={value!r}")
    return value


def run_task(
    task: str | ModuleType,
    params: Any,
    *,
    experiment: str,
    root: str | os.PathLike = "runs",
    name: str | None = None,
    monitor: str | None = None,
    mode: str | None = None,
    callbacks: Sequence[object] = (),
    argv: Sequence[str] | None = None,
    heartbeat: float = HEARTBEAT_S,
    beats: Sequence[Callable[[], None]] = (),
    run: Run | None = None,
    description: str | None = None,
    threads: int | None = None,
) -> Run:
    """Train ``task`` with ``params`` as the run ``<root>/<experiment>/<name>`` (a fresh name if None).

    Args:
        params: an instance of the task's ``Params`` (or a dict, checked by :func:`make_params`).
        monitor: the metric whose best value the record keeps (default: the task's ``MONITOR``, else
            ``valid_loss``).
        mode: ``"min"`` or ``"max"`` for ``monitor`` (default: the task's ``MODE``, else ``"min"``).
        callbacks: more callbacks for the Learner (a sweep adds its pruning callback).
        argv: the command line to record (default ``sys.argv``).
        run: an existing record to continue (used by :func:`resume_run`).
        description: a sentence saying what the run is for, kept in the record (``description``).
        threads: CPU threads for the fit (default: :func:`run_threads`); recorded as ``threads``.

    Returns:
        the run record, in status FINISHED.

    Raises:
        ValueError: parameters that give no budget (:func:`fit_budget`) or a bad ``threads``, before any record.
        RunError: the task cannot be loaded, or its ``build`` raised (a ``ValueError``, ``TypeError``,
            ``LookupError``: parameters it refuses); nothing is recorded.
        PathError: a name that is not one path component, or a run directory outside ``root``.
        Preempted: SIGTERM or SIGINT stopped the fit (a ``SystemExit`` with status 75) after a checkpoint; the
            run is recorded PREEMPTED.
        Exception: whatever the training raised, after recording the run as FAILED (or PRUNED).
    """
    module = load_task(task)
    if isinstance(params, dict):
        params = make_params(module.Params, params)
    budget = fit_budget(params)
    n_threads = run_threads(params, threads if run is None else threads or run.info.get("threads"))
    monitor = str(monitor or getattr(module, "MONITOR", "valid_loss"))
    mode = str(mode or getattr(module, "MODE", "min" if monitor.endswith("loss") else "max"))
    resuming = run is not None
    if run is None:
        check_name("experiment", experiment)
        name = check_name("run", name) if name is not None else None
        run = _new_run(root, experiment, to_dict(params), name, task_record(module), monitor, mode)
        run.info["description"] = description
    run.info["threads"] = n_threads
    source = os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or os.getcwd()))
    repro = reproducibility(getattr(params, "seed", None), source, argv)
    recorder = RunRecorder(run, repro=repro, heartbeat=heartbeat, beats=beats)
    # The run's own directories are resolved like the run: a checkpoints/ that is a link to elsewhere is refused.
    checkpoints = run.file("checkpoints")
    own = [
        recorder,
        _RunCheckpoint(checkpoints, every_epoch=True, keep_last=1, monitor=monitor, mode=mode),
        TensorBoard(run.file("tensorboard"), hparams=to_dict(params)),
    ]
    if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
        own.append(Preemption(PREEMPTION_SIGNALS))
    lock = run.file(RUN_LOCK)
    with held(lock, wait=False) if is_main_process() else contextlib.nullcontext(True) as mine:
        if not mine:  # checked before anything is written: the run stays as its trainer leaves it
            raise RunError(
                f"run {run.experiment}/{run.name} is being trained by another process on this machine (it holds "
                f"{lock}); wait for that process to end, then resume"
            )
        resume_from = Checkpoint.latest(checkpoints) if resuming and os.path.isdir(checkpoints) else None
        if resume_from is not None:  # a checkpoint linked out of the root is not loaded
            resume_from = run.file("checkpoints", os.path.basename(resume_from))
        try:
            log = console_copied_to(run.file(LOG_FILE)) if is_main_process() else contextlib.nullcontext()
            with threads_set(n_threads), log:
                try:
                    learner = module.build(params, [*own, *callbacks])
                except (ValueError, TypeError, LookupError) as error:
                    raise RunError(f"task {task_id(module)!r} refused the parameters: {where(error)}") from None
                learner.fit(**budget, resume_from=resume_from)
        except BaseException as error:
            if isinstance(error, Preempted):
                error.run = f"{run.experiment}/{run.name}"
            if is_main_process() and run.info["status"] not in (STARTED, *FINAL_STATES):  # ended before the fit
                if isinstance(error, RunError) and not resuming:  # the task refused its parameters: nothing ran
                    run.discard(written=(LOG_FILE, RUN_LOCK))  # so nothing stays recorded
                else:
                    run.start(repro)
                    status, reason = outcome(error)
                    run.finish(status, error, reason)
            raise
    exported = [
        {**e, "which": "last", "created": now()} for cb in learner.callbacks for e in getattr(cb, "exported", [])
    ]
    if exported and is_main_process():  # an Export callback ran at the end of the fit
        run.info["exports"] = [*run.info.get("exports", []), *exported]
        run.save()
    return run


class _RunCheckpoint(Checkpoint):
    """The run's checkpoints: the last epoch's, and ``best.pt`` at the best ``monitor`` value when the task
    produces that metric (a task that does not keeps no best, and its record says so: ``best`` is None)."""

    name = "Checkpoint"  # its state's name in the checkpoint, as a plain Checkpoint's

    def check(self, learner: Any) -> None:
        try:
            super().check(learner)
        except ValueError:
            self.monitor = None


@contextlib.contextmanager
def threads_set(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block, the previous count restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _new_run(
    root: str | os.PathLike, experiment: str, params: dict, name: str | None, task: dict, monitor: str, mode: str
) -> Run:
    """The run record, created on disk by the main process only; other ranks hold it in memory."""
    if is_main_process():
        return Run.create(root, experiment, params, name=name, task=task, monitor=monitor, mode=mode)
    if name is None:
        raise RunError(
            "under torch.distributed every rank must agree on the run's name: give one (run_task(name=...), "
            "--run-name); only rank 0 writes the record"
        )
    directory = inside(root, experiment, name)
    return Run(
        directory,
        {
            "name": name,
            "experiment": experiment,
            "status": "CREATED",
            "params": params,
            "task": task,
            "monitor": monitor,
            "mode": mode,
            "reason": None,
            "attempts": 0,
        },
    )


def resume_run(
    root: str | os.PathLike,
    experiment: str,
    name: str,
    *,
    task: str | ModuleType | None = None,
    stale_after: float = STALE_AFTER_S,
    callbacks: Sequence[object] = (),
    argv: Sequence[str] | None = None,
    heartbeat: float = HEARTBEAT_S,
    beats: Sequence[Callable[[], None]] = (),
) -> Run:
    """Continue the run ``<root>/<experiment>/<name>`` from its last checkpoint, in its own directory.

    The parameters are those recorded; the task is the recorded one once :func:`trusted_task` accepts it, or
    ``task`` when given (the record then names it). A run with no checkpoint yet starts over in place.

    Raises:
        RunError: the run FINISHED already, or it is STARTED and its heartbeat is fresh (it is running somewhere;
            wait ``stale_after`` seconds after it died), or its recorded task is not trusted (see
            :func:`trusted_task`).
        RecordError: its record is damaged.
    """
    run = Run.load(root, experiment, name)
    status, _ = run.effective(stale_after)
    if run.info["status"] == FINISHED:
        raise RunError(f"run {experiment}/{name} has FINISHED; there is nothing to resume")
    if status == STARTED:
        raise RunError(
            f"run {experiment}/{name} is STARTED and its heartbeat is {run.heartbeat_age() or 0:.0f} s old: it "
            f"looks alive; a run is resumable once it failed or its heartbeat is older than {stale_after:g} s"
        )
    if task is None:
        try:
            task = trusted_task(run.info["task"], root)
        except RunError as error:
            raise RunError(f"run {experiment}/{name}: {error}") from None
    else:
        module = load_task(task)
        run.info["task"] = task_record(module)
        task = module
    try:
        params = make_params(load_task(task).Params, dict(run.params))
    except ParameterError as error:
        raise RunError(f"run {experiment}/{name}: its recorded parameters do not fit the task: {error}") from None
    return run_task(
        task,
        params,
        experiment=experiment,
        root=root,
        monitor=run.info["monitor"],
        mode=run.info["mode"],
        callbacks=callbacks,
        argv=argv,
        heartbeat=heartbeat,
        beats=beats,
        run=run,
    )


__all__ = ["fit_budget", "resume_run", "run_task", "run_threads"]
