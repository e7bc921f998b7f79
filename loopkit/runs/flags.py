"""Parameters as command-line flags: one flag per field of a task's ``Params`` dataclass, on :mod:`argparse`.

Values are read in this order, each overriding the one before: the defaults, a config file (``--config
run.yaml`` or ``.toml``, :func:`~loopkit.runs.config_files.load_config`), then flags (``--learning_rate=0.001``;
``--learning-rate 0.001`` works too). Booleans are flags: ``--shuffle`` means true, ``--no-shuffle`` false, and
``--shuffle false`` / ``--shuffle=False`` false as well (``true/false/1/0/yes/no/on/off``, any case; anything
else is an error). Parsing uses :mod:`argparse` (no prefix matching: ``--learning_rat`` is an error, not
``--learning_rate``). Every value goes through :func:`~loopkit.runs.parameters.make_params`, so a bad one fails
before training with :class:`~loopkit.runs.parameters.ParameterError`.

Example:
    >>> from dataclasses import dataclass
    >>> from loopkit.runs.parameters import param
    >>> @dataclass
    ... class Params:
    ...     learning_rate: float = param(1e-3, help="peak learning rate", low=0)
    ...     epochs: int = param(10, help="epochs to train", low=1)
    ...     shuffle: bool = param(True, help="shuffle the training data")
    >>> parse_params(Params, ["--learning_rate=0.01", "--shuffle", "false"])
    Params(learning_rate=0.01, epochs=10, shuffle=False)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any

from .config_files import load_config
from .parameters import ParameterError, check_bounds, convert, fields, make_params, split_optional


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per parameter of ``cls`` to ``parser`` (values stay unset unless given)."""
    group = parser.add_argument_group(f"parameters ({cls.__name__})")
    for f in fields(cls):
        base, _ = split_optional(f.type)
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
            check_bounds(f.name, f, value)
        except ParameterError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    parse.__name__ = f.name
    return parse


def parser_for(cls: type, **kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with ``--config`` and one flag per parameter of ``cls``."""
    parser = argparse.ArgumentParser(**{"allow_abbrev": False, **kwargs})
    parser.add_argument("--config", default=None, help="a YAML or TOML file of parameters; flags override it")
    add_arguments(parser, cls)
    return parser


def params_from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """Defaults, overridden by ``namespace.config``'s file, overridden by the flags given in ``namespace``."""
    declared = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    if getattr(namespace, "config", None):
        config = load_config(namespace.config)
        try:
            make_params(cls, config)  # a bad value is reported as the file's
        except ParameterError as error:
            raise ParameterError(f"config file {namespace.config!r}: {error}") from None
        values.update(config)
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
