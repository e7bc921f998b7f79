"""Export a trained model for inference: to ONNX (``torch.onnx.export``) and to ``torch.export`` (``.pt2``).

:func:`export_model` traces the model once with :func:`torch.export.export` (the batch dimension of the
example input left dynamic), then saves that program with :func:`torch.export.save` (``"torch.export"``,
loaded back by :func:`torch.export.load`) or hands it to :func:`torch.onnx.export` (``"onnx"``, run by
onnxruntime; needs the ``export`` extra: onnx, onnxscript, onnxruntime). A model torch.export cannot trace (a
Python branch on a tensor's value, an unsupported op) raises :class:`ExportError` naming the model, the
format and torch's reason. The model is put in eval mode for the export and its mode restored after.

:class:`Export` does it at the end of a fit, on rank 0, with the first training batch's inputs as the example
(or the ``example`` given). A run records what was exported in its ``exports`` entry
(:func:`loopkit.runs.runner.run_task`; ``python -m loopkit.runs export`` exports a finished run's model).

Example:
    >>> import tempfile, torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> path = export_model(model, torch.randn(3, 4), tempfile.mkdtemp() + "/model.pt2", "torch.export")
    >>> program = torch.export.load(path)
    >>> x = torch.randn(5, 4)
    >>> torch.allclose(program.module()(x), model(x))
    True
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..distributed import is_main_process
from ..loop.callback import Callback
from ..resume.file import replace_atomically

FORMATS = {"onnx": ".onnx", "torch.export": ".pt2"}


class ExportError(ValueError):
    """A model that cannot be exported in a format; the message names the model, the format and why."""


def _inputs(example: Any) -> tuple[Any, ...]:
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _why(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def trace(model: torch.nn.Module, example: Any) -> torch.export.ExportedProgram:
    """``model`` as a :class:`torch.export.ExportedProgram` for the example input(s), their first (batch)
    dimension dynamic; the model in eval mode while it is traced.

    Raises:
        ExportError: torch.export cannot trace the model (its reason in the message).
    """
    inputs = _inputs(example)
    dynamic = tuple({0: torch.export.Dim.AUTO} if isinstance(x, torch.Tensor) and x.dim() else None for x in inputs)
    was_training = model.training
    model.eval()
    try:
        return torch.export.export(model, inputs, dynamic_shapes=dynamic)
    except Exception as error:
        raise ExportError(
            f"cannot export {type(model).__name__}: torch.export could not trace it ({_why(error)}); a model that "
            "branches in Python on a tensor's value or calls code torch cannot follow needs changing, see "
            "https://pytorch.org/docs/stable/generated/exportdb/index.html"
        ) from error
    finally:
        model.train(was_training)


def export_model(model: torch.nn.Module, example: Any, path: str | os.PathLike, format: str) -> str:
    """Write ``model`` to ``path`` in ``format`` (``"onnx"`` or ``"torch.export"``) and return the path.

    Args:
        example: an input tensor (or a tuple of them) as the model takes; shapes (batch, ...), the batch
            dimension stays dynamic in the exported model.

    Raises:
        ValueError: an unknown ``format``.
        ExportError: the model cannot be exported (see :func:`trace`), or ONNX's converter refused it.
        ImportError: ``"onnx"`` without the ``export`` extra (``pip install 'loopkit[export]'``).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program = trace(model, example)
    if format == "torch.export":
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        replace_atomically(path, lambda f: f.write(buffer.getvalue()))
        return path
    try:
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it; say so before it fails deep inside
    except ImportError:
        raise ImportError("exporting to ONNX needs the export extra: pip install 'loopkit[export]'") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every step on stdout
            onnx_program = torch.onnx.export(program, dynamo=True)
    except Exception as error:
        raise ExportError(f"cannot export {type(model).__name__} to ONNX ({_why(error)})") from error
    if onnx_program is None:  # torch returns None only when it was given no path and no program: not here
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: the exporter returned nothing")
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        onnx_program.save(temporary)
        with open(temporary, "rb") as f:
            data = f.read()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    replace_atomically(path, lambda f: f.write(data))
    return path


class Export(Callback):
    """At the end of a fit that finished (no error), export the model into ``dirpath`` as
    ``model.onnx`` and/or ``model.pt2``; rank 0 only.

    Args:
        dirpath: the directory for the files (created if missing).
        formats: any of ``"onnx"`` and ``"torch.export"``.
        example: the example input (see :func:`export_model`); default: the first training batch's inputs.

    Attributes:
        exported: one ``{"format": ..., "path": ...}`` per file written, in ``formats`` order.

    Raises:
        ValueError: at construction, an unknown format or none.
        ExportError: at the end of the fit, a model that cannot be exported, naming why.
    """

    reads = ("model", "xb", "phase", "error")

    def __init__(
        self, dirpath: str | os.PathLike, formats: Sequence[str] = ("onnx", "torch.export"), example: Any = None
    ) -> None:
        formats = [formats] if isinstance(formats, str) else list(formats)
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ValueError(f"Export(formats={formats!r}): use one or more of {', '.join(FORMATS)}")
        self.dirpath, self.formats, self.example = os.fspath(dirpath), formats, example
        self.exported: list[dict[str, str]] = []

    def after_batch(self, learner: Any) -> None:
        if self.example is None and learner.phase == "train":
            self.example = tuple(x.detach().cpu() for x in _inputs(learner.xb))

    def after_fit(self, learner: Any) -> None:
        if learner.error is not None or not is_main_process():
            return
        if self.example is None:
            raise ExportError("Export: the fit ran no training batch, so there is no example input; give example=")
        model = getattr(learner.model, "module", learner.model)  # DistributedDataParallel wraps it
        device = next(model.parameters(), torch.empty(0)).device
        example = tuple(x.to(device) for x in _inputs(self.example))
        for format in self.formats:
            path = os.path.join(self.dirpath, "model" + FORMATS[format])
            self.exported.append({"format": format, "path": export_model(model, example, path, format)})
