"""The recommendation logic behind the HTTP API (lmrec.serve.service and the engine), no HTTP.

The planted dataset has two user groups (a*, b*) with disjoint item groups (A* genres
alpha, B* genres beta); group B's items are the most popular. So a history of A items must
lead to A items, and anything else (popularity) shows as B items.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from helpers_serve import planted_bundle
from lmrec.errors import ConfigError
from lmrec.serve.bundle import load_bundle
from lmrec.serve.engine import Engine, Query
from lmrec.serve.rerank import QueryError
from lmrec.serve.rules import Rules
from lmrec.serve.security import KeyRing
from lmrec.serve.service import NotFoundError, Service
from lmrec.serve.store import EventIn, open_store
from lmrec.train.options import TrainingOptions


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("serve") / "ease", "ease", {"l2": 10.0})


@pytest.fixture
def service(bundle: Path, tmp_path: Path) -> Iterator[Service]:
    svc = Service.open(bundle, open_store(f"sqlite:///{tmp_path / 'events.db'}"))
    yield svc
    svc.close()


def _items(svc: Service, user: str, **query: object) -> list[str]:
    return [s.item for s in svc.recommend_user(user, Query(**query)).items]  # type: ignore[arg-type]


def _views(user: str, items: list[str]) -> list[EventIn]:
    return [EventIn(user, it, "view", 1e9 + n) for n, it in enumerate(items)]


def test_a_new_user_is_personalised_after_their_first_events(service: Service) -> None:
    before = service.recommend_user("newcomer", Query(k=5))
    assert before.note and all(i.item.startswith("B") for i in before.items)  # popularity
    service.ingest(_views("newcomer", ["A1", "A2", "A3"]))
    after = service.recommend_user("newcomer", Query(k=5))
    got = [i.item for i in after.items]
    assert after.note is None
    assert all(i.startswith("A") for i in got) and not {"A1", "A2", "A3"} & set(got)


def test_live_events_are_added_to_the_training_history(service: Service) -> None:
    def first_a(items: list[str]) -> int:
        return next(r for r, i in enumerate(items) if i.startswith("A"))

    before = _items(service, "b0", k=24)
    assert first_a(before) == 6  # b0 saw 6 B items: the other 6 come first
    service.ingest(_views("b0", ["A1", "A2", "A3"]))
    after = _items(service, "b0", k=24)
    assert first_a(after) < 3
    assert not {"A1", "A2", "A3"} & set(after)  # seen, live or not, is excluded
    assert len(after) == 24 - 6 - 3


def test_unknown_items_in_live_events_are_ignored(service: Service) -> None:
    service.ingest(_views("ghost-user", ["no-such-item"]))
    unknown = service.recommend_user("nobody", Query(k=5))
    ghost = service.recommend_user("ghost-user", Query(k=5))
    assert [i.item for i in ghost.items] == [i.item for i in unknown.items]


def test_filters_keep_only_matching_items(service: Service) -> None:
    assert all(i.startswith("B") for i in _items(service, "a0", k=8, filters=("genres:beta",)))
    both = _items(service, "a0", k=24, filters=("genres:alpha|beta",), exclude_seen=False)
    assert len(both) == 24
    with pytest.raises(QueryError, match="unknown column 'colour'"):
        _items(service, "a0", filters=("colour:red",))
    with pytest.raises(QueryError, match="unknown column 'title'"):  # text is not filterable
        _items(service, "a0", filters=("title:alpha story 1",))


def test_exclude_seen_can_be_turned_off(service: Service, bundle: Path) -> None:
    seen = set(load_bundle(bundle).histories.of(0).tolist())  # user a0 is row 0
    eng = service.engine
    with_seen = _items(service, "a0", k=12, exclude_seen=False)
    assert {eng.external_item(i) for i in seen} <= set(with_seen)
    assert not {eng.external_item(i) for i in seen} & set(_items(service, "a0", k=6))


def test_rules_exclude_and_boost(bundle: Path) -> None:
    b = load_bundle(bundle)
    plain = Engine(b)
    hist, _ = plain.history(0, [])
    top = [s.item for s in plain.recommend(0, hist, 0, Query(k=6))[0]]
    assert all(i.startswith("A") for i in top)
    ruled = Engine(b, Rules(exclude_items=[top[0]], exclude=["genres:nothing"],
                            boost=[{"filter": "genres:beta", "weight": 100.0}]))
    got = [s.item for s in ruled.recommend(0, hist, 0, Query(k=20))[0]]
    assert all(i.startswith("B") for i in got[:12]) and top[0] not in got
    similar = [s.item for s in ruled.similar(int(b.item_ids.index(["A5"])[0]), 23)]
    assert top[0] not in similar and "A5" not in similar
    with pytest.raises(ConfigError, match="rules: filter 'shape:round'"):
        Engine(b, Rules(exclude=["shape:round"]))


def test_diversity_mixes_in_the_other_genre(service: Service) -> None:
    plain = _items(service, "a0", k=4)
    assert all(i.startswith("A") for i in plain)
    diverse = _items(service, "a0", k=4, diversity=1.0)
    assert diverse[0] == plain[0]  # the best item stays first
    assert diverse[1].startswith("B")  # then the least similar to it
    half = _items(service, "a0", k=4, diversity=0.3)
    assert half == plain  # relevance still dominates a mild setting on clear-cut data


def test_diversity_without_attributes_uses_co_occurrence(tmp_path: Path) -> None:
    import polars as pl

    from lmrec.models import create_model
    from lmrec.prepare import prepare
    from lmrec.serve.bundle import write_bundle
    from lmrec.testing import planted_dataset

    planted = planted_dataset()
    ev = planted.events
    frame = pl.DataFrame({"user": planted.users.id_of(ev["user_idx"].to_numpy()),
                          "item": planted.items.id_of(ev["item_idx"].to_numpy())})
    ds = prepare(frame, name="no-attributes").dataset
    eng = Engine(load_bundle(write_bundle(create_model("ease").fit(ds, TrainingOptions(rng=0)), ds,
                                          tmp_path / "b")))
    u = int(ds.users.index(["a0"])[0])
    hist, _ = eng.history(u, [])
    plain = [s.item for s in eng.recommend(u, hist, 0, Query(k=3))[0]]
    diverse = [s.item for s in eng.recommend(u, hist, 0, Query(k=3, diversity=1.0))[0]]
    assert all(i.startswith("A") for i in plain)
    # A and B items never share a user: co-occurrence cosine 0, so B comes second
    assert diverse[0] == plain[0] and diverse[1].startswith("B")


def test_explanations_name_the_history_item_behind_each_recommendation(
        service: Service, bundle: Path) -> None:
    b = load_bundle(bundle)
    res = service.recommend_user("a0", Query(k=5, explain=True))
    hist = b.histories.of(0)
    for s in res.items:
        assert s.because is not None and s.reason and "alpha story" in s.reason
        h = int(b.item_ids.index([s.because])[0])
        r = int(b.item_ids.index([s.item])[0])
        assert h in hist
        # EASE scores are sums of B[h, r] over the history: the named item contributes most
        assert b.model.B_[h, r] == pytest.approx(b.model.B_[hist, r].max())


def test_a_live_type_unseen_in_training_counts_as_a_neutral_event(tmp_path: Path) -> None:
    from lmrec.collect import ColumnMapping
    from lmrec.models import create_model
    from lmrec.models.sequential import PAD, SeqData
    from lmrec.prepare import PrepareConfig, prepare
    from lmrec.serve.bundle import write_bundle
    from lmrec.testing import planted_dataset

    planted = planted_dataset()
    ev = planted.events
    frame = pl.DataFrame({"user": planted.users.id_of(ev["user_idx"].to_numpy()),
                          "item": planted.items.id_of(ev["item_idx"].to_numpy()),
                          "event": "purchase"})  # purchases only: weight 4 by default
    ds = prepare(frame, items=planted.item_table, mapping=ColumnMapping(event="event"),
                 config=PrepareConfig(item_roles={"genres": "multi", "title": "text"})).dataset
    assert ds.behaviour_weights == {"purchase": 4.0}
    model = create_model("ease", {"l2": 10.0, "weighting": "weight"}).fit(
        ds, TrainingOptions(rng=0))
    svc = Service.open(write_bundle(model, ds, tmp_path / "b"),
                       open_store(f"sqlite:///{tmp_path / 'e.db'}"))
    try:
        before = _items(svc, "b0", k=6)
        svc.ingest(_views("b0", ["A1"]))
        res = svc.recommend_user("b0", Query(k=6, explain=True))
        assert [s.item for s in res.items] != before
        assert any(s.item.startswith("A") for s in res.items)
        # EASE scores the weighted history row: 4 per training purchase, 1 for the view
        b = svc.engine.bundle
        u = int(b.users.index(["b0"])[0])
        bought = b.histories.of(u)
        a1 = int(b.item_ids.index(["A1"])[0])
        for s in res.items:
            r = int(b.item_ids.index([s.item])[0])
            expect = 4 * model.B_[bought, r].sum() + model.B_[a1, r]
            assert s.score == pytest.approx(expect, rel=1e-4, abs=1e-5)
        by_view = [s for s in res.items if s.because == "A1"]
        by_purchase = [s for s in res.items if s.because not in (None, "A1")]
        assert by_view and by_purchase
        assert all(s.reason == f"because of {_title(b, 'A1')} in your history" for s in by_view)
        assert all(s.reason and s.reason.startswith("because you bought") for s in by_purchase)
        # sequential models read the same names: the view is their padding/unknown token
        hist, n_live = svc.engine.history(u, svc.store.history("b0"))
        assert n_live == 1
        tokens = SeqData.from_sequences(hist, b.histories.event_types).events
        assert tokens[-1] == PAD and (tokens[:-1] == 1).all()
    finally:
        svc.close()


def _title(bundle: Any, item: str) -> str:
    return str(bundle.items.filter(pl.col("item") == item)["title"][0])


def test_similar_items_and_visitors(service: Service) -> None:
    _, sims, _ = service.similar("A1", 5)
    assert [s.item for s in sims if not s.item.startswith("A")] == []
    assert "A1" not in [s.item for s in sims]
    with pytest.raises(NotFoundError):
        service.similar("no-such-item", 5)
    res = service.recommend_visitor(["A1", "A2", "A3", "unknown"], Query(k=5))
    got = [s.item for s in res.items]
    assert res.user is None and all(i.startswith("A") for i in got)
    assert not {"A1", "A2", "A3"} & set(got)
    empty = service.recommend_visitor([], Query(k=5))
    assert [s.item for s in empty.items] == _items(service, "nobody", k=5)


def test_forget_leaves_the_user_unknown(service: Service) -> None:
    service.ingest(_views("leaver", ["A1", "A2"]))
    service.store.put_state("leaver", "cache", b"x")
    done = service.forget("leaver")
    assert (done.user, done.events_deleted, done.in_training_data,
            done.redacted_from_model) == ("leaver", 2, False, False)
    assert done.model_version == service.engine.model_version  # the bundle is untouched
    assert service.store.history("leaver") == [] and service.store.get_state("leaver",
                                                                             "cache") is None
    assert _items(service, "leaver", k=6) == _items(service, "never-seen", k=6)
    # training users are also redacted from the bundle: tests/test_serve_privacy.py


def test_integer_ids_match_as_int_or_canonical_text(tmp_path: Path) -> None:
    import polars as pl

    from lmrec.models import create_model
    from lmrec.prepare import prepare
    from lmrec.serve.bundle import write_bundle

    events = pl.DataFrame({"user": [196, 196, 7, 7, 7], "item": [10, 11, 10, 11, 12]})
    ds = prepare(events, name="ints").dataset
    folder = write_bundle(create_model("ease").fit(ds, TrainingOptions(rng=0)), ds, tmp_path / "b")
    eng = Engine(load_bundle(folder))
    assert eng.user_key(196) == eng.user_key("196") == ("196", 196, 1)
    # prepare would have kept "0196" apart from 196 (as a string): another, unknown user
    assert eng.user_key("0196") == ("0196", "0196", -1)
    assert eng.user_key("x7") == ("x7", "x7", -1)
    assert eng.item_indices([12, "12", " 12", "+12", "12.0", "nope"]).tolist() == [
        2, 2, -1, -1, -1, -1]


def test_reload_swaps_the_engine(service: Service, tmp_path: Path) -> None:
    old = service.engine
    other = planted_bundle(tmp_path / "other", "itemknn")
    new_version, previous = service.reload(other)
    assert previous == old.model_version and new_version == service.engine.model_version
    assert service.engine.model.name == "itemknn" and old.model.name == "ease"
    hist, _ = old.history(0, [])
    assert old.recommend(0, hist, 0, Query(k=3))[0]  # the old engine still answers


# --- API keys ------------------------------------------------------------------------------
def test_key_ring_roles(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# keys\nfile-writer-0123456789\nread:file-reader-0123456789\n")
    ring = KeyRing.from_env({"LMREC_API_KEYS": "env-writer-0123456789, ",
                             "LMREC_READ_KEYS": "env-reader-0123456789"}, keys_file)
    assert ring.allows("env-writer-0123456789", "write")
    assert ring.allows("env-writer-0123456789", "admin")
    assert ring.allows("file-writer-0123456789", "write")
    assert ring.allows("env-writer-0123456789", "read")  # writers may read
    assert ring.allows("file-reader-0123456789", "read")
    assert not ring.allows("file-reader-0123456789", "write")
    assert not ring.allows("env-writer-012345678", "write") and not ring.allows(None, "read")
    assert ring.knows("file-reader-0123456789") and not ring.knows("nope-0123456789abcdef")
    assert ring.reads_need_key
    # raw keys are not kept, only their digests
    assert "env-writer-0123456789" not in repr(ring)

    admin_split = KeyRing.from_env({"LMREC_API_KEYS": "writer-0123456789abc",
                                    "LMREC_ADMIN_KEYS": "admin-0123456789abcd"})
    assert not admin_split.allows("writer-0123456789abc", "admin")
    assert admin_split.allows("admin-0123456789abcd", "admin")
    assert not KeyRing.from_env({}).has("write") and not KeyRing.from_env({}).reads_need_key
    with pytest.raises(ConfigError, match="shorter"):
        KeyRing.from_env({"LMREC_API_KEYS": "short"})
    keys_file.write_text("writer:typo-role-0123456789\n")
    with pytest.raises(ConfigError, match="unknown key role 'writer'"):
        KeyRing.from_env({}, keys_file)


def test_two_tower_scores_live_histories(tmp_path: Path) -> None:
    params = {"epochs": 40, "dim": 16, "id_dim": 16, "layers": "32", "batch_size": 64,
              "dropout": 0.0}
    folder = planted_bundle(tmp_path / "tt", "two-tower", params)
    svc = Service.open(folder, open_store(f"sqlite:///{tmp_path / 'e.db'}"))
    try:
        assert svc.engine.embedding
        before = _items(svc, "fresh", k=6)
        svc.ingest(_views("fresh", ["A1", "A2", "A3"]))
        after = _items(svc, "fresh", k=6)
        n_a = [sum(i.startswith("A") for i in r) for r in (before, after)]
        assert n_a[1] > n_a[0] and n_a[1] >= 5, (before, after)
        res = svc.recommend_user("fresh", Query(k=4, explain=True, diversity=0.5,
                                                filters=("genres:alpha",)))
        assert all(s.item.startswith("A") and s.because in {"A1", "A2", "A3"}
                   for s in res.items)
        assert np.isfinite([s.score for s in res.items]).all()
    finally:
        svc.close()


def test_real_time_on_movielens(shared_datasets: Path, tmp_path: Path) -> None:
    from lmrec.datasets.movielens import load_movielens_100k
    from lmrec.models import create_model
    from lmrec.serve.bundle import write_bundle

    ds = load_movielens_100k(shared_datasets / "ml-100k").dataset
    folder = write_bundle(create_model("ease").fit(ds, TrainingOptions(rng=0)), ds,
                          tmp_path / "ml100k")
    svc = Service.open(folder, open_store(f"sqlite:///{tmp_path / 'e.db'}"))
    try:
        items = load_bundle(folder).items.with_columns(pop=ds.item_popularity())
        genres = dict(zip(items["item"].to_list(), items["genres"].to_list(), strict=True))
        # the three most watched animated films
        viewed = (items.filter(pl.col("genres").list.contains("Animation"))
                  .sort("pop", descending=True)["item"].head(3).to_list())

        def n_animated(res: Any) -> int:
            return sum("Animation" in genres[s.item] for s in res.items)

        before = svc.recommend_user("ml-visitor", Query(k=10))
        svc.ingest([EventIn("ml-visitor", str(i), "view") for i in viewed])
        after = svc.recommend_user("ml-visitor", Query(k=10, explain=True))
        assert n_animated(before) <= 1 and n_animated(after) >= 4
        assert not set(viewed) & {s.item for s in after.items}
        assert {s.because for s in after.items} <= set(viewed)
        only = svc.recommend_user("ml-visitor", Query(k=10, filters=("year:1996",)))
        years = dict(zip(items["item"].to_list(), items["year"].to_list(), strict=True))
        assert len(only.items) == 10 and {years[s.item] for s in only.items} == {1996.0}
    finally:
        svc.close()
