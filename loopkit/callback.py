"""Moved to :mod:`loopkit.loop.callback`; this path stays importable for existing code."""

from .loop.callback import (
    Callback as Callback,
    CallbackError as CallbackError,
    UndeclaredWriteError as UndeclaredWriteError,
    callback_name as callback_name,
    handled_events as handled_events,
    validate_callback as validate_callback,
)
