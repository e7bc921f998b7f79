"""The command line: ``python -m loopkit.runs`` (or the ``loopkit`` console script).

::

    python -m loopkit.runs run loopkit.demo --epochs=5 --learning_rate=0.01    # one recorded run of a task
    python -m loopkit.runs list digits --sort valid_accuracy                   # an experiment's runs, a table
    python -m loopkit.runs show digits/20261130-104300-3fa2                    # one run: record and metrics
    python -m loopkit.runs resume digits/20261130-104300-3fa2                  # continue from its checkpoint
    python -m loopkit.runs sweep sweep.yaml                                    # a sweep (docs/runs.md)

``loopkit runs list digits`` is the same as ``loopkit list digits``.

Exit statuses: 0 done; 1 the training failed (a traceback, the run recorded FAILED) or a run record is damaged
(the file and the problem named); 2 a usage error (a bad flag, parameter, name, config or sweep file, a task
that cannot load or refuses its parameters, a run that cannot be resumed): one line, no traceback, nothing
recorded; 75 (``EX_TEMPFAIL``) stopped by SIGTERM or SIGINT after saving a checkpoint, the run recorded
PREEMPTED and resumable at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch

from ..callbacks.export import FORMATS
from ..callbacks.preemption import Preempted
from .console import LOG_FILE
from .flags import params_from_namespace, parser_for
from .open import open_run
from .parameters import ParameterError, fields
from .paths import PathError, check_name, inside
from .record import STALE_AFTER_S, DamagedRun, Run, list_runs, metric_mode
from .record_check import RecordError
from .runner import fit_budget, resume_run, run_task, run_threads
from .signals import preempted, signals_end_the_process
from .table import _fmt, table
from .task import RunError, load_task

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: What a command reports as a usage error (exit 2, one line): raised before anything is recorded or run.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ParameterError,
    PathError,
    RunError,
    FileExistsError,
    FileNotFoundError,
)


def _add_run_options(parser: argparse.ArgumentParser, experiment: str, threads: bool = True) -> None:
    group = parser.add_argument_group("run record")
    group.add_argument("--experiment", default=experiment, help=f"experiment name (default: {experiment})")
    group.add_argument("--run-name", default=None, help="the run's name (default: time and a random suffix)")
    # --runs-root is the demo's former spelling, kept as a silent alias of the one name the runs commands use.
    group.add_argument("--root", "--runs-root", dest="root", default="runs", help="root of run records (default: runs)")
    group.add_argument("--description", default=None, help="what the run is for, kept in its record")
    if threads:  # else the task declares its own threads parameter, which run_task reads
        group.add_argument("--threads", type=int, default=None, help="CPU threads for the fit (default: 1)")


def run_task_main(
    task: str | ModuleType, argv: Sequence[str] | None = None, *, prog: str | None = None, experiment: str | None = None
) -> Run:
    """Parse ``argv`` as the task's parameters, train one recorded run, print its metrics and where it is.

    The experiment is ``--experiment``, else ``experiment``, else the task module's ``EXPERIMENT``, else
    ``"default"``. A usage error (a bad flag, value, name, a task that refuses its parameters) exits with status
    2 before anything is recorded; SIGTERM or SIGINT during the fit exits with status 75 once a checkpoint is
    saved and the run recorded PREEMPTED.
    """
    try:
        module = load_task(task)
    except RunError as error:
        print(f"{prog or 'loopkit'}: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if experiment is None:
        experiment = getattr(module, "EXPERIMENT", "default")
        if not isinstance(experiment, str):
            print(
                f"{prog or 'loopkit'}: error: the task's EXPERIMENT is {experiment!r}: make it a name", file=sys.stderr
            )
            raise SystemExit(EXIT_USAGE)
    doc = (module.__doc__ or "").strip().splitlines()
    parser = parser_for(module.Params, prog=prog, description=doc[0] if doc else None)
    _add_run_options(parser, experiment, threads="threads" not in {f.name for f in fields(module.Params)})
    args = parser.parse_args(argv)
    try:
        params = params_from_namespace(module.Params, args)
        fit_budget(params)
        run_threads(params, getattr(args, "threads", None))
        check_name("experiment", args.experiment)
        if args.run_name is not None:
            check_name("run", args.run_name)
            if os.path.exists(inside(args.root, args.experiment, args.run_name)):
                raise RunError(
                    f"run {args.experiment}/{args.run_name} already exists in {args.root!r}; give another "
                    f"--run-name, or resume it (python -m loopkit.runs resume {args.experiment}/{args.run_name})"
                )
    except (ValueError, FileExistsError, FileNotFoundError) as error:  # before any run: a budget, threads, a name
        parser.error(str(error))
    with signals_end_the_process():
        try:
            run = run_task(
                module,
                params,
                experiment=args.experiment,
                root=args.root,
                name=args.run_name,
                description=args.description,
                threads=getattr(args, "threads", None),
            )
        except (RunError, PathError, ParameterError, FileExistsError) as error:  # refused before the fit: nothing kept
            parser.error(str(error))
    print_run(run)
    return run


def print_run(run: Run, stale_after: float = STALE_AFTER_S) -> None:
    """The run's status, its per-epoch metrics as a table, final and best values, and its directory.

    Raises:
        RecordError: ``metrics.jsonl`` is damaged (naming it).
    """
    status, reason = run.effective(stale_after)
    info = run.info
    rows = run.metrics()  # first: a damaged file is reported before anything is printed
    print(f"run {run.experiment}/{run.name}: {status}" + (f" ({reason})" if reason else ""))
    if info.get("description"):
        print(f"  description: {info['description']}")
    if info["error"]:
        print(f"  error: {info['error']}")
    print(f"  parameters: {json.dumps(run.params)}" + (f", threads {info['threads']}" if info.get("threads") else ""))
    if rows:
        keys = list(rows[0])
        print(table([[r.get(k) for k in keys] for r in rows], keys))
    if info["best"]:
        best = info["best"]
        print(f"best {best.get('metric')}: {_fmt(best.get('value'))} (epoch {best.get('epoch')})")
    repro = info["repro"]
    if repro:
        dirty = " (dirty)" if repro.get("git_dirty") else ""
        print(
            f"  seed {repro.get('seed')}, git {repro.get('git_commit') or 'none'}{dirty}, python {repro.get('python')}, "
            f"torch {repro.get('torch')}, loopkit {repro.get('loopkit')}"
        )
        print(f"  command: {repro.get('command')}")
    print(f"  record: {run.dir}  (tensorboard --logdir {run.dir}/tensorboard)")
    for entry in info.get("exports") or []:
        print(f"  exported ({entry['which']} model, {entry['format']}): {entry['path']}")
    if os.path.isfile(os.path.join(run.dir, LOG_FILE)):
        print(f"  console output: {os.path.join(run.dir, LOG_FILE)}")


def list_table(
    runs: Sequence[Run | DamagedRun],
    metric: str | None,
    *,
    descending: bool | None = None,
    stale_after: float = STALE_AFTER_S,
) -> str:
    """Runs as a table sorted by ``metric``: each run's best value in the metric's own direction
    (:func:`~loopkit.runs.record.metric_mode`), the best run first unless ``descending`` says otherwise;
    runs without it last. A damaged run is a row with status DAMAGED and the problem (the file named) in place
    of its parameters."""
    good = [r for r in runs if isinstance(r, Run)]
    if metric is not None and good and not any(metric in r.info["final"] for r in good):
        produced = sorted({k for r in good for k in r.info["final"]})
        raise ValueError(f"no run produces metric {metric!r}; they produce: {', '.join(produced) or 'nothing yet'}")
    if descending is None:
        first = good[0].info if good else {}
        descending = metric is not None and metric_mode(metric, first.get("monitor"), first.get("mode")) == "max"

    values: dict[str, float | str | None] = {}
    for run in good:
        try:
            values[run.dir] = run.value(metric) if metric else (run.info["best"] or {}).get("value")
        except RecordError as error:
            values[run.dir] = f"DAMAGED: {error}"

    def key(run: Run | DamagedRun) -> tuple[int, float, str]:
        value = values.get(run.dir)
        if not isinstance(value, (int, float)):
            return (1, 0.0, run.name)
        return (0, -value if descending else value, run.name)

    rows: list[list[Any]] = []
    for entry in sorted(runs, key=key) if metric else runs:
        if isinstance(entry, DamagedRun):
            rows.append([entry.name, "DAMAGED", "", "", "", entry.problem])
            continue
        run = entry
        status, reason = run.effective(stale_after)
        value = values[run.dir]
        damaged = isinstance(value, str)
        rows.append(
            [
                run.name,
                "DAMAGED" if damaged else status + (f" ({reason})" if reason and status != "FINISHED" else ""),
                run.info["epochs_done"],
                None if damaged else value,
                run.info["started"] and run.info["started"][:19],
                value if damaged else json.dumps(run.params, separators=(",", ":"))[:80],
            ]
        )
    return table(rows, ["run", "status", "epochs", f"best {metric}" if metric else "best", "started", "parameters"])


def experiments_table(root: str) -> str:
    """The experiments under ``root``: name, number of runs, and when the newest run was created."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no runs root {root!r}: nothing has been recorded there; give --root")
    rows: list[list[Any]] = []
    for name in sorted(os.listdir(root)):
        if os.path.isdir(os.path.join(root, name)) and not name.startswith("."):
            try:
                runs = list_runs(root, name)
            except PathError as error:  # a name that is not a plain component, or a link out of the root
                rows.append([name, f"DAMAGED: {error}", ""])
                continue
            newest = max((r.info["created"] or "" for r in runs if isinstance(r, Run)), default="")
            rows.append([name, len(runs), newest[:19]])
    return table(rows, ["experiment", "runs", "newest run created"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loopkit.runs",
        description="Runs, run records and sweeps.",
        epilog="exit status: 0 done, 1 a failed run or a damaged record, 2 a usage error, 75 stopped by SIGTERM/SIGINT "
        "after a checkpoint (resume it)",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="train one recorded run of a task",
        description="Train one recorded run of TASK. Its parameters are flags: python -m loopkit.runs run TASK --help "
        "lists them.",
        allow_abbrev=False,
    )
    p.add_argument("task", help="a module name (loopkit.demo) or a .py file defining Params and build")

    p = sub.add_parser(
        "list", help="an experiment's runs, sorted by a metric; without one, the experiments", allow_abbrev=False
    )
    p.add_argument("experiment", nargs="?", help="the experiment (leave out to list the experiments under --root)")
    p.add_argument("--root", default="runs")
    p.add_argument("--sort", default=None, help="metric to sort by (each run's best value)")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--desc", dest="descending", action="store_true", default=None, help="highest first")
    order.add_argument("--asc", dest="descending", action="store_false", help="lowest first")
    p.add_argument(
        "--stale-after", type=_seconds, default=STALE_AFTER_S, help="seconds without heartbeat = interrupted"
    )

    sub.add_parser("sweep", help="run, join or report a sweep described by a YAML/TOML file (sweep --help)")

    p = sub.add_parser("export", help="export a run's best or last model to ONNX and/or torch.export (.pt2)")
    p.add_argument("run", help="EXPERIMENT/RUN")
    p.add_argument("--task", required=True, help="the task that made the run (module name or .py file)")
    p.add_argument("--input-shape", required=True, help="an example input's shape, batch first: 2,16")
    p.add_argument("--format", action="append", choices=list(FORMATS), help="onnx and/or torch.export (both)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--root", default="runs")

    for command, text in (
        ("show", "one run: status, parameters, metrics"),
        ("resume", "continue a run from its checkpoint"),
    ):
        p = sub.add_parser(command, help=text, allow_abbrev=False)
        p.add_argument("run", help="EXPERIMENT/RUN")
        p.add_argument("--root", default="runs")
        p.add_argument("--stale-after", type=_seconds, default=STALE_AFTER_S)
        if command == "resume":
            p.add_argument(
                "--task",
                default=None,
                help="the task to run (a module name or .py file); needed when the recorded one is outside the "
                "project, inside the run root, or changed since the run was recorded",
            )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"give a finite number of seconds > 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The ``runs`` command; returns its exit status (see the module's docstring)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # The reader went away (``list | head``): as other tools, stop quietly. Python's own flush at exit
        # would fail again, so stdout is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Preempted as stop:
        return preempted(stop)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["runs"]:
        argv = argv[1:]
    parser = _parser()
    if argv[:1] == ["sweep"]:
        from .sweep_cli import sweep_main

        return sweep_main(argv[1:])
    if argv[:1] == ["run"] and len(argv) >= 2 and not argv[1].startswith("-"):
        run_task_main(argv[1], argv[2:], prog=f"python -m loopkit.runs run {argv[1]}")
        return EXIT_OK
    args = parser.parse_args(argv)
    try:
        if args.command == "list" and args.experiment is None:
            print(experiments_table(args.root))
        elif args.command == "list":
            runs = list_runs(args.root, args.experiment)
            try:
                text = list_table(runs, args.sort, descending=args.descending, stale_after=args.stale_after)
            except ValueError as error:  # a --sort metric that no run produces
                raise RunError(str(error)) from None
            print(text)
        elif args.command == "export":
            experiment, _, name = args.run.partition("/")
            try:
                shape = [int(n) for n in args.input_shape.split(",")]
            except ValueError:
                parser.error(f"export: --input-shape takes whole numbers, batch first (2,16), got {args.input_shape!r}")
            if not name:
                parser.error(f"export: give the run as EXPERIMENT/RUN, got {args.run!r}")
            check_name("experiment", experiment)
            check_name("run", name)
            opened = open_run(experiment, name, root=args.root)
            try:
                entries = opened.export(
                    load_task(args.task), torch.zeros(shape), args.format or list(FORMATS), which=args.which
                )
            except (ValueError, ImportError) as error:
                if isinstance(error, RecordError):
                    raise
                raise RunError(str(error)) from None
            for entry in entries:
                print(f"{entry['format']}: {entry['path']}")
        elif args.command in ("show", "resume"):
            experiment, _, name = args.run.partition("/")
            if not name:
                parser.error(f"{args.command}: give the run as EXPERIMENT/RUN, got {args.run!r}")
            if args.command == "show":
                print_run(Run.load(args.root, experiment, name), args.stale_after)
            else:
                with signals_end_the_process():
                    run = resume_run(args.root, experiment, name, stale_after=args.stale_after, task=args.task)
                print_run(run)
        else:
            parser.error("run needs a task: python -m loopkit.runs run loopkit.demo --epochs=3")
    except RecordError as error:
        print(f"error: damaged run record: {error}", file=sys.stderr)
        return EXIT_FAILED
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
