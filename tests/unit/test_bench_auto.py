"""bench.auto's added-cost estimator: per-round differences from the bare variant, their median and quartiles,
over rounds whose variant order alternates."""

from __future__ import annotations

from typing import Any

import pytest

from bench.auto import added_costs, baseline, measure, relative_target


def test_added_cost_is_the_median_of_per_round_differences() -> None:
    # the machine is slower in round 2: the medians differ by 0.5, while auto is 0.5 to 2 slower in every round
    samples = {"bare": [10.0, 20.0, 11.0], "auto": [11.0, 22.0, 11.5], "hand-written": [10.5, 20.5, 11.5]}
    added = added_costs(samples)
    assert added["bare"] == (0.0, 0.0, 0.0)
    assert added["auto"][0] == pytest.approx(1.0) and added["hand-written"][0] == pytest.approx(0.5)
    # the quartiles of the differences (0.5, 1.0, 2.0), by statistics.quantiles' exclusive method
    assert added["auto"][1:] == pytest.approx((0.5, 2.0))


def test_rounds_must_pair_up() -> None:
    with pytest.raises(ValueError):
        added_costs({"bare": [1.0, 2.0], "auto": [1.0]})


def test_the_variant_order_alternates_from_round_to_round() -> None:
    """Run in one order, a variant that always follows another would carry any drift within a round."""
    ran: list[str] = []

    def variant(name: str) -> Any:
        return lambda x: ran.append(name)

    variants = {name: variant(name) for name in ("bare", "auto", "auto+sketch")}
    med, added, _ = measure(variants, None, calls=1, rounds=3)
    warm_up, rounds = ran[:3], [ran[3:6], ran[6:9], ran[9:12]]
    assert warm_up == ["bare", "auto", "auto+sketch"] and len(ran) == 12
    assert rounds == [["bare", "auto", "auto+sketch"], ["auto+sketch", "auto", "bare"], ["bare", "auto", "auto+sketch"]]
    assert set(med) == set(added) == set(variants)


def test_the_sketching_variant_is_measured_against_its_own_model_copy() -> None:
    """auto+sketch runs on a deep copy of the model, which can be slower than the original: its added cost is
    taken against that copy's bare run, and the copy's own difference from bare is shown."""
    samples = {
        "bare": [100.0, 110.0, 100.0],
        "bare copy": [102.0, 112.0, 102.0],
        "auto": [104.0, 114.0, 104.0],
        "auto+sketch": [105.0, 115.0, 105.0],
    }
    added = added_costs(samples)
    assert added["auto+sketch"][0] == pytest.approx(3.0)  # not 5.0, its difference from the original's bare
    assert added["bare copy"][0] == pytest.approx(2.0) and added["auto"][0] == pytest.approx(4.0)
    assert baseline("auto+sketch", samples) == "bare copy" and baseline("auto", samples) == "bare"
    # without a copy's bare run, everything is against bare
    del samples["bare copy"]
    assert added_costs(samples)["auto+sketch"][0] == pytest.approx(5.0)


def test_the_forest_target_takes_each_share_of_its_own_bare_variant(capsys: pytest.CaptureFixture[str]) -> None:
    med = {"bare": 100.0, "bare copy": 200.0, "auto": 104.0, "auto+sketch": 209.0}
    added = {"bare": (0.0, 0.0, 0.0), "bare copy": (100.0,) * 3, "auto": (4.0,) * 3, "auto+sketch": (9.0,) * 3}
    assert relative_target(med, added, limit=0.05)  # 9 µs on 200 is 4.5 %, though 9 % of the original's bare
    out = capsys.readouterr().out
    assert "auto: added 4.0 %" in out and "auto+sketch: added 4.5 %" in out
    added["auto+sketch"] = (11.0,) * 3
    assert not relative_target(med, added, limit=0.05)
