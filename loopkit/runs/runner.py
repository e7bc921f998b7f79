"""Run a task as a recorded run, and resume one by name.

A *task* is a module (or a ``.py`` file) that defines:

- ``Params``: a dataclass of the run's parameters (:mod:`loopkit.runs.parameters`), with an ``epochs`` field;
- ``build(params, callbacks) -> Learner``: the Learner for those parameters, with ``callbacks`` added to its own;
- optionally ``MONITOR`` and ``MODE``: the metric a sweep optimises by default and ``"min"``/``"max"``;
- optionally ``EXPERIMENT``: the experiment its runs go to from the command line when ``--experiment`` is not
  given (else ``"default"``).

:func:`run_task` creates the run record, adds a :class:`~loopkit.runs.recorder.RunRecorder`, a
:class:`~loopkit.callbacks.Checkpoint` into ``<run>/checkpoints`` (every epoch, the last one kept) and a
:class:`~loopkit.callbacks.TensorBoard` into ``<run>/tensorboard`` whose hparams entry holds the parameters, and
fits ``params.epochs`` epochs. :func:`resume_run` continues a run that did not finish from its last
checkpoint, in the same run directory, exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ..callbacks.checkpoint import Checkpoint
from ..callbacks.tensorboard import TensorBoard
from ..distributed import is_main_process
from .parameters import fields, make_params, to_dict
from .record import FAILED, FINAL_STATES, FINISHED, HEARTBEAT_S, STALE_AFTER_S, Run, reproducibility
from .recorder import RunRecorder


def load_task(task: str | ModuleType) -> ModuleType:
    """The task module: a module object, an importable name (``"loopkit.demo"``) or a path to a ``.py`` file.

    Raises:
        ValueError: the module cannot be found, or lacks ``Params`` (a dataclass with ``epochs``) or ``build``.
    """
    if isinstance(task, ModuleType):
        module = task
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
    if "epochs" not in {f.name for f in fields(params_cls)}:
        raise ValueError(f"task {task_id(module)!r}: Params needs an 'epochs' field (the length of the fit)")
    return module


def task_id(module: ModuleType) -> str:
    """How a record names the task so that it can be loaded again: its module name, or its file's path."""
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

    Returns:
        the run record, in status FINISHED.

    Raises:
        Exception: whatever the training raised, after recording the run as FAILED (or PRUNED).
    """
    module = load_task(task)
    if isinstance(params, dict):
        params = make_params(module.Params, params)
    monitor = str(monitor or getattr(module, "MONITOR", "valid_loss"))
    mode = str(mode or getattr(module, "MODE", "min" if monitor.endswith("loss") else "max"))
    resuming = run is not None
    if run is None:
        run = _new_run(root, experiment, to_dict(params), name, task_id(module), monitor, mode)
    source = os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or os.getcwd()))
    repro = reproducibility(getattr(params, "seed", None), source, argv)
    recorder = RunRecorder(run, repro=repro, heartbeat=heartbeat, beats=beats)
    checkpoints = os.path.join(run.dir, "checkpoints")
    own = [
        recorder,
        Checkpoint(checkpoints, every_epoch=True, keep_last=1),
        TensorBoard(os.path.join(run.dir, "tensorboard"), hparams=to_dict(params)),
    ]
    resume_from = Checkpoint.latest(checkpoints) if resuming else None
    try:
        learner = module.build(params, [*own, *callbacks])
        learner.fit(params.epochs, resume_from=resume_from)
    except BaseException as error:
        if is_main_process() and run.info["status"] not in FINAL_STATES:  # failed before the fit started
            run.start(repro)
            run.finish(FAILED, error, "interrupted" if isinstance(error, KeyboardInterrupt) else "error")
        raise
    return run


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
