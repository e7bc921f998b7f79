"""Type-check user scripts against the INSTALLED loopkit, as a user's mypy sees it.

Builds the wheel, installs it (no dependencies) into a temporary directory outside the repository, and runs
``mypy --strict`` there on ``user_good.py`` (must pass) and ``user_bad.py`` (must report exactly the errors its
``# error:`` comments name). Without ``py.typed`` in the wheel, or with an annotation lost to ``Any``, it fails.

Run it with the dev extra installed: ``python typecheck/run.py`` (CI runs it in .ci/checks).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


STRICT_FOR_USERS = [
    "disallow_untyped_defs",
    "disallow_incomplete_defs",
    "check_untyped_defs",
    "disallow_untyped_decorators",
    "disallow_any_generics",
    "disallow_subclassing_any",
    "disallow_untyped_calls",
    "warn_return_any",
    "no_implicit_reexport",
    "strict_equality",
    "extra_checks",
    "warn_unused_ignores",
]


def mypy_config() -> str:
    """pyproject.toml's [tool.mypy] options (but its ``files``), plus mypy --strict's checks for the user scripts."""
    import tomllib  # Python 3.11+, as CI runs

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    overrides = settings.pop("overrides", [])
    settings.pop("files", None)

    def ini(value: object) -> str:
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)

    lines = ["[mypy]", *(f"{k} = {ini(v)}" for k, v in settings.items())]
    for override in overrides:
        modules = override.pop("module")
        lines += ["", f"[mypy-{','.join(modules) if isinstance(modules, list) else modules}]"]
        lines += [f"{k} = {ini(v)}" for k, v in override.items()]
    lines += ["", "[mypy-user_good,user_bad]", *(f"{flag} = True" for flag in STRICT_FOR_USERS)]
    return "\n".join(lines) + "\n"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="loopkit-typecheck-") as tmp:
        work = Path(tmp)
        site = work / "site"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
        # The wheel, as `pip install loopkit` would lay it out; dependencies come from the current environment.
        built = run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(ROOT)],
            work,
            env,
        )
        if built.returncode:
            print(built.stdout + built.stderr)
            return 1
        env["PYTHONPATH"] = str(site)  # ahead of site-packages, so the wheel's copy is the one found
        where = run([sys.executable, "-c", "import loopkit; print(loopkit.__file__)"], work, env).stdout.strip()
        if not where.startswith(str(site)):
            print(f"loopkit resolved to {where!r}, not to the installed wheel under {site}")
            return 1
        if not (site / "loopkit" / "py.typed").is_file():
            print("the wheel does not ship loopkit/py.typed")
            return 1
        for name in ("user_good.py", "user_bad.py"):
            shutil.copy(HERE / name, work / name)
        # One run for both scripts. The user scripts get mypy --strict's checks; everything else (torch
        # above all) the package check's options, so the cache the package check left in .mypy_cache serves
        # here too and torch is not analysed twice.
        config = work / "mypy.ini"
        config.write_text(mypy_config())
        mypy = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(ROOT / ".mypy_cache")]
        result = run([*mypy, "user_good.py", "user_bad.py"], work, env)
        expected = {
            ("user_bad.py", i, m.group(1).strip())
            for i, line in enumerate((HERE / "user_bad.py").read_text().splitlines(), 1)
            if (m := re.search(r"# error: (.*)$", line))
        }
        found = {
            (m.group(1), int(m.group(2)), m.group(3).strip())
            for m in re.finditer(r"^(user_\w+\.py):(\d+): error: (.*?)(?:  \[[a-z-]+\])?$", result.stdout, re.M)
        }
        if result.returncode != 1 or found != expected:
            print("mypy's errors differ from user_bad.py's # error: comments (user_good.py must have none)")
            for file, line, text in sorted(expected - found):
                print(f"  missing  {file}:{line}: {text}")
            for file, line, text in sorted(found - expected):
                print(f"  extra    {file}:{line}: {text}")
            print(result.stdout + result.stderr)
            return 1
    print(f"installed-package type check: user_good.py clean, user_bad.py's {len(expected)} errors as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
