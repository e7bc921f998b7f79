"""Export: ONNX run by onnxruntime and torch.export round trips compared with the PyTorch model; a model that
cannot be exported is refused naming why; the Export callback and ``runs export`` record what they wrote."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch

from loopkit.callbacks import Export, ExportError, export_model
from loopkit.runs import cli, open_run
from loopkit.runs.runner import run_task

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.LayerNorm(64), torch.nn.Linear(64, 8))


def test_onnx_export_runs_in_onnxruntime_as_the_model_does(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = mlp()
    path = export_model(model, torch.randn(4, 16), tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(7, 16)  # another batch size than the example: the batch dimension is dynamic
    (ours,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        theirs = model.eval()(x)
    # float32 throughout; onnxruntime's GEMM and GELU sum in another order than torch's, a few ulps per output
    # (~1e-7 relative on these 64-term dot products), so 1e-5 relative is tight yet far above rounding noise.
    torch.testing.assert_close(torch.from_numpy(ours), theirs, rtol=1e-5, atol=1e-6)


def test_torch_export_round_trips_and_leaves_the_model_mode_alone(tmp_path):
    model = mlp().train()
    path = export_model(model, torch.randn(4, 16), tmp_path / "m.pt2", "torch.export")
    program = torch.export.load(path)
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model.eval()(x), rtol=1e-6, atol=1e-7)
    assert model.train().training


def test_a_model_torch_cannot_trace_is_refused_naming_why(tmp_path):
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # a Python branch on a tensor's value

    with pytest.raises(ExportError, match=r"cannot export Branchy: torch.export could not trace it \(.*data-dependent"):
        export_model(Branchy(), torch.randn(2, 3), tmp_path / "b.pt2", "torch.export")
    assert not (tmp_path / "b.pt2").exists()
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(mlp(), torch.randn(2, 16), tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match=r"Export\(formats=\['pt'\]\)"):
        Export(tmp_path, formats=["pt"])


def test_the_callback_and_the_command_export_a_run_and_record_it(tmp_path, capsys):
    run = run_task(
        TASK,
        {"epochs": 2},
        experiment="e",
        root=tmp_path,
        name="r",
        callbacks=[Export(tmp_path / "e" / "r" / "export", formats="torch.export")],
    )
    (entry,) = run.info["exports"]
    assert entry["format"] == "torch.export" and entry["which"] == "last"
    last = open_run(run.dir).model(lambda p: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)), "last")
    x = torch.randn(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(entry["path"]).module()(x), last(x), rtol=1e-6, atol=1e-7)

    argv = [
        "export",
        "e/r",
        "--root",
        str(tmp_path),
        "--task",
        TASK,
        "--input-shape",
        "2,3",
        "--format",
        "torch.export",
    ]
    assert cli.main(argv) == 0
    assert f"torch.export: {tmp_path}/e/r/export/best.pt2" in capsys.readouterr().out
    record = json.loads((tmp_path / "e" / "r" / "run.json").read_text())
    assert [(e["format"], e["which"]) for e in record["exports"]] == [
        ("torch.export", "last"),
        ("torch.export", "best"),
    ]
    with pytest.raises(SystemExit) as exit:
        cli.main(["export", "e/r", "--root", str(tmp_path), "--task", TASK, "--input-shape", "2,x"])
    assert exit.value.code == 2 and "--input-shape takes whole numbers" in capsys.readouterr().err
