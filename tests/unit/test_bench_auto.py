"""bench.auto's added-cost estimator: per-round differences from the bare variant, their median and its
confidence interval, over rounds whose variant order alternates."""

from __future__ import annotations

from typing import Any

import pytest

from bench import auto
from bench.auto import added_costs, baseline, measure, median_interval, relative_target


def test_added_cost_is_the_median_of_per_round_differences() -> None:
    # the machine is slower in round 2: the medians differ by 0.5, while auto is 0.5 to 2 slower in every round
    samples = {"bare": [10.0, 20.0, 11.0], "auto": [11.0, 22.0, 11.5], "hand-written": [10.5, 20.5, 11.5]}
    added = added_costs(samples)
    assert added["bare"] == (0.0, 0.0, 0.0)
    assert added["auto"][0] == pytest.approx(1.0) and added["hand-written"][0] == pytest.approx(0.5)
    # three rounds are too few for a narrower interval than the extremes of the differences (0.5, 1.0, 2.0)
    assert added["auto"][1:] == pytest.approx((0.5, 2.0))


def test_the_median_interval_is_the_binomial_one() -> None:
    """For 100 values the 95 % interval of the median runs from the 40th to the 61st smallest (the exact
    binomial interval); it narrows as the square root of the count."""
    values = [float(v) for v in range(100)][::-1]  # any order
    assert median_interval(values) == (39.0, 60.0)
    lo, hi = median_interval([float(v) for v in range(10_000)])
    assert (lo, hi) == (4901.0, 5098.0)
    assert median_interval([7.0]) == (7.0, 7.0)


def test_rounds_must_pair_up() -> None:
    with pytest.raises(ValueError):
        added_costs({"bare": [1.0, 2.0], "auto": [1.0]})


def test_the_variant_order_alternates_from_round_to_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in one order, a variant that always follows another would carry any drift within a round."""
    monkeypatch.setattr(auto, "SUSPENDED", ())  # no swaps of the patches, so no untimed calls after them
    ran: list[str] = []

    def variant(name: str) -> Any:
        return lambda x: ran.append(name)

    variants = {name: variant(name) for name in ("bare", "auto", "auto+sketch")}
    med, added, _ = measure(variants, None, calls=2, rounds=3)
    turns = [ran[i : i + 2] for i in range(0, len(ran), 2)]
    assert all(a == b for a, b in turns)  # a turn is `calls` calls of one variant
    order = [a for a, _ in turns]
    assert len(order) == 3 * (auto.WARM_UP_ROUNDS + 3)
    forward, backward = ["bare", "auto", "auto+sketch"], ["auto+sketch", "auto", "bare"]
    assert order[-9:] == forward + backward + forward  # the timed rounds, after the warm-up ones
    assert order[:6] == forward + backward
    assert set(med) == set(added) == set(variants)


def test_a_turn_leaves_nothing_queued_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work a variant's calls hand to otel-ml's worker is drained (untimed) before the next variant's turn, and
    its time is reported per call as what the turn left queued."""
    drained: list[str] = []
    last: list[str] = []

    class Worker:
        def drain(self, timeout: float) -> bool:
            drained.append(last[-1])
            return True

    class Runtime:
        worker = Worker()

    def variant(name: str) -> Any:
        return lambda x: last.append(name)

    monkeypatch.setattr(auto.runtime, "get", lambda: Runtime())
    monkeypatch.setattr(auto, "SUSPENDED", ())
    variants = {name: variant(name) for name in ("bare", "auto")}
    _, _, queued = measure(variants, None, calls=3, rounds=2)
    assert drained == [last[i] for i in range(2, len(last), 3)]  # once per turn, after its last call
    assert len(drained) == 2 * (auto.WARM_UP_ROUNDS + 2) and set(queued) == {"bare", "auto"}


def test_turns_swap_the_class_patches_only_when_the_variant_needs_the_other_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bare variants run on the library's own methods, instrumented ones on the patches: the swap (about 250
    class attributes) happens only between the two, and the patches are back in place at the end."""

    class Owner:
        method = "wrapper"

    monkeypatch.setattr(auto.sk_auto, "_patches", {(Owner, "method"): ("original", "wrapper")})
    monkeypatch.setattr(auto.torch_auto, "_patch", None)
    seen: list[tuple[str, str]] = []

    def variant(name: str) -> Any:
        return lambda x: seen.append((name, Owner.method))

    variants = {name: variant(name) for name in ("bare", "auto")}
    measure(variants, None, calls=1, rounds=2)
    assert all(method == ("original" if name == "bare" else "wrapper") for name, method in seen)
    assert Owner.method == "wrapper"


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
    assert "hand-written" not in capsys.readouterr().out
    # a hand-written wrapper, when measured, is printed for reference and does not decide the verdict
    med["hand-written"], added["hand-written"] = 106.0, (6.0, 5.0, 7.5)
    added["auto+sketch"] = (9.0,) * 3
    assert relative_target(med, added, limit=0.05)
    assert "hand-written wrapper: added 6.0 % (95 % CI 5.0 to 7.5 %)   (reference)" in capsys.readouterr().out


def test_a_turn_after_a_swap_of_the_patches_starts_with_an_untimed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A swap empties the classes' method caches; the call that refills them is made untimed, so the cost (a
    benchmark artefact, never paid in production) does not land on whichever variant follows the swap."""

    class Owner:
        method = "wrapper"

    monkeypatch.setattr(auto.sk_auto, "_patches", {(Owner, "method"): ("original", "wrapper")})
    monkeypatch.setattr(auto.torch_auto, "_patch", None)
    clock = iter(range(0, 10**9, 1000))  # every perf_counter_ns() reading is 1 µs after the previous one
    monkeypatch.setattr(auto.time, "perf_counter_ns", lambda: next(clock))
    ran: list[str] = []
    patches = auto.Patches()

    def variant(name: str) -> Any:
        return lambda x: ran.append(name)

    # bare after auto: a swap, so one untimed call before the 3 timed ones
    assert patches.want(False) is False
    auto.turn("bare", variant("bare"), None, 3, patches)
    assert ran == ["bare"] * 4 and Owner.method == "original"
    # bare again: no swap, no extra call
    ran.clear()
    timed, _ = auto.turn("bare", variant("bare"), None, 3, patches)
    assert ran == ["bare"] * 3
    assert timed == pytest.approx(1000 / 3 / 1000)  # two clock readings 1 µs apart, over 3 calls
