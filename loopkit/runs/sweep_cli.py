"""``python -m loopkit.runs sweep SPEC`` : run (or join) the sweep a YAML/TOML file describes, then report it.

Exit statuses as for the other ``runs`` commands: 0 done, 2 a usage error (a bad sweep file: the key and the
file named), 75 stopped by SIGTERM/SIGINT (the running trial's run saved and its trial queued again).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .config_files import load_config
from .parameters import ParameterError
from .paths import PathError
from .signals import signals_end_the_process
from .sweep_checks import SweepError
from .sweep_config import from_config
from .task import RunError


def sweep_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m loopkit.runs sweep",
        description="Run or join a sweep. Start the same command in several processes, or on several machines "
        "with --storage pointing at one database: they share the trials.",
    )
    parser.add_argument("spec", help="a YAML or TOML file: task, parameters (the search space), settings")
    parser.add_argument("--root", default=None, help="root of the run records (default: runs)")
    parser.add_argument(
        "--storage", default=None, help="a file path or database URL (default: <root>/<experiment>/sweep.journal)"
    )
    parser.add_argument("--study-name", default=None)
    parser.add_argument("--dry-run", action="store_true", help="check the sweep and print its size; run nothing")
    parser.add_argument("--report", action="store_true", help="print the results and draw the plot; run nothing")
    parser.add_argument("--plot", default=None, help="where to write the PNG (default: <root>/<experiment>/sweep.png)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        sweep = from_config(load_config(args.spec), root=args.root, storage=args.storage, study_name=args.study_name)
        if args.dry_run:
            sweep.print_plan()
            return 0
        if not args.report:
            with signals_end_the_process():  # SIGTERM/SIGINT: the trial's run saves, its trial is requeued
                sweep.run(quiet=args.quiet)
        else:
            sweep.print_plan()
        print(sweep.table())
        try:
            print("best parameters:", json.dumps(sweep.best_params()))
        except SweepError as error:
            print(error)
        print("plot:", sweep.plot(args.plot))
    except (SweepError, ParameterError, RunError, PathError) as error:
        print(f"error: {args.spec}: {error}", file=sys.stderr)
        return 2
    return 0
