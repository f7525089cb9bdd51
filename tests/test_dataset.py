"""Dataset views, encoded features, immutability, save/load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_data import EVENT_MAPPING, events_frame, write
from lmrec.collect import ColumnMapping
from lmrec.columns import Role
from lmrec.data import Dataset
from lmrec.errors import InputError
from lmrec.prepare import PrepareConfig, Prepared, prepare

# users 1, 2, 3; items 10, 20, 30 -> indices in sorted order
EVENTS = [
    (2, 20, "view", 300, 4.0),
    (1, 10, "view", 200, 3.0),
    (1, 10, "purchase", 100, 5.0),
    (1, 20, "view", 200, None),  # same time as the row above it for user 1: file order
    (2, 20, "view", 100, 2.0),
    (3, 30, "cart", None, 1.0),
    (3, 10, "view", 50, 1.0),
]


def _prepared(**kw: object) -> Prepared:
    return prepare(events_frame(EVENTS), mapping=EVENT_MAPPING,
                   config=PrepareConfig(dedupe="none"), now=1e9, **kw)


def test_matrix_values() -> None:
    ds = _prepared().dataset
    assert (ds.n_users, ds.n_items, ds.n_events) == (3, 3, 7)
    w = ds.matrix("weight").toarray()
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, [[1 + 4, 1, 0], [0, 2, 0], [1, 0, 3]])
    np.testing.assert_array_equal(ds.matrix("count").toarray(), [[2, 1, 0], [0, 2, 0],
                                                                 [1, 0, 1]])
    np.testing.assert_array_equal(ds.matrix("binary").toarray(), [[1, 1, 0], [0, 1, 0],
                                                                  [1, 0, 1]])
    # the largest value; a missing value counts as 1
    np.testing.assert_array_equal(ds.matrix("value").toarray(), [[5, 1, 0], [0, 4, 0],
                                                                 [1, 0, 1]])
    assert ds.matrix("count", format="csc").format == "csc"
    np.testing.assert_array_equal(ds.item_popularity(), [2, 2, 1])


def test_sequences_time_ordered_ties_in_file_order() -> None:
    ds = _prepared().dataset
    seq = ds.sequences()
    assert seq.indptr.tolist() == [0, 3, 5, 7]
    assert seq.lengths().tolist() == [3, 2, 2]
    # user 1: purchase@100 (item 10), view@200 (item 10), view@200 (item 20) in file order
    assert ds.items.id_of(seq.of(0)).tolist() == [10, 10, 20]
    assert seq.timestamps[:3].tolist() == [100, 200, 200]
    assert [seq.event_types[c] for c in seq.events[:3]] == ["purchase", "view", "view"]
    assert ds.items.id_of(seq.of(1)).tolist() == [20, 20]
    assert seq.timestamps[3:5].tolist() == [100, 300]
    # user 3: the event without a time comes first, timestamp -1
    assert ds.items.id_of(seq.of(2)).tolist() == [30, 10]
    assert seq.timestamps[5:].tolist() == [-1, 50]
    assert seq.event_types == ("cart", "purchase", "view")


def test_sequences_tie_order_follows_file_order_not_item_order(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "user,item,t\n1,30,5\n1,10,5\n1,20,5\n1,40,1\n")
    ds = prepare(p, mapping=ColumnMapping(time="t"), now=1e9).dataset
    assert ds.items.id_of(ds.sequences().of(0)).tolist() == [40, 30, 10, 20]


ITEMS_CSV = (
    "item,genre,tags,price,emb,title,year\n"
    '10,drama,a|b,1.0,"[1, 2]",The long title of a film,1999\n'
    '20,comedy,b,3.0,"[3, 4]",Another rather long film title,2001\n'
    "30,,,,,,2003\n"
    '40,drama,c|a|a,5.0,"[5, 6]",Catalogue only item with a title,2005\n'
)


def test_encoded_item_features(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", ITEMS_CSV)
    cfg = PrepareConfig(dedupe="none", item_roles={"year": Role.CATEGORICAL})
    p = prepare(events_frame(EVENTS), items=items, mapping=EVENT_MAPPING, config=cfg, now=1e9)
    ds = p.dataset
    assert ds.items.ids.to_list() == [10, 20, 30, 40]  # catalogue-only item 40 included
    assert {c: s.role for c, s in ds.item_schema.items()} == {
        "genre": Role.CATEGORICAL, "tags": Role.MULTI, "price": Role.NUMERIC,
        "emb": Role.VECTOR, "title": Role.TEXT, "year": Role.CATEGORICAL}
    f = ds.encoded_features("item")
    assert ds.item_schema["genre"].vocabulary == ("comedy", "drama")
    assert f["genre"].tolist() == [2, 1, 0, 2]  # 0 = unknown
    assert f["genre"].dtype == np.int32
    assert ds.item_schema["tags"].vocabulary == ("a", "b", "c")
    np.testing.assert_array_equal(f["tags"].toarray(), [[1, 1, 0], [0, 1, 0], [0, 0, 0],
                                                        [1, 0, 1]])
    # price: the missing value is filled with the median (3), then standardised
    x = np.array([1.0, 3.0, 3.0, 5.0])
    np.testing.assert_allclose(f["price"], (x - x.mean()) / x.std(ddof=1), rtol=1e-6)
    assert f["price"].dtype == np.float32
    np.testing.assert_array_equal(f["emb"], [[1, 2], [3, 4], [0, 0], [5, 6]])
    assert f["emb"].dtype == np.float32
    assert f["title"] == ["The long title of a film", "Another rather long film title", "",
                          "Catalogue only item with a title"]
    assert ds.item_schema["year"].vocabulary == ("1999", "2001", "2003", "2005")
    assert f["year"].tolist() == [1, 2, 3, 4]
    (rec,) = p.report.tables
    assert (rec.kind, rec.rows_in, rec.rows_out) == ("item", 4, 4)
    assert rec.filled == {"genre": 1, "tags": 1, "price": 1, "emb": 1, "title": 1}
    assert rec.roles["item"] == "id" and rec.roles["year"] == "categorical"
    assert ds.encoded_features("user") == {}


def test_item_table_ids_missing_duplicated_and_filtered(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item,genre\n10,a\n10,b\n20,c\n99,d\n")
    p = prepare(events_frame(EVENTS), items=items, mapping=EVENT_MAPPING,
                config=PrepareConfig(dedupe="none", core=1), now=1e9)
    (rec,) = p.report.tables
    assert rec.dropped == {"duplicate item id (first kept)": 1,
                           "id not in the prepared events (filtered out)": 1}
    assert p.dataset.items.ids.to_list() == [10, 20, 30]  # no catalogue-only ids with a core
    assert p.dataset.item_table["genre"].to_list() == ["a", "c", None]
    assert rec.filled == {"genre": 1}
    assert any("1 ids have events but no row" in n for n in rec.notes)


def test_unknown_role_override_column(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item,genre\n10,a\n")
    with pytest.raises(InputError, match="role given for column 'genr'"):
        prepare(events_frame(EVENTS), items=items, mapping=EVENT_MAPPING,
                config=PrepareConfig(item_roles={"genr": Role.TEXT}), now=1e9)


def test_immutable() -> None:
    ds = _prepared().dataset
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.events = ds.events  # type: ignore[misc]
    seq = ds.sequences()
    for a in (seq.indptr, seq.items, seq.events, seq.timestamps):
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 99
    assert ds.sequences().items.tolist() == seq.items.tolist()


def test_encoded_features_cache_cannot_be_altered(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", ITEMS_CSV)
    ds = prepare(events_frame(EVENTS), items=items, mapping=EVENT_MAPPING, now=1e9).dataset
    f = ds.encoded_features("item")
    with pytest.raises(ValueError, match="read-only"):
        f["price"][0] = 0.0
    f["title"].append("x")
    del f["genre"]
    g = ds.encoded_features("item")
    assert len(g["title"]) == 4 and "genre" in g


def _assert_same(a: Dataset, b: Dataset) -> None:
    assert a.users == b.users and a.items == b.items
    assert a.users.dtype == b.users.dtype and a.items.dtype == b.items.dtype
    assert a.events.equals(b.events)
    assert a.user_table.equals(b.user_table) and a.item_table.equals(b.item_table)
    assert a.user_schema == b.user_schema and a.item_schema == b.item_schema
    assert a.behaviour_weights == b.behaviour_weights
    assert a.name == b.name and a.metadata == b.metadata


def test_save_load_round_trip(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", ITEMS_CSV)
    ds = prepare(events_frame(EVENTS), items=items, mapping=EVENT_MAPPING, name="toy",
                 config=PrepareConfig(dedupe="none"), now=1e9).dataset
    back = Dataset.load(ds.save(tmp_path / "saved"))
    _assert_same(ds, back)
    for side in ("item", "user"):
        fa, fb = ds.encoded_features(side), back.encoded_features(side)  # type: ignore[arg-type]
        assert fa.keys() == fb.keys()
    np.testing.assert_array_equal(ds.matrix().toarray(), back.matrix().toarray())


def test_string_ids_with_leading_zeros_survive_save(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", "user,item\n007,1\n7,2\n")
    ds = prepare(p).dataset
    assert ds.users.ids.to_list() == ["007", "7"]
    assert ds.items.dtype == pl.Int64
    back = Dataset.load(ds.save(tmp_path / "s"))
    assert back.users.ids.to_list() == ["007", "7"] and back.items.ids.to_list() == [1, 2]
    assert back.users.index(["007"]).tolist() == [0]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no metadata\.json"):
        Dataset.load(tmp_path)
    write(tmp_path, "metadata.json", "{bad")
    with pytest.raises(InputError, match=r"metadata\.json is not valid JSON"):
        Dataset.load(tmp_path)
    write(tmp_path, "metadata.json", '{"format": "other"}')
    with pytest.raises(InputError, match="not supported"):
        Dataset.load(tmp_path)


def test_with_events_keeps_vocabularies() -> None:
    ds = _prepared().dataset
    sub = ds.with_events(ds.events.filter(pl.col("user_idx") == 0), name="train")
    assert sub.users is ds.users and sub.items is ds.items
    assert (sub.n_users, sub.n_items, sub.n_events, sub.name) == (3, 3, 3, "train")
    assert sub.matrix("count").shape == (3, 3)
    assert sub.sequences().lengths().tolist() == [3, 0, 0]
    assert ds.n_events == 7 and ds.matrix("count").sum() == 7  # the original is unchanged


def test_forgetting_rows_of_a_kept_sequences_leaves_the_dataset_alone() -> None:
    from lmrec.testing import planted_dataset

    ds = planted_dataset()
    kept = ds.sequences()
    before = ds.sequences().of(1).copy()
    kept.forget_rows(np.array([1]))
    assert kept.of(1).size == 0 and kept.lengths().sum() == ds.n_events - before.size
    np.testing.assert_array_equal(ds.sequences().of(1), before)
