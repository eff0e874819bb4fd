"""bench.auto's added-cost estimator: per-round differences from the bare variant, then their median."""

from __future__ import annotations

import pytest

from bench.auto import added_costs


def test_added_cost_is_the_median_of_per_round_differences() -> None:
    # the machine is slower in round 2: the medians differ by 0.5, while auto is 0.5 to 2 slower in every round
    samples = {"bare": [10.0, 20.0, 11.0], "auto": [11.0, 22.0, 11.5], "hand-written": [10.5, 20.5, 11.5]}
    added = added_costs(samples)
    assert added == {"bare": 0.0, "auto": pytest.approx(1.0), "hand-written": pytest.approx(0.5)}


def test_rounds_must_pair_up() -> None:
    with pytest.raises(ValueError):
        added_costs({"bare": [1.0, 2.0], "auto": [1.0]})
