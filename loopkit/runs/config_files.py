"""Config files of parameters: one YAML or TOML table read with limits, so a file cannot exhaust memory.

:func:`load_config` reads ``--config run.yaml`` (or ``.yml``, ``.toml``) for :mod:`loopkit.runs.flags` and a sweep
file for :mod:`loopkit.runs.sweep_cli`. Config files are at most 1 MiB; YAML is read with PyYAML's safe loader
(no Python tags) and at most 100 aliases; a syntax error names the file and the line. The values are checked
afterwards by :func:`~loopkit.runs.parameters.make_params`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .parameters import ParameterError

MAX_CONFIG_BYTES = 2**20
MAX_ALIASES = 100


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``, needs PyYAML) or TOML (``.toml``) file holding one table of parameters.

    Raises:
        ParameterError: the file is missing, larger than 1 MiB, not UTF-8, not valid YAML/TOML (naming the file
            and the line), uses a YAML tag other than the standard ones (``!!python/...``), more than 100 YAML
            aliases, or holds something other than a mapping with string keys.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ParameterError(f"config file {path!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ParameterError(f"config file {path!r}: use a .yaml, .yml or .toml file")
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ParameterError(f"config file {path!r} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ParameterError(f"config file {path!r} is not UTF-8 text (byte {error.start})") from None
    try:
        data = _parse_toml(path, text) if suffix == ".toml" else _parse_yaml(path, text)
    except RecursionError:
        raise ParameterError(f"config file {path!r} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError(f"config file {path!r} must hold a mapping of parameter names to values")
    return data


def _parse_toml(path: str, text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ParameterError(f"config file {path!r} is not valid TOML: {error}") from None


def _parse_yaml(path: str, text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, counting aliases: a few hundred bytes of nested aliases expand to gigabytes."""

        aliases = 0  # per file: the class is made anew for each

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    mark = self.peek_event().start_mark
                    raise ParameterError(
                        f"config file {path!r}, line {mark.line + 1}: more than {MAX_ALIASES} YAML aliases; "
                        "write the values out"
                    )
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if isinstance(error, yaml.constructor.ConstructorError):
            problem += " (only plain YAML data is read: no Python tags)"
        raise ParameterError(f"config file {path!r}{where}: not valid YAML: {problem}") from None
