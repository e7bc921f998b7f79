"""Tasks: loading one, naming it in a run record, and checking a recorded one before running it again.

A *task* is a module (or a ``.py`` file, or a class) with ``Params`` and ``build`` (see
:mod:`loopkit.runs.runner`). :func:`load_task` loads one and checks its shape; :func:`task_id` and
:func:`task_record` say how a run record names it (with the SHA-256 of its source); :func:`trusted_task` accepts
a recorded task only when it is the user's code, unchanged. :class:`RunError` is the error of a run that cannot
start: a task that cannot be loaded is its first cause.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from types import ModuleType
from typing import Any

from .parameters import fields

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class RunError(ValueError):
    """A run that cannot start as asked: a task that cannot be loaded or built with these parameters, a name that
    is taken, a run that cannot be resumed, a recorded task that is not trusted. Nothing was recorded or run."""


def load_task(task: str | ModuleType | type) -> Any:
    """The task: a module object, a class (``Params`` and ``build`` as its attributes, for a task kept in a
    notebook or beside other code), an importable name (``"loopkit.demo"``, ``"package.module:Job"`` for a
    class) or a path to a ``.py`` file.

    Raises:
        RunError: the module cannot be found or fails to import (the cause named, with its file and line), or
            it lacks ``Params`` (a dataclass with ``epochs`` or ``max_steps``) or ``build``.
    """
    if isinstance(task, (ModuleType, type)):
        module = task
    elif isinstance(task, str) and ":" in task and not task.endswith(".py"):
        name, _, attr = task.partition(":")
        if not _MODULE_NAME.fullmatch(name) or not attr.isidentifier():
            raise RunError(f"task {task!r}: give module:Class of an importable module")
        try:
            module = getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError) as error:
            raise RunError(f"cannot load task {task!r} ({error}); give module:Class of an importable module") from None
        except Exception as error:
            raise RunError(f"task {task!r} failed to import: {where(error)}") from None
    elif isinstance(task, str) and task.endswith(".py"):
        module = _load_file(task)
    elif isinstance(task, str) and _MODULE_NAME.fullmatch(task):
        try:
            module = importlib.import_module(task)
        except ImportError as error:
            raise RunError(f"cannot import task {task!r} ({error}); give a module name or a .py file") from None
        except Exception as error:
            raise RunError(f"task {task!r} failed to import: {where(error)}") from None
    else:
        raise RunError(f"task {task!r}: give a module name (loopkit.demo) or the path of a .py file")
    params_cls = getattr(module, "Params", None)
    if not (isinstance(params_cls, type) and dataclasses.is_dataclass(params_cls)) or not callable(
        getattr(module, "build", None)
    ):
        raise RunError(
            f"task {task_id(module)!r} must define a dataclass Params and build(params, callbacks) -> Learner"
        )
    try:
        names = {f.name for f in fields(params_cls)}
    except (TypeError, NameError) as error:
        raise RunError(f"task {task_id(module)!r}: its Params cannot be read: {error}") from None
    if not {"epochs", "max_steps"} & names:
        raise RunError(
            f"task {task_id(module)!r}: Params needs an 'epochs' field, a 'max_steps' field, or both (the length "
            "of the fit)"
        )
    return module


def _load_file(task: str) -> ModuleType:
    if not os.path.isfile(task):
        raise RunError(f"task file {task!r} does not exist")
    path = os.path.abspath(task)
    key = f"_loopkit_task_{os.path.splitext(os.path.basename(path))[0]}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise RunError(f"cannot load task file {task!r}")
    module = importlib.util.module_from_spec(spec)
    module.__loopkit_task__ = path  # type: ignore[attr-defined]
    sys.modules[key] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[key]
        raise RunError(f"task file {task!r} failed to import: {where(error)}") from None
    except BaseException:
        del sys.modules[key]
        raise
    return module


def where(error: BaseException) -> str:
    """``Type: message (file, line N)`` for an error raised in user code: where it happened, without a traceback."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError):
        return text
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        text += f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"
    return text


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


def task_record(module: ModuleType) -> dict[str, Any]:
    """What a run record holds about its task: ``{"module": name}`` for an importable module, else ``{"file":
    path}`` relative to the project (the working directory; absolute when outside it), and the ``sha256`` of its
    source file (None when it has none)."""
    if isinstance(module, type):  # a class task: its module's source
        source = getattr(sys.modules.get(module.__module__), "__file__", None)
        return {"module": task_id(module), "sha256": _sha256(source) if source else None}
    source = getattr(module, "__loopkit_task__", None) or getattr(module, "__file__", None)
    digest = _sha256(source) if source else None
    name = task_id(module)
    if getattr(module, "__loopkit_task__", None) is None and _MODULE_NAME.fullmatch(name):
        return {"module": name, "sha256": digest}
    path = os.path.abspath(str(source or name))
    project = os.getcwd()
    if os.path.commonpath([project, path]) == project:
        path = os.path.relpath(path, project).replace(os.sep, "/")
    return {"file": path, "sha256": digest}


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def trusted_task(record: Any, root: str | os.PathLike) -> str:
    """The task a run record names, as something :func:`load_task` takes, once it is shown to be the user's code.

    Raises:
        RunError: the record names no task, one outside the project (the working directory) or inside the run
            root (code that came with the records), or one whose source changed since the run was recorded; the
            message says why and to name the task explicitly (``--task``) if it is the right one.
    """
    explicit = "; if it is the code to run, name it explicitly: resume ... --task TASK"
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise RunError(f"the run records its task as {str(record)[:80]!r}, which loopkit cannot verify{explicit}")
    project, real_root = os.path.realpath(os.getcwd()), os.path.realpath(root)
    if isinstance(record.get("file"), str):
        given = record["file"]
        if os.path.isabs(given) or ".." in given.replace("\\", "/").split("/"):
            raise RunError(f"the run's task {given!r} is outside the project {project!r}{explicit}")
        path = os.path.realpath(os.path.join(project, given))
        if os.path.commonpath([project, path]) != project:
            raise RunError(f"the run's task {given!r} resolves to {path!r}, outside the project {project!r}{explicit}")
        source, load = path, path
    elif isinstance(record.get("module"), str) and _MODULE_NAME.fullmatch(record["module"].partition(":")[0]):
        name = record["module"].partition(":")[0]
        top = importlib.util.find_spec(name.partition(".")[0])  # a top-level look-up imports nothing
        if top is None or top.origin is None:
            raise RunError(f"the run's task module {name!r} cannot be found{explicit}")
        if _within(real_root, os.path.realpath(top.origin)):
            raise RunError(f"the run's task module {name!r} lies inside the run root {real_root!r}{explicit}")
        try:
            spec = importlib.util.find_spec(name)
        except Exception:
            spec = None
        if spec is None or spec.origin is None:
            raise RunError(f"the run's task module {name!r} cannot be found{explicit}")
        source, load = os.path.realpath(spec.origin), record["module"]
    else:
        raise RunError(f"the run records its task as {str(record)[:80]!r}, which loopkit cannot verify{explicit}")
    if _within(real_root, source):
        raise RunError(f"the run's task {source!r} lies inside the run root {real_root!r}{explicit}")
    digest = _sha256(source)
    if digest is None:
        raise RunError(f"the run's task {source!r} does not exist or cannot be read{explicit}")
    if digest != record["sha256"]:
        raise RunError(f"the run's task {source!r} changed since the run was recorded (its SHA-256 differs){explicit}")
    return load


def _within(directory: str, path: str) -> bool:
    return os.path.commonpath([directory, path]) == directory
