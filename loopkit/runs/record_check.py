"""Checking run records when they are read: ``run.json``'s fields and checksum, ``metrics.jsonl``'s checksum.

``run.json`` must be UTF-8 JSON of at most 16 MiB with every field of :data:`FIELDS` of the right type, and
carries a SHA-256 ``checksum`` of its own content (:func:`checksum`) and of ``metrics.jsonl``, so an edited or
damaged byte that still parses is reported (:class:`RecordError`, naming the file and what is wrong) instead of
shown. :mod:`loopkit.runs.record` reads and writes the records through these checks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .paths import check_name


class RecordError(ValueError):
    """A run record that cannot be trusted: unreadable, not JSON, a field missing or of the wrong type, or a
    checksum that does not match. The message names the file and what is wrong."""


MAX_RECORD_BYTES = 16 * 2**20  # bytes: a run.json holds parameters and a few values, never this much
FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "experiment": (str,),
    "status": (str,),
    "reason": (str, type(None)),
    "error": (str, type(None)),
    "created": (str,),
    "started": (str, type(None)),
    "ended": (str, type(None)),
    "task": (str, dict, type(None)),
    "params": (dict,),
    "monitor": (str, type(None)),
    "mode": (str,),
    "epochs_done": (int,),
    "final": (dict,),
    "best": (dict, type(None)),
    "repro": (dict,),
    "attempts": (int,),
    "trials": (list,),
    "metrics_sha256": (str, type(None)),
    "metrics_previous_sha256": (str, type(None)),
    "checksum": (str,),
}


def checksum(info: Mapping[str, Any]) -> str:
    """The SHA-256 of a record's content (every field but ``checksum``, keys sorted), as hex."""
    body = {k: v for k, v in info.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_record(path: str, info: Any, *, states: Sequence[str]) -> None:
    """Every field of a run record present with its type, names that are path components, and the checksum."""
    if not isinstance(info, dict):
        raise RecordError(f"{path}: not a JSON object; the file is damaged")
    for key, types in FIELDS.items():
        if key not in info:
            raise RecordError(f"{path}: field {key!r} is missing; the file is damaged or was not written by loopkit")
        if not isinstance(info[key], types) or (isinstance(info[key], bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RecordError(f"{path}: field {key!r} must be {names}, got {type(info[key]).__name__}")
    if info["status"] not in states:
        raise RecordError(f"{path}: unknown status {info['status'][:40]!r}; known: {', '.join(states)}")
    if info["mode"] not in ("min", "max"):
        raise RecordError(f"{path}: mode must be 'min' or 'max', got {info['mode'][:40]!r}")
    for key, kind in (("name", "run"), ("experiment", "experiment")):
        try:
            check_name(kind, info[key])
        except ValueError as error:
            raise RecordError(f"{path}: {error}") from None
    if info["checksum"] != checksum(info):
        raise RecordError(f"{path}: its content does not match its checksum (edited or damaged)")


def read_record(path: str, *, states: Sequence[str]) -> dict[str, Any]:
    """The record in the ``run.json`` at ``path``, decoded and checked field by field (``status`` one of
    ``states``) and against its checksum before anything of it is used.

    Raises:
        RecordError: larger than 16 MiB, not UTF-8 JSON, a field missing or of the wrong type, or a checksum
            that does not match (naming the file and what is wrong).
    """
    with open(path, "rb") as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"{path}: larger than {MAX_RECORD_BYTES} bytes; a run record is a few kilobytes")
    try:
        info = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RecordError(f"{path}: not UTF-8 text (byte {error.start}); the file is damaged") from None
    except json.JSONDecodeError as error:
        raise RecordError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); the file is damaged"
        ) from None
    except RecursionError:
        raise RecordError(f"{path}: nested too deeply to be a run record") from None
    check_record(path, info, states=states)
    return info


def read_metrics(path: str, expected: set[Any]) -> list[dict[str, Any]]:
    """The rows of the ``metrics.jsonl`` at ``path``, whose SHA-256 (hex) must be one of ``expected``.

    Raises:
        RecordError: the file does not match its checksum, or a line is not a JSON object (naming the line).
    """
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() not in expected:
        raise RecordError(f"{path}: its content does not match the checksum in run.json (edited or damaged)")
    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise RecordError(f"{path}, line {number}: not a JSON object of metric values")
        rows.append(row)
    return rows
