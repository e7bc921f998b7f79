"""Typed run parameters: a dataclass declares them once; they become command-line flags and config-file keys.

Each field of a dataclass is a parameter: its annotation is its type, its default the default, and
``param(default, help=..., low=..., high=..., choices=...)`` adds help text and checked bounds. Supported
types: ``int``, ``float``, ``str``, ``bool``, ``typing.Literal[...]``, ``dict`` and ``list`` (given as JSON on the
command line), and any of these ``| None``.

Values are read in this order, each overriding the one before: the defaults, a config file (``--config
run.yaml`` or ``.toml``), then flags (``--learning_rate=0.001``; ``--learning-rate 0.001`` works too).
Booleans are flags: ``--shuffle`` means true, ``--no-shuffle`` false, and ``--shuffle false`` /
``--shuffle=False`` false as well (``true/false/1/0/yes/no/on/off``, any case; anything else is an error).
Parsing uses :mod:`argparse`. Every value, from whatever source, goes through :func:`make_params`, so a bad
value fails before training with :class:`ParameterError` naming the parameter and the value.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Params:
    ...     learning_rate: float = param(1e-3, help="peak learning rate", low=0)
    ...     epochs: int = param(10, help="epochs to train", low=1)
    ...     shuffle: bool = param(True, help="shuffle the training data")
    >>> parse_params(Params, ["--learning_rate=0.01", "--shuffle", "false"])
    Params(learning_rate=0.01, epochs=10, shuffle=False)
    >>> make_params(Params, {"epochs": 0})
    Traceback (most recent call last):
    ...
    loopkit.runs.parameters.ParameterError: parameter 'epochs' must be >= 1, got epochs=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ParameterError(ValueError):
    """A parameter value that does not fit its declaration; the message names the parameter and the value."""


def param(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A dataclass field with help text and bounds checked by :func:`make_params` (``low <= value <= high``).

    Mutable defaults (a dict or list) are copied per instance.
    """
    metadata = {"help": help, "low": low, "high": high, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def fields(cls: type) -> list[dataclasses.Field]:
    """The parameters of ``cls``: its dataclass fields, with their annotations resolved to types."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"parameters are declared as a dataclass; got {cls!r}")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out.append(f)
    return out


def _split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"a parameter type may be one type or one type | None, got {tp!r}")
        return rest[0], True
    return tp, False


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` in any case; anything else raises ``ValueError``."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def convert(name: str, tp: Any, value: Any) -> Any:
    """``value`` (a string from a flag, or a value from a config file) as type ``tp``; ParameterError if not."""
    base, optional = _split_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ParameterError(f"parameter {name!r} may not be None, got {name}=None")
    bad = ParameterError(f"parameter {name!r} must be {_type_name(tp)}, got {name}={value!r}")
    if typing.get_origin(base) is typing.Literal:
        options = typing.get_args(base)
        for option in options:
            if value == option or (isinstance(value, str) and str(option) == value):
                return option
        raise ParameterError(f"parameter {name!r} must be one of {list(options)}, got {name}={value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_bool(value)
            except ValueError:
                raise bad from None
        raise bad
    if base is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if base is float:
        if isinstance(value, bool):
            raise bad
        try:
            result = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            result = None
        if result is None or math.isnan(result):
            raise bad
        return result
    if base is str:
        if isinstance(value, str):
            return value
        raise bad
    origin = typing.get_origin(base) or base
    if origin in (dict, list):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ParameterError(f"parameter {name!r} must be JSON ({error.msg}), got {name}={value!r}") from None
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, origin):
            raise bad
        return value
    raise TypeError(f"parameter {name!r} has type {tp!r}; use int, float, str, bool, Literal, dict or list")


def _type_name(tp: Any) -> str:
    base, optional = _split_optional(tp)
    name = getattr(base, "__name__", repr(base))
    article = "an" if name[0] in "aeiou" else "a"
    return f"{article} {name}" + (" or None" if optional else "")


def make_params(cls: type, values: Mapping[str, Any] | None = None, **more: Any) -> Any:
    """An instance of ``cls`` from ``values`` (missing ones take their defaults), every value converted and checked.

    Raises:
        ParameterError: an unknown name (listing the known ones), a value of the wrong type, outside
            ``low``/``high`` or not among ``choices``, a missing value without default, or an error raised by
            the dataclass's own ``__post_init__``.
    """
    values = {**(values or {}), **more}
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}; known: {', '.join(declared)}")
    kwargs = {}
    for name, f in declared.items():
        if name in values:
            value = convert(name, f.type, values[name])
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ParameterError(f"parameter {name!r} has no default; give it (--{name}=...)")
        _check_bounds(name, f, value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        if isinstance(error, ParameterError):
            raise
        raise ParameterError(str(error)) from error


def _check_bounds(name: str, f: dataclasses.Field, value: Any) -> None:
    if value is None:
        return
    low, high, choices = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("choices")
    if low is not None and value < low:
        raise ParameterError(f"parameter {name!r} must be >= {low}, got {name}={value!r}")
    if high is not None and value > high:
        raise ParameterError(f"parameter {name!r} must be <= {high}, got {name}={value!r}")
    if choices is not None and value not in choices:
        raise ParameterError(f"parameter {name!r} must be one of {list(choices)}, got {name}={value!r}")


def to_dict(params: Any) -> dict[str, Any]:
    """The parameters as a plain dict (JSON-ready for the types above)."""
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``, needs PyYAML) or TOML (``.toml``) file holding one table of parameters."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ParameterError(f"config file {path!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10
                import tomli as tomllib
            data = tomllib.load(f)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(f)
        else:
            raise ParameterError(f"config file {path!r}: use a .yaml, .yml or .toml file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"config file {path!r} must hold a mapping of parameter names to values")
    return data


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per parameter of ``cls`` to ``parser`` (values stay unset unless given)."""
    group = parser.add_argument_group(f"parameters ({cls.__name__})")
    for f in fields(cls):
        base, _ = _split_optional(f.type)
        default = _default_of(f)
        help_text = (f.metadata.get("help") or "") + f" (default: {default!r})"
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if base is bool:
            group.add_argument(
                *names,
                dest=f.name,
                nargs="?",
                const="true",
                default=argparse.SUPPRESS,
                type=_flag_type(f),
                metavar="true|false",
                help=help_text,
            )
            negations = [f"--no-{f.name}"] + ([f"--no-{f.name.replace('_', '-')}"] if "_" in f.name else [])
            group.add_argument(
                *negations,
                dest=f.name,
                action="store_const",
                const=False,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
        else:
            group.add_argument(
                *names,
                dest=f.name,
                default=argparse.SUPPRESS,
                type=_flag_type(f),
                metavar=_metavar(base),
                help=help_text,
            )


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _metavar(base: Any) -> str:
    if typing.get_origin(base) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(base))) + "}"
    return {int: "INT", float: "FLOAT", str: "STR"}.get(base, "JSON")


def _flag_type(f: dataclasses.Field) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(f.name, f.type, text)
            _check_bounds(f.name, f, value)
        except ParameterError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    parse.__name__ = f.name
    return parse


def parser_for(cls: type, **kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with ``--config`` and one flag per parameter of ``cls``."""
    parser = argparse.ArgumentParser(**kwargs)
    parser.add_argument("--config", default=None, help="a YAML or TOML file of parameters; flags override it")
    add_arguments(parser, cls)
    return parser


def params_from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """Defaults, overridden by ``namespace.config``'s file, overridden by the flags given in ``namespace``."""
    declared = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    if getattr(namespace, "config", None):
        values.update(load_config(namespace.config))
    values.update({k: v for k, v in vars(namespace).items() if k in declared})
    return make_params(cls, values)


def parse_params(cls: type, argv: Sequence[str] | None = None, **parser_kwargs: Any) -> Any:
    """Parse ``argv`` (default ``sys.argv[1:]``) into an instance of ``cls``; errors exit as argparse does."""
    parser = parser_for(cls, **parser_kwargs)
    namespace = parser.parse_args(argv)
    try:
        return params_from_namespace(cls, namespace)
    except ParameterError as error:
        parser.error(str(error))
