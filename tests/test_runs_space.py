"""Search dimensions and grids against hand-computed values; bad dimensions refused with the value quoted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopkit.runs.space import Linear, Logspace, Multiple, Random, Single, SpaceError, apply, dimension, grid, space


def test_linear_and_logspace_are_the_hand_computed_points():
    assert Linear(0.0, 0.3, 4).values() == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=1e-15)
    assert Linear(16, 64, 4).values() == [16, 32, 48, 64]  # whole-number ends on a whole step stay ints
    assert Linear(0, 1, 3).values() == [0.0, 0.5, 1.0]
    assert Linear(5, 9, 1).values() == [5]
    assert Logspace(-4, -1, 4).values() == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1], rel=1e-12)
    assert Logspace(1, 3, 3, base=2).values() == [2.0, 4.0, 8.0]
    assert Logspace(0, 1, 5).values() == pytest.approx([10 ** (i / 4) for i in range(5)], rel=1e-12)


def test_random_draws_come_from_the_seeded_generator():
    rng = np.random.default_rng(3)
    assert Random(0.0, 1.0, 4).values(np.random.default_rng(3)) == rng.uniform(0.0, 1.0, 4).tolist()
    rng = np.random.default_rng(3)
    expected = np.exp(rng.uniform(math.log(1e-4), math.log(1e-1), 5)).tolist()
    assert Random(1e-4, 1e-1, 5, "loguniform").values(np.random.default_rng(3)) == expected
    ints = Random(1, 6, 50, "int").values(np.random.default_rng(0))
    assert set(ints) == {1, 2, 3, 4, 5, 6} and all(isinstance(i, int) for i in ints)


def test_grid_is_every_combination_last_dimension_fastest():
    points = grid({"a": Multiple([1, 2, 3]), "b": Logspace(0, 1, 2), "c": Single("x")})
    assert len(points) == 3 * 2 * 1
    assert points == [{"a": a, "b": b, "c": "x"} for a in (1, 2, 3) for b in (1.0, 10.0)]
    six = grid({"x": Linear(0, 5, 6), "y": Multiple(list("abcdef"))})
    assert len(six) == 36 and len({(p["x"], p["y"]) for p in six}) == 36  # Valohai's 6 x 6


def test_config_form_and_nested_parameters():
    dims = space({"lr": {"logspace": {"start": -3, "end": -1, "count": 3}}, "opt.pct_start": {"multiple": [0.2, 0.4]}})
    assert isinstance(dims["lr"], Logspace) and dims["opt.pct_start"].values() == [0.2, 0.4]
    assert apply({"lr": 1.0, "opt": {"div": 25}}, {"opt.pct_start": 0.4, "lr": 0.1}) == {
        "lr": 0.1,
        "opt": {"div": 25, "pct_start": 0.4},
    }


@pytest.mark.parametrize(
    "spec, match",
    [
        ({}, "search space is empty"),
        ({"lr": {"logspace": {"start": -4, "end": -2, "count": 0}}}, "'lr'.*count=0"),
        ({"lr": {"random": {"low": 1.0, "high": 0.1, "count": 3}}}, r"low=1\.0, high=0\.1"),
        (
            {"lr": {"random": {"low": 0, "high": 1, "count": 3, "distribution": "gaussian"}}},
            "unknown distribution 'gaussian'",
        ),
        ({"lr": {"random": {"low": 0, "high": 1, "count": 3, "distribution": "loguniform"}}}, "must be positive"),
        ({"lr": {"grid": [1, 2]}}, "unknown mode 'grid'"),
        ({"lr": {"multiple": []}}, "non-empty list"),
        ({"lr": {"linear": {"start": 0, "stop": 1, "count": 2}}}, "'lr': linear .*stop"),
        ({"lr": [0.1, 0.2]}, "give one mode"),
        ({"lr": {"logspace": {"start": 0, "end": 1, "count": 2, "base": 1}}}, "base=1"),
    ],
)
def test_bad_dimensions_are_refused(spec, match):
    with pytest.raises(SpaceError, match=match):
        space(spec)


def test_a_dimension_object_passes_through():
    d = Multiple([1])
    assert dimension("x", d) is d
