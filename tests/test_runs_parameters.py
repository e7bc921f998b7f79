"""Parameters: dataclass -> flags and config files, flags over file over defaults, bad values named early."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest

from loopkit.runs.config_files import load_config
from loopkit.runs.flags import parse_params
from loopkit.runs.parameters import ParameterError, make_params, param, to_dict


@dataclasses.dataclass
class P:
    learning_rate: float = param(1e-3, help="peak lr", low=0)
    epochs: int = param(10, help="epochs", low=1)
    dropout: float = param(0.1, low=0, high=1)
    shuffle: bool = param(True, help="shuffle")
    amp: bool = param(False)
    optimizer: Literal["adamw", "sgd"] = param("adamw")
    name: str = param("x")
    width: int | None = param(None)
    options: dict = param({"betas": [0.9, 0.99]})


def test_defaults_and_typed_flags():
    p = parse_params(P, [])
    assert p == P()
    p = parse_params(P, ["--learning_rate=0.01", "--epochs", "3", "--dropout=0.9", "--width=64"])
    assert (p.learning_rate, p.epochs, p.dropout, p.width) == (0.01, 3, 0.9, 64)
    assert type(p.epochs) is int and type(p.learning_rate) is float


def test_dashed_spelling_and_json_options():
    p = parse_params(P, ["--learning-rate", "0.5", '--options={"betas": [0.8, 0.9], "eps": 1e-6}'])
    assert p.learning_rate == 0.5 and p.options == {"betas": [0.8, 0.9], "eps": 1e-6}
    assert P().options is not P().options  # a fresh dict per instance


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--amp"], True),
        (["--amp", "true"], True),
        (["--amp=True"], True),
        (["--amp", "False"], False),
        (["--amp=false"], False),
        (["--amp=0"], False),
        (["--no-amp"], False),
        (["--amp", "--epochs=2"], True),
    ],
)
def test_booleans_mean_what_they_say(argv, expected):
    assert parse_params(P, argv).amp is expected


def test_no_flag_turns_a_true_default_off():
    assert parse_params(P, ["--no-shuffle"]).shuffle is False
    assert parse_params(P, ["--shuffle", "no"]).shuffle is False


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--learning_rate=abc"], ["learning_rate", "'abc'"]),
        (["--epochs=0"], ["epochs", ">= 1", "epochs=0"]),
        (["--epochs=2.5"], ["epochs", "'2.5'"]),
        (["--dropout=1.5"], ["dropout", "<= 1", "1.5"]),
        (["--amp=maybe"], ["amp", "'maybe'"]),
        (["--optimizer=adam"], ["optimizer", "'adam'", "adamw"]),
        (["--options={bad"], ["options", "JSON"]),
        (["--learning_rate=nan"], ["learning_rate", "'nan'"]),
    ],
)
def test_bad_flags_exit_naming_parameter_and_value(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_params(P, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_then_flags_override(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        path.write_text("learning_rate: 0.02\nepochs: 4\namp: true\noptimizer: sgd\noptions: {eps: 0.1}\n")
    else:
        path.write_text('learning_rate = 0.02\nepochs = 4\namp = true\noptimizer = "sgd"\noptions = {eps = 0.1}\n')
    p = parse_params(P, ["--config", str(path), "--epochs=7", "--no-amp"])
    assert (p.learning_rate, p.epochs, p.amp, p.optimizer, p.options) == (0.02, 7, False, "sgd", {"eps": 0.1})
    assert load_config(path)["epochs"] == 4


def test_bad_config_values_and_keys_fail_naming_them(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: many\n")
    with pytest.raises(SystemExit):
        parse_params(P, ["--config", str(path)])
    err = capsys.readouterr().err
    assert "epochs" in err and "'many'" in err
    path.write_text("epoch: 3\n")
    with pytest.raises(ParameterError, match=r"unknown parameter.*'epoch'.*known: learning_rate, epochs"):
        make_params(P, load_config(path))
    (tmp_path / "run.ini").write_text("epochs = 3\n")
    with pytest.raises(ParameterError, match=r"\.yaml, \.yml or \.toml"):
        load_config(tmp_path / "run.ini")
    with pytest.raises(ParameterError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_make_params_checks_every_source_alike():
    assert make_params(P, {"epochs": "3", "amp": "off", "width": "none"}) == P(epochs=3, amp=False, width=None)
    assert make_params(P, {"epochs": 3.0}).epochs == 3
    with pytest.raises(ParameterError, match=r"'amp' must be a bool, got amp=1.5"):
        make_params(P, {"amp": 1.5})
    with pytest.raises(ParameterError, match=r"'epochs' must be an int, got epochs=True"):
        make_params(P, {"epochs": True})
    with pytest.raises(ParameterError, match="may not be None"):
        make_params(P, {"epochs": None})


def test_post_init_errors_become_parameter_errors():
    @dataclasses.dataclass
    class Q:
        low: float = 0.0
        high: float = 1.0

        def __post_init__(self):
            if self.low > self.high:
                raise ValueError(f"low must not exceed high, got low={self.low}, high={self.high}")

    with pytest.raises(ParameterError, match=r"low=2\.0, high=1\.0"):
        make_params(Q, {"low": 2})


def test_to_dict_round_trips_through_json():
    p = P(epochs=3, width=5)
    assert make_params(P, json.loads(json.dumps(to_dict(p)))) == p
