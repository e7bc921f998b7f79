"""One sweep worker for the multi-process tests: ``python sweep_worker.py '<json>'``.

The JSON holds ``root``, ``experiment``, ``dims`` and Sweep keyword arguments; ``"pruner": "always"`` prunes
every trial at its first report.
"""

from __future__ import annotations

import json
import pathlib
import sys

import optuna
import torch

from loopkit.runs.sweep import Sweep

if __name__ == "__main__":
    torch.set_num_threads(1)
    spec = json.loads(sys.argv[1])
    kw = spec.get("kw", {})
    if kw.get("pruner") == "always":
        kw["pruner"] = optuna.pruners.ThresholdPruner(upper=-1.0)
    task = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")
    Sweep(task, spec["dims"], experiment=spec["experiment"], root=spec["root"], **kw).run(quiet=True, poll=0.1)
