"""The command line: ``python -m loopkit.runs`` (or the ``loopkit`` console script).

::

    python -m loopkit.runs run loopkit.demo --epochs=5 --learning_rate=0.01    # one recorded run of a task
    python -m loopkit.runs list digits --sort valid_accuracy                   # an experiment's runs, a table
    python -m loopkit.runs show digits/20261130-104300-3fa2                    # one run: record and metrics
    python -m loopkit.runs resume digits/20261130-104300-3fa2                  # continue from its checkpoint
    python -m loopkit.runs sweep sweep.yaml                                    # a sweep (docs/runs.md)

``loopkit runs list digits`` is the same as ``loopkit list digits``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import torch

from ..callbacks.export import FORMATS
from .console import LOG_FILE
from .open import open_run
from .parameters import fields, params_from_namespace, parser_for
from .record import STALE_AFTER_S, Run, check_name, list_runs, metric_mode
from .runner import fit_budget, load_task, resume_run, run_task, run_threads
from .table import table


def _add_run_options(parser: argparse.ArgumentParser, experiment: str, threads: bool = True) -> None:
    group = parser.add_argument_group("run record")
    group.add_argument("--experiment", default=experiment, help=f"experiment name (default: {experiment})")
    group.add_argument("--run-name", default=None, help="the run's name (default: time and a random suffix)")
    group.add_argument("--runs-root", default="runs", help="root directory of run records (default: runs)")
    group.add_argument("--description", default=None, help="what the run is for, kept in its record")
    if threads:  # else the task declares its own threads parameter, which run_task reads
        group.add_argument("--threads", type=int, default=None, help="CPU threads for the fit (default: 1)")


def run_task_main(
    task: str | ModuleType, argv: Sequence[str] | None = None, *, prog: str | None = None, experiment: str | None = None
) -> Run:
    """Parse ``argv`` as the task's parameters, train one recorded run, print its metrics and where it is.

    The experiment is ``--experiment``, else ``experiment``, else the task module's ``EXPERIMENT``, else
    ``"default"``.
    """
    module = load_task(task)
    if experiment is None:
        experiment = getattr(module, "EXPERIMENT", "default")
        if not isinstance(experiment, str):
            raise TypeError(f"{module.__name__}.EXPERIMENT is {experiment!r}: make it the experiment's name, a string")
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
            if os.path.exists(os.path.join(args.runs_root, args.experiment, args.run_name)):
                raise ValueError(
                    f"run {args.experiment}/{args.run_name} already exists in {args.runs_root!r}; give another "
                    f"--run-name, or resume it (python -m loopkit.runs resume {args.experiment}/{args.run_name})"
                )
    except ValueError as error:  # a ParameterError, a bad name or a taken one: a usage error, before any run
        parser.error(str(error))
    run = run_task(
        module,
        params,
        experiment=args.experiment,
        root=args.runs_root,
        name=args.run_name,
        description=args.description,
        threads=getattr(args, "threads", None),
    )
    print_run(run)
    return run


def print_run(run: Run, stale_after: float = STALE_AFTER_S) -> None:
    """The run's status, its per-epoch metrics as a table, final and best values, and its directory."""
    status, reason = run.effective(stale_after)
    info = run.info
    print(f"run {run.experiment}/{run.name}: {status}" + (f" ({reason})" if reason else ""))
    if info.get("description"):
        print(f"  description: {info['description']}")
    if info["error"]:
        print(f"  error: {info['error']}")
    print(f"  parameters: {json.dumps(run.params)}" + (f", threads {info['threads']}" if info.get("threads") else ""))
    rows = run.metrics()
    if rows:
        keys = list(rows[0])
        print(table([[r.get(k) for k in keys] for r in rows], keys))
    if info["best"]:
        best = info["best"]
        print(f"best {best['metric']}: {best['value']:.4f} (epoch {best['epoch']})")
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
    runs: Sequence[Run], metric: str | None, *, descending: bool | None = None, stale_after: float = STALE_AFTER_S
) -> str:
    """Runs as a table sorted by ``metric``: each run's best value in the metric's own direction
    (:func:`~loopkit.runs.record.metric_mode`), the best run first unless ``descending`` says otherwise;
    runs without it last."""
    if metric is not None and runs and not any(metric in r.info["final"] for r in runs):
        produced = sorted({k for r in runs for k in r.info["final"]})
        raise ValueError(f"no run produces metric {metric!r}; they produce: {', '.join(produced) or 'nothing yet'}")
    if descending is None:
        first = runs[0].info if runs else {}
        descending = metric is not None and metric_mode(metric, first.get("monitor"), first.get("mode")) == "max"

    def key(run: Run) -> tuple[int, float, str]:
        value = run.value(metric) if metric else None
        if value is None:
            return (1, 0.0, run.name)
        return (0, -value if descending else value, run.name)

    rows = []
    for run in sorted(runs, key=key) if metric else runs:
        status, reason = run.effective(stale_after)
        rows.append(
            [
                run.name,
                status + (f" ({reason})" if reason and status != "FINISHED" else ""),
                run.info["epochs_done"],
                run.value(metric) if metric else (run.info["best"] or {}).get("value"),
                run.info["started"] and run.info["started"][:19],
                json.dumps(run.params, separators=(",", ":"))[:80],
            ]
        )
    return table(rows, ["run", "status", "epochs", f"best {metric}" if metric else "best", "started", "parameters"])


def experiments_table(root: str) -> str:
    """The experiments under ``root``: name, number of runs, and when the newest run was created."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no runs root {root!r}: nothing has been recorded there; give --root")
    rows = []
    for name in sorted(os.listdir(root)):
        if os.path.isdir(os.path.join(root, name)) and not name.startswith("."):
            runs = list_runs(root, name)
            newest = max((r.info["created"] or "" for r in runs), default="")
            rows.append([name, len(runs), newest[:19]])
    return table(rows, ["experiment", "runs", "newest run created"])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["runs"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m loopkit.runs", description="Runs, run records and sweeps.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train one recorded run of a task", add_help=False)
    p.add_argument("task", help="a module name (loopkit.demo) or a .py file defining Params and build")

    p = sub.add_parser("list", help="an experiment's runs, sorted by a metric; without one, the experiments")
    p.add_argument("experiment", nargs="?", help="the experiment (leave out to list the experiments under --root)")
    p.add_argument("--root", default="runs")
    p.add_argument("--sort", default=None, help="metric to sort by (each run's best value)")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--desc", dest="descending", action="store_true", default=None, help="highest first")
    order.add_argument("--asc", dest="descending", action="store_false", help="lowest first")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_S, help="seconds without heartbeat = interrupted")

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
        p = sub.add_parser(command, help=text)
        p.add_argument("run", help="EXPERIMENT/RUN")
        p.add_argument("--root", default="runs")
        p.add_argument("--stale-after", type=float, default=STALE_AFTER_S)

    if argv[:1] == ["sweep"]:
        from .sweep_cli import sweep_main

        return sweep_main(argv[1:])
    if argv[:1] == ["run"] and len(argv) >= 2 and not argv[1].startswith("-"):
        run_task_main(argv[1], argv[2:], prog=f"python -m loopkit.runs run {argv[1]}")
        return 0
    args = parser.parse_args(argv)
    try:
        if args.command == "list" and args.experiment is None:
            print(experiments_table(args.root))
        elif args.command == "list":
            print(
                list_table(
                    list_runs(args.root, args.experiment),
                    args.sort,
                    descending=args.descending,
                    stale_after=args.stale_after,
                )
            )
        elif args.command == "export":
            experiment, _, name = args.run.partition("/")
            try:
                shape = [int(n) for n in args.input_shape.split(",")]
            except ValueError:
                parser.error(f"export: --input-shape takes whole numbers, batch first (2,16), got {args.input_shape!r}")
            if not name:
                parser.error(f"export: give the run as EXPERIMENT/RUN, got {args.run!r}")
            run = open_run(experiment, name, root=args.root)
            for entry in run.export(
                load_task(args.task), torch.zeros(shape), args.format or list(FORMATS), which=args.which
            ):
                print(f"{entry['format']}: {entry['path']}")
        elif args.command in ("show", "resume"):
            experiment, _, name = args.run.partition("/")
            if not name:
                parser.error(f"{args.command}: give the run as EXPERIMENT/RUN, got {args.run!r}")
            if args.command == "show":
                print_run(Run.load(args.root, experiment, name), args.stale_after)
            else:
                print_run(resume_run(args.root, experiment, name, stale_after=args.stale_after))
        else:
            parser.error("run needs a task: python -m loopkit.runs run loopkit.demo --epochs=3")
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
