"""Reference: building from every input kind, the content id, the JSON file format and rank cuts."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from otel_ml.sketch.reference import DEFAULT_MAX_FEATURES, FORMAT, VERSION, Reference, ReferenceBuilder

LEVELS = np.linspace(0.0, 1.0, 41)


def sketched(ref: Reference, name: str) -> list[float]:
    """The retained (sorted) values of a numeric feature: every value while the sketch has not compacted."""
    return ref.features[name].quantiles.weighted_items()[0].tolist()


@pytest.fixture
def frame() -> pd.DataFrame:
    """Five rows of numeric, category, object, nullable Int64 and nullable boolean columns (with gaps)."""
    return pd.DataFrame(
        {
            "amount": [12.5, np.nan, 3.0, 40.0, 7.25],
            "country": pd.Categorical(["FR", "DE", None, "FR", "FR"]),
            "note": pd.Series(["a", None, "b", "a", "c"], dtype=object),
            "clicks": pd.array([4, pd.NA, 6, 1, 1], dtype="Int64"),
            "flag": pd.array([True, pd.NA, False, True, True], dtype="boolean"),
        }
    )


@pytest.fixture
def big() -> pd.DataFrame:
    """5,000 rows: enough for the quantile sketches to compact (their state is more than the raw values)."""
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 1.0, 5_000),
            "age": rng.integers(18, 90, 5_000),
            "country": rng.choice(["FR", "DE", "ES", "IT"], 5_000, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


# -- building ---------------------------------------------------------------------------------------------
def test_from_numpy() -> None:
    x = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0], [np.inf, 40.0]])
    ref = Reference.from_data(x)
    assert (ref.feature_names, ref.rows, ref.source) == (["f0", "f1"], 4, "training")
    f0, f1 = ref.features["f0"], ref.features["f1"]
    assert (f0.kind, f0.count, f0.missing, f0.posinf, f0.valid, f0.min, f0.max) == ("numeric", 4, 0, 1, 3, 1.0, 3.0)
    assert (f1.count, f1.missing, f1.nan, f1.valid) == (4, 1, 1, 3)
    assert sketched(ref, "f1") == [10.0, 30.0, 40.0]


def test_from_pandas_with_category_object_and_nullable_columns(frame: pd.DataFrame) -> None:
    ref = Reference.from_data(frame)
    assert ref.feature_names == ["amount", "country", "note", "clicks", "flag"] and ref.rows == 5
    kinds = {n: f.kind for n, f in ref.features.items()}
    assert kinds == {
        "amount": "numeric",
        "country": "categorical",
        "note": "categorical",
        "clicks": "numeric",
        "flag": "numeric",
    }
    assert {n: (f.count, f.missing) for n, f in ref.features.items()} == {
        "amount": (5, 1),
        "country": (5, 1),
        "note": (5, 1),
        "clicks": (5, 1),
        "flag": (5, 1),
    }
    assert sketched(ref, "amount") == [3.0, 7.25, 12.5, 40.0]
    assert sketched(ref, "clicks") == [1.0, 1.0, 4.0, 6.0]
    assert sketched(ref, "flag") == [0.0, 1.0, 1.0, 1.0]
    assert ref.features["country"].frequent.counts() == {"FR": 3, "DE": 1}
    assert ref.features["note"].frequent.counts() == {"a": 2, "b": 1, "c": 1}


def test_from_pandas_in_chunks_counts_every_row(frame: pd.DataFrame) -> None:
    whole, chunked = Reference.from_data(frame), Reference.from_data(frame, chunk_rows=2)
    assert chunked.rows == 5
    for name in whole.feature_names:
        a, b = whole.features[name].to_dict(), chunked.features[name].to_dict()
        assert {k: v for k, v in a.items() if k != "quantiles"} == {k: v for k, v in b.items() if k != "quantiles"}
        if "quantiles" in a:
            assert a["quantiles"]["levels"] == b["quantiles"]["levels"]
            assert a["quantiles"]["mean"] == pytest.approx(b["quantiles"]["mean"], rel=1e-12)


def test_id_does_not_depend_on_chunking(big: pd.DataFrame) -> None:
    assert Reference.from_data(big, chunk_rows=1_000).id == Reference.from_data(big).id


def test_from_list_of_rows() -> None:
    ref = Reference.from_data([[1.0, 10.0], [2.0, 20.0], [3.0, None]], ["a", "b"])
    assert (ref.feature_names, ref.rows) == (["a", "b"], 3)
    assert (ref.features["b"].kind, ref.features["b"].missing, sketched(ref, "b")) == ("numeric", 1, [10.0, 20.0])
    assert sketched(ref, "a") == [1.0, 2.0, 3.0]


def test_from_dict_of_columns() -> None:
    ref = Reference.from_data({"amount": [5.0, 1.0, 3.0], "country": ["FR", "DE", "FR"]}, metadata={"model": "m"})
    assert (ref.feature_names, ref.rows, ref.metadata) == (["amount", "country"], 3, {"model": "m"})
    assert sketched(ref, "amount") == [1.0, 3.0, 5.0]
    assert ref.features["country"].frequent.counts() == {"FR": 2, "DE": 1}


def test_progress_callback_gets_rows_so_far() -> None:
    seen: list[int] = []
    Reference.from_data(np.zeros((10, 2)), chunk_rows=4, progress=seen.append)
    assert seen == [4, 8, 10]


def test_max_features_keeps_the_first_ones() -> None:
    ref = Reference.from_data(np.arange(50.0).reshape(10, 5), max_features=2)
    assert ref.feature_names == ["f0", "f1"] and ref.rows == 10
    wide = Reference.from_data(pd.DataFrame(np.zeros((3, 150)), columns=[f"c{i}" for i in range(150)]))
    assert len(wide.features) == DEFAULT_MAX_FEATURES == 100 and wide.feature_names[-1] == "c99"


@pytest.mark.parametrize(
    "data",
    [np.empty((0, 3)), [], pd.DataFrame({"a": []}), {"a": []}, sp.csr_matrix(np.eye(2)), (x for x in [1.0])],
    ids=["numpy", "list", "pandas", "dict", "sparse", "generator"],
)
def test_empty_or_unreadable_input_is_a_value_error(data: Any) -> None:
    with pytest.raises(ValueError, match="no rows to build a reference from"):
        Reference.from_data(data)


def test_builder_without_rows_cannot_build() -> None:
    with pytest.raises(ValueError, match="no rows"):
        ReferenceBuilder().build()


# -- id ---------------------------------------------------------------------------------------------------
def test_id_is_the_documented_hash_of_the_features(frame: pd.DataFrame) -> None:
    doc = Reference.from_data(frame).to_dict()
    body = {"format": FORMAT, "version": VERSION, "features": doc["features"]}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    assert doc["id"] == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert len(doc["id"]) == 16 and int(doc["id"], 16) >= 0


def test_id_is_deterministic_and_ignores_created_and_metadata(big: pd.DataFrame) -> None:
    a = Reference.from_data(big)
    b = Reference.from_data(big.copy(), metadata={"model": "fraud", "git": "abc123"})
    c = Reference(a.features, created="2001-02-03T04:05:06Z", metadata={"x": 1}, source="training")
    assert a.id == b.id == c.id
    assert (c.created, c.metadata, b.metadata) == (
        "2001-02-03T04:05:06Z",
        {"x": 1},
        {"model": "fraud", "git": "abc123"},
    )
    changed = big.copy()
    changed.loc[0, "amount"] += 1.0
    assert Reference.from_data(changed).id != a.id


# -- file format ------------------------------------------------------------------------------------------
def test_save_load_round_trip(big: pd.DataFrame, tmp_path: Path) -> None:
    ref = Reference.from_data(big, metadata={"model": "fraud"})
    path = tmp_path / "ref.json"
    ref.save(path)
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"], doc["id"], doc["rows"]) == ("otel-ml-reference", 1, ref.id, 5_000)
    assert not (tmp_path / "ref.json.tmp").exists()
    loaded = Reference.load(path)
    assert (loaded.id, loaded.rows, loaded.created, loaded.metadata) == (ref.id, 5_000, ref.created, {"model": "fraud"})
    assert loaded.to_dict() == ref.to_dict()
    for name in ("amount", "age"):
        q, p = ref.features[name].quantiles, loaded.features[name].quantiles
        assert q.num_retained < 5_000  # the sketch really compacted
        assert np.array_equal(q.quantile(LEVELS), p.quantile(LEVELS))
        assert all(np.array_equal(u, v) for u, v in zip(q.weighted_items(), p.weighted_items(), strict=True))
        rc, lc = ref.rank_cuts(name), loaded.rank_cuts(name)
        assert rc is not None and lc is not None
        assert np.array_equal(rc.cuts, lc.cuts) and np.array_equal(rc.lo, lc.lo) and np.array_equal(rc.hi, lc.hi)
    assert loaded.features["country"].frequent.counts() == ref.features["country"].frequent.counts()


def test_round_trip_of_categories_json_cannot_hold(tmp_path: Path) -> None:
    ref = Reference.from_data({"day": [dt.date(2024, 1, 5), dt.date(2024, 1, 10)]})
    ref.save(tmp_path / "ref.json")
    assert Reference.load(tmp_path / "ref.json").id == ref.id  # raises "file altered?" today


def test_failed_save_leaves_no_temporary_file(frame: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "ref.json").mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        Reference.from_data(frame).save(tmp_path / "ref.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.json"]


def test_tampered_file_is_rejected(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    Reference.from_data(frame).save(path)
    doc = json.loads(path.read_text())
    doc["features"][0]["sketch"]["count"] += 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"does not match its content .*file altered\?"):
        Reference.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "otel-ml-drift"}, "not an otel-ml reference (format='otel-ml-drift')"),
        ({"format": None}, "not an otel-ml reference (format=None)"),
        ({"version": 2}, "unsupported reference version 2 (this otel-ml reads 1)"),
    ],
)
def test_wrong_format_or_version_is_a_clear_value_error(
    frame: pd.DataFrame, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    doc = {**Reference.from_data(frame).to_dict(), **change}
    with pytest.raises(ValueError) as info:
        Reference.from_dict(doc)
    assert str(info.value) == message
    (tmp_path / "ref.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError) as info:
        Reference.load(tmp_path / "ref.json")
    assert str(info.value) == message


@pytest.mark.parametrize("doc", [{"format": FORMAT, "version": VERSION}, []], ids=["no-features", "not-an-object"])
def test_malformed_document_is_a_value_error(doc: Any) -> None:
    with pytest.raises(ValueError):
        Reference.from_dict(doc)


# -- rank cuts --------------------------------------------------------------------------------------------
def test_rank_cuts_match_numpy_quantiles_within_rank_error() -> None:
    data = np.random.default_rng(3).lognormal(0.0, 1.0, 50_000)
    ref = Reference.from_data(data)
    cuts = ref.rank_cuts("f0")
    assert cuts is not None and cuts.cuts.shape == (19,) and cuts.n_buckets == 20
    assert np.all(np.diff(cuts.cuts) >= 0)
    levels = np.arange(1, 20) / 20
    eps = 0.01  # the sketch's rank-error guarantee at the default k
    ranks = np.searchsorted(np.sort(data), cuts.cuts, side="right") / data.size
    assert np.all(np.abs(ranks - levels) <= eps), np.abs(ranks - levels).max()
    assert np.all(np.quantile(data, levels - eps) <= cuts.cuts)
    assert np.all(cuts.cuts <= np.quantile(data, levels + eps))
    assert ref.rank_cuts("f0") is cuts  # computed once


def test_rank_cuts_only_for_non_empty_numeric_features() -> None:
    ref = Reference.from_data({"x": [1.0, 2.0], "nan": [np.nan, np.nan], "c": ["a", "b"]})
    assert ref.rank_cuts("c") is None and ref.rank_cuts("nan") is None and ref.rank_cuts("missing") is None
    cuts = ref.rank_cuts("x")
    assert cuts is not None and cuts.cuts.tolist() == [1.0] * 10 + [2.0] * 9
