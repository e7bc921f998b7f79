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
into ``<run>/output.log``. :func:`resume_run` continues a run that did not finish from its last
checkpoint, in the same run directory, exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import torch

from ..callbacks.checkpoint import Checkpoint
from ..callbacks.tensorboard import TensorBoard
from ..distributed import is_main_process
from .console import LOG_FILE, console_copied_to
from .parameters import fields, make_params, to_dict
from .record import FAILED, FINAL_STATES, FINISHED, HEARTBEAT_S, STALE_AFTER_S, Run, now, reproducibility
from .recorder import RunRecorder


def load_task(task: str | ModuleType | type) -> Any:
    """The task: a module object, a class (``Params`` and ``build`` as its attributes, for a task kept in a
    notebook or beside other code), an importable name (``"loopkit.demo"``, ``"package.module:Job"`` for a
    class) or a path to a ``.py`` file.

    Raises:
        ValueError: the module cannot be found, or lacks ``Params`` (a dataclass with ``epochs``) or ``build``.
    """
    if isinstance(task, (ModuleType, type)):
        module = task
    elif isinstance(task, str) and ":" in task and not task.endswith(".py"):
        name, _, attr = task.partition(":")
        try:
            module = getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f"cannot load task {task!r} ({error}); give module:Class of an importable module"
            ) from None
    elif isinstance(task, str) and task.endswith(".py"):
        if not os.path.isfile(task):
            raise ValueError(f"task file {task!r} does not exist")
        path = os.path.abspath(task)
        key = (
            f"_loopkit_task_{os.path.splitext(os.path.basename(path))[0]}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
        )
        if key in sys.modules:
            module = sys.modules[key]
        else:
            spec = importlib.util.spec_from_file_location(key, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"cannot load task file {task!r}")
            module = importlib.util.module_from_spec(spec)
            module.__loopkit_task__ = path  # type: ignore[attr-defined]
            sys.modules[key] = module  # dataclasses look their module up while the file runs
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[key]
                raise
    else:
        try:
            module = importlib.import_module(task)
        except ImportError as error:
            raise ValueError(f"cannot import task {task!r} ({error}); give a module name or a .py file") from None
    params_cls = getattr(module, "Params", None)
    if not (isinstance(params_cls, type) and dataclasses.is_dataclass(params_cls)) or not callable(
        getattr(module, "build", None)
    ):
        raise ValueError(
            f"task {task_id(module)!r} must define a dataclass Params and build(params, callbacks) -> Learner"
        )
    if not {"epochs", "max_steps"} & {f.name for f in fields(params_cls)}:
        raise ValueError(
            f"task {task_id(module)!r}: Params needs an 'epochs' field, a 'max_steps' field, or both (the length "
            "of the fit)"
        )
    return module


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


def task_id(module: Any) -> str:
    """How a record names the task so that it can be loaded again: its module name (``module:Class`` for a
    class), or its file's path."""
    if isinstance(module, type):
        return f"{module.__module__}:{module.__qualname__}"
    if getattr(module, "__loopkit_task__", None):
        return str(module.__loopkit_task__)
    if module.__name__ == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name:
            return spec.name  # python -m package.module
        return os.path.abspath(module.__file__ or module.__name__)
    return module.__name__


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
        run = _new_run(root, experiment, to_dict(params), name, task_id(module), monitor, mode)
        run.info["description"] = description
    run.info["threads"] = n_threads
    source = os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or os.getcwd()))
    repro = reproducibility(getattr(params, "seed", None), source, argv)
    recorder = RunRecorder(run, repro=repro, heartbeat=heartbeat, beats=beats)
    checkpoints = os.path.join(run.dir, "checkpoints")
    own = [
        recorder,
        _RunCheckpoint(checkpoints, every_epoch=True, keep_last=1, monitor=monitor, mode=mode),
        TensorBoard(os.path.join(run.dir, "tensorboard"), hparams=to_dict(params)),
    ]
    resume_from = Checkpoint.latest(checkpoints) if resuming and os.path.isdir(checkpoints) else None
    try:
        log = console_copied_to(os.path.join(run.dir, LOG_FILE)) if is_main_process() else contextlib.nullcontext()
        with threads_set(n_threads), log:
            learner = module.build(params, [*own, *callbacks])
            learner.fit(**budget, resume_from=resume_from)
    except BaseException as error:
        if is_main_process() and run.info["status"] not in FINAL_STATES:  # failed before the fit started
            run.start(repro)
            run.finish(FAILED, error, "interrupted" if isinstance(error, KeyboardInterrupt) else "error")
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
    root: str | os.PathLike, experiment: str, params: dict, name: str | None, task: str, monitor: str, mode: str
) -> Run:
    """The run record, created on disk by the main process only; other ranks hold it in memory."""
    if is_main_process():
        return Run.create(root, experiment, params, name=name, task=task, monitor=monitor, mode=mode)
    if name is None:
        raise ValueError(
            "under torch.distributed every rank must agree on the run's name: give one (run_task(name=...), "
            "--run-name); only rank 0 writes the record"
        )
    directory = os.path.join(os.fspath(root), experiment, name)
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
    stale_after: float = STALE_AFTER_S,
    callbacks: Sequence[object] = (),
    argv: Sequence[str] | None = None,
    heartbeat: float = HEARTBEAT_S,
    beats: Sequence[Callable[[], None]] = (),
) -> Run:
    """Continue the run ``<root>/<experiment>/<name>`` from its last checkpoint, in its own directory.

    The task and parameters are those recorded. A run with no checkpoint yet starts over in place.

    Raises:
        ValueError: the run FINISHED already, or it is STARTED and its heartbeat is fresh (it is running
            somewhere; wait ``stale_after`` seconds after it died).
    """
    run = Run.load(root, experiment, name)
    status, _ = run.effective(stale_after)
    if run.info["status"] == FINISHED:
        raise ValueError(f"run {experiment}/{name} has FINISHED; there is nothing to resume")
    if status == "STARTED":
        raise ValueError(
            f"run {experiment}/{name} is STARTED and its heartbeat is {run.heartbeat_age():.0f} s old: it looks "
            f"alive; a run is resumable once it failed or its heartbeat is older than {stale_after:g} s"
        )
    if run.info["task"] is None:
        raise ValueError(f"run {experiment}/{name} records no task; it was not made by run_task")
    return run_task(
        run.info["task"],
        dict(run.params),
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
