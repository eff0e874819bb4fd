"""Error-bound, merge and serialisation tests for the Misra-Gries frequent-items summary."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from otel_ml.sketch.frequent import FrequentItems


def zipf_stream(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([f"cat{v}" for v in range(5000)])[np.minimum(rng.zipf(1.3, n), 5000) - 1]


def check_bounds(fi: FrequentItems, exact: Counter[object]) -> None:
    total = sum(exact.values())
    assert fi.total == total
    counts = fi.counts()
    assert len(counts) <= fi.k
    assert sum(counts.values()) + fi.other == total
    assert fi.max_error <= (total - sum(counts.values())) / (fi.k + 1)
    for key, true in exact.items():
        est = counts.get(key, 0)
        assert est <= true <= est + fi.max_error, key
        # space-saving view: count + max_error over-estimates by at most total / k
        assert 0 <= est + fi.max_error - true <= total / fi.k


def test_zipf_stream_against_exact_counts() -> None:
    data = zipf_stream(200_000, seed=0)
    fi = FrequentItems(k=50)
    for i in range(0, data.size, 10_000):
        fi.update(data[i : i + 10_000])
    exact = Counter(data.tolist())
    check_bounds(fi, exact)
    # the true top 10 are all tracked and come out in the right order
    assert [k for k, _ in fi.top(10)] == [k for k, _ in exact.most_common(10)]


def test_merge_keeps_bounds() -> None:
    parts = [zipf_stream(50_000, seed=s) for s in range(4)]
    summaries = []
    for part in parts:
        fi = FrequentItems(k=30)
        fi.update(part)
        summaries.append(fi)
    merged = summaries[0]
    for other in summaries[1:]:
        merged.merge(other)
    check_bounds(merged, Counter(np.concatenate(parts).tolist()))
    assert summaries[1].total == 50_000


def test_mixed_types_ints_bools_and_object_arrays() -> None:
    fi = FrequentItems(k=4)
    fi.update(np.array([1, 2, 2, 3, 3, 3]))
    fi.update(np.array(["a", "b", "a"], dtype=object))
    fi.update(np.array([True, False, True]))
    # True == 1 and False hashes like 0: they share counters with the ints, as in a dict
    exact = Counter([1, 2, 2, 3, 3, 3, "a", "b", "a", True, False, True])
    check_bounds(fi, exact)
    assert fi.total == 12


def test_exact_when_few_distinct_values() -> None:
    fi = FrequentItems(k=8)
    fi.update(np.array(["x", "y", "x", "z", "x", "y"]))
    assert fi.counts() == {"x": 3, "y": 2, "z": 1}
    assert fi.other == 0 and fi.max_error == 0


def test_json_round_trip_is_deterministic() -> None:
    data = zipf_stream(20_000, seed=3)
    a, b = FrequentItems(k=10), FrequentItems(k=10)
    a.update(data)
    b.update(data)
    text = json.dumps(a.to_dict())
    assert text == json.dumps(b.to_dict())
    restored = FrequentItems.from_dict(json.loads(text))
    assert restored.counts() == a.counts()
    assert (restored.total, restored.other, restored.max_error) == (a.total, a.other, a.max_error)
    odd = FrequentItems(k=4)
    odd.update(np.array([(1, 2), np.float32(2.5), float("inf")], dtype=object))
    exported = json.loads(json.dumps(odd.to_dict(), allow_nan=False))
    # ordered by the exported key (count, then type name, then repr), so export -> import -> export is stable
    assert exported["items"] == [[2.5, 1], ["(1, 2)", 1], ["inf", 1]]
    assert FrequentItems.from_dict(exported).to_dict() == exported


def test_from_dict_rejects_inconsistent_state() -> None:
    fi = FrequentItems(k=2)
    fi.update(np.array(["a", "b"]))
    d = fi.to_dict()
    d["total"] = 1
    with pytest.raises(ValueError):
        FrequentItems.from_dict(d)
