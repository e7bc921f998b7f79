"""A sweep's Optuna storage: opening a journal file, an SQLite file or a database URL, and the lock file
that lets workers starting together take turns on a file storage.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from typing import Any

from .locks import held
from .sweep_checks import SweepError


def open_storage(storage: str) -> Any:
    """An Optuna storage for ``storage``: a ``.journal``/``.log`` file path, a ``.db``/``.sqlite`` file path, or a
    database URL (``sqlite:///x.db``, ``postgresql://user@host/db``, ``mysql://...``).

    Opening an SQLite file creates Optuna's schema; workers that start together take turns through a lock file
    beside it (:func:`storage_lock`), so none of them sees a half-made schema. On a database server, which no
    lock file reaches, workers that start together race to create the schema and the losers' ``CREATE TABLE``
    fails; each loser opens the storage again (up to :data:`RDB_TRIES` times, with a growing, jittered wait), and
    then finds the schema the winner made.

    Raises:
        SweepError: the storage cannot be opened (the URL and the cause are in the message).
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if not isinstance(storage, str) or not storage:
        raise SweepError(f"storage must be a file path or a database URL, got {storage!r}")
    try:
        if "://" in storage:
            kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
            with storage_lock(storage):
                return open_rdb(storage, kwargs)
        directory = os.path.dirname(os.path.abspath(storage))
        os.makedirs(directory, exist_ok=True)
        if storage.endswith((".db", ".sqlite", ".sqlite3")):
            url = "sqlite:///" + os.path.abspath(storage)
            with storage_lock(storage):
                return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return JournalStorage(JournalFileBackend(os.path.abspath(storage)))
    except Exception as error:
        raise SweepError(f"cannot open the sweep storage {storage!r}: {type(error).__name__}: {error}") from None


RDB_TRIES = 8  # opening attempts on a database server; the waits between them add up to about 4 s at most


def open_rdb(url: str, engine_kwargs: dict[str, Any]) -> Any:
    """``optuna.storages.RDBStorage(url)``, opened again when creating Optuna's schema collided with another
    worker creating it at the same moment (an ``IntegrityError``, ``ProgrammingError`` or ``OperationalError`` of
    SQLAlchemy: PostgreSQL reports the collision as a duplicate type or table, MySQL as an existing table).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the last attempt's error, after :data:`RDB_TRIES` attempts (a server that
            is down fails the same way every time).
    """
    import optuna
    from sqlalchemy import exc

    for attempt in range(RDB_TRIES - 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (exc.IntegrityError, exc.ProgrammingError, exc.OperationalError):
            time.sleep(0.05 * (attempt + 1) + 0.05 * random.random())
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)  # the last attempt raises what it meets


def storage_file(storage: str) -> str | None:
    """The local file behind a storage (an SQLite URL or a file path), or None for a database server."""
    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :]
        return None if not path or path.startswith(":memory:") else os.path.abspath(path)
    if "://" in storage:
        return None
    return os.path.abspath(storage)


@contextlib.contextmanager
def storage_lock(storage: str) -> Any:
    """Hold an exclusive lock on ``<storage file>.loopkit-lock`` (:func:`~loopkit.runs.locks.held`) for a file
    storage; nothing for a database server, whose row locks do this work."""
    path = storage_file(storage)
    if path is None:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with held(path + ".loopkit-lock"):  # Optuna's journal uses <path>.lock
        yield
