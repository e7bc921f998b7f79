"""The model out of a run: open a run by experiment and name (or its directory) and get its parameters,
status, metrics and its best or last model, ready for inference.

:func:`open_run` returns an :class:`OpenedRun` (a :class:`~loopkit.runs.record.Run` that also reads its
checkpoints). ``run.model(task, which="best")`` builds the model with the code you pass (the task module, or a
function of the parameters), verifies the checkpoint (header, SHA-256, data only) and that its weights fit the
model, and only then loads them and puts the model in eval mode. The record never decides what code runs: the
task it names is not imported. A bare checkpoint file, from a run or from any :class:`~loopkit.callbacks.Checkpoint`,
goes through :func:`load_model` the same way.

Example:
    >>> import tempfile, torch
    >>> from loopkit.runs.runner import run_task
    >>> root = tempfile.mkdtemp()
    >>> _ = run_task("loopkit.demo", {"epochs": 1, "quiet": True}, experiment="digits", name="a", root=root)
    >>> run = open_run("digits", "a", root=root)
    >>> import loopkit.demo
    >>> model = run.model(loopkit.demo, which="best")
    >>> run.status, model.training, model(torch.zeros(1, 64)).shape
    ('FINISHED', False, torch.Size([1, 10]))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch

from ..callbacks.checkpoint import Checkpoint
from ..callbacks.export import FORMATS, export_model
from ..resume.file import CheckpointError
from ..resume.load import load_checkpoint
from .parameters import make_params
from .record import Run, now

WHICH = ("best", "last")


class OpenedRun(Run):
    """A run record opened for reading back what it made; see :func:`open_run`.

    Attributes (from :class:`~loopkit.runs.record.Run`): ``params``, ``status``, ``info`` (the whole record:
    ``best``, ``final``, ``description``, ``optimizer``, ``exports``, ...), ``metrics()`` (one dict per epoch),
    ``dir``.
    """

    def checkpoint_path(self, which: str = "best") -> str:
        """The path of the run's ``"best"`` checkpoint (at its best monitored value) or its ``"last"`` one.

        Raises:
            ValueError: ``which`` is neither ``"best"`` nor ``"last"``.
            FileNotFoundError: the run has no such checkpoint (it never finished an epoch; or, for ``"best"``,
                its task never produced the monitored metric), naming what to do instead.
        """
        if which not in WHICH:
            raise ValueError(f"which={which!r}: use 'best' (the best monitored epoch) or 'last' (the newest)")
        directory = self.file("checkpoints")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"run {self.experiment}/{self.name} has no checkpoints ({directory!r} is missing)")
        if which == "last":
            path = Checkpoint.latest(directory)
            if path is None:
                raise FileNotFoundError(f"run {self.experiment}/{self.name} finished no epoch: no checkpoint yet")
            return self.file("checkpoints", os.path.basename(path))
        path = self.file("checkpoints", "best.pt")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"run {self.experiment}/{self.name} kept no best checkpoint (its monitor "
                f"{self.info.get('monitor')!r} was never produced); use which='last'"
            )
        return path

    def model(
        self, task: ModuleType | type | Callable[[Any], Any], which: str = "best", *, device: str | torch.device = "cpu"
    ) -> torch.nn.Module:
        """The run's ``which`` model with its weights loaded, in eval mode, on ``device``.

        Args:
            task: the task the run was made with (a module or class: its ``Params`` and ``build`` make the model,
                as the run did), or a function taking the run's parameters (a dict) and returning the model (or a Learner).
            which: ``"best"`` or ``"last"`` (see :meth:`checkpoint_path`).

        Raises:
            FileNotFoundError: no such checkpoint (see :meth:`checkpoint_path`).
            CheckpointError: the checkpoint is damaged, or its weights do not fit the model built (naming the
                keys or shapes); the model is not touched.
        """
        path = self.checkpoint_path(which)
        state = load_checkpoint(path)  # verified before any model exists
        if isinstance(task, (ModuleType, type)):
            job: Any = task  # a task module or class: Params and build
            built = job.build(make_params(job.Params, dict(self.params)), [])
        elif callable(task):
            built = task(dict(self.params))
        else:
            raise TypeError(f"task must be the task module or a function of the parameters, got {task!r}")
        model = getattr(built, "model", built)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"the task built {type(built).__name__}, not a torch.nn.Module or a Learner")
        return load_model(model, state, device=device, source=path)

    def export(
        self,
        task: ModuleType | type | Callable[[Any], Any],
        example: Any,
        formats: Sequence[str] = ("onnx", "torch.export"),
        *,
        which: str = "best",
    ) -> list[dict[str, Any]]:
        """Export the run's ``which`` model (see :meth:`model`) into ``<run>/export/<which>.onnx`` / ``.pt2``
        (:func:`~loopkit.callbacks.export.export_model`) and add each file to the record's ``exports``.

        Args:
            example: an input as the model takes, shape (batch, ...); the batch dimension stays dynamic.

        Returns:
            the entries added: ``{"format", "path", "which", "created"}``.

        Raises:
            ExportError: the model cannot be exported in a format, naming why (nothing is recorded for it).
        """
        model = self.model(task, which)
        added = []
        for format in [formats] if isinstance(formats, str) else formats:
            path = self.file("export", which + FORMATS.get(format, ""))
            export_model(model, example, path, format)
            added.append({"format": format, "path": path, "which": which, "created": now()})
        self.info["exports"] = [*self.info.get("exports", []), *added]
        self.save()
        return added


def open_run(
    experiment_or_dir: str | os.PathLike, name: str | None = None, *, root: str | os.PathLike = "runs"
) -> OpenedRun:
    """The run ``<root>/<experiment>/<name>``, or the run directory ``experiment_or_dir`` when ``name`` is None.

    Raises:
        FileNotFoundError: there is no run record there (the message lists the runs that exist).
    """
    if name is None:
        run = Run.from_dir(os.fspath(experiment_or_dir))
    else:
        run = Run.load(root, os.fspath(experiment_or_dir), name)
    return OpenedRun(run.dir, run.info)


def load_model(
    model: torch.nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    *,
    device: str | torch.device = "cpu",
    source: str | None = None,
) -> torch.nn.Module:
    """Load a loopkit checkpoint's model weights into ``model`` and return it in eval mode, on ``device``.

    Args:
        model: the model, built as it was for training.
        checkpoint: the path of a checkpoint file (verified by :func:`loopkit.load_checkpoint`: header,
            SHA-256, data only) or a state it returned.

    Raises:
        CheckpointError: a damaged file, a state without a ``model`` entry, or weights that do not fit ``model``
            (missing or unexpected keys, other shapes); ``model`` is left as it was.
    """
    where = source or (os.fspath(checkpoint) if not isinstance(checkpoint, Mapping) else "the checkpoint")
    state = load_checkpoint(checkpoint) if not isinstance(checkpoint, Mapping) else checkpoint
    weights = state.get("model") if isinstance(state, Mapping) else None
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{where!r} holds no model weights (no 'model' entry); is it a loopkit checkpoint?")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [
        f"{k}: {tuple(weights[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in own.items()
        if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = [f"missing {missing[:5]}"] * bool(missing) + [f"unexpected {unexpected[:5]}"] * bool(unexpected)
        raise CheckpointError(
            f"the weights in {where!r} do not fit {type(model).__name__}: {'; '.join(problems + shapes[:5])}; build "
            "the model with the parameters the run was trained with"
        )
    model.load_state_dict(weights)
    return model.to(device).eval()
