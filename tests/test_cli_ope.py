"""`lmrec ope` and the replay behind it (`lmrec.serve.replay`), end to end: a bundle, a store
holding a log written under a known stochastic policy with clicks from a known click model,
and an estimate whose interval must hold the true value of the bundle's own top-k.

The world: the planted two-group data (users a*/b*, items A*/B*), an EASE bundle (it
recommends unseen items of the user's own group), a logging policy that is Plackett-Luce over
every unseen item (exact marginals by enumeration), and a position-based click model in which
users like their own group's items.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers_cli import one_error_line, run
from helpers_ope import pl_marginals
from helpers_serve import postgres_base_url, postgres_schema
from lmrec.models import create_model
from lmrec.serve.bundle import write_bundle
from lmrec.serve.engine import Query
from lmrec.serve.replay import replay
from lmrec.serve.service import Service, build_engine
from lmrec.serve.store import EventIn, ImpressionIn, Slot, open_store
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions

K = 3
THETA = np.array([1.0, 0.6, 0.35])  # examination per position


def attraction(user: str, item: str) -> float:
    """P(click | examined): users like their own group's items; items differ a little."""
    own = user[0].upper() == item[0]
    return (0.5 if own else 0.08) * (0.7 + 0.05 * int(item[1:]))


def logging_weight(user: str, item: str) -> float:
    """The logging policy leans to the user's group, less than the bundle does."""
    return float(np.exp(0.8 if user[0].upper() == item[0] else 0.0) * (1 + 0.1 * int(item[1:])))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_world(tmp_path_factory.mktemp("ope"), seed=7)


def make_world(folder: Path, seed: int) -> dict:
    """A bundle, a store with one logged impression per user (plus visitors and an
    interleaved one) and the true value of the bundle's top-k on those users."""
    ds = planted_dataset(users_a=500, users_b=700)
    bundle = write_bundle(create_model("ease", {}).fit(ds, TrainingOptions(rng=0)), ds,
                          folder / "bundle")
    url = f"sqlite:///{folder / 'events.db'}"
    store = open_store(url)
    engine = build_engine(bundle)
    service = Service(engine, store)
    rng = np.random.default_rng(seed)
    items = [engine.external_item(i) for i in range(engine.n_items)]
    seen = {u: set(ds.items.ids.gather(row).to_list()) for u, row in _seen(ds).items()}
    marginals: dict[tuple, np.ndarray] = {}
    imps, clicks, truth = [], [], []
    for n, user in enumerate(sorted(seen)):
        # what the server would have shown now, and its true expected clicks
        top = [s.item for s in service.recommend_user(user, Query(k=K)).items]
        truth.append(sum(THETA[j] * attraction(user, it) for j, it in enumerate(top)))
        pool = [it for it in items if it not in seen[user]]
        key = (user[0], tuple(pool))
        if key not in marginals:
            marginals[key] = pl_marginals(np.array([logging_weight(user, it) for it in pool]),
                                          K)
        w = np.array([logging_weight(user, it) for it in pool])
        drawn = np.argsort(-(np.log(w) + rng.gumbel(size=w.size)))[:K]  # Gumbel top-k = PL
        rid = f"r{n:05d}"
        ts = 1000.0 + n
        imps.append(ImpressionIn(rid, user, "logger", None, "plackett-luce:T=1", tuple(
            Slot(pool[i], float(marginals[key][i, j])) for j, i in enumerate(drawn)), ts))
        for j, i in enumerate(drawn):
            if rng.random() < THETA[j] * attraction(user, pool[i]):
                clicks.append(EventIn(user, pool[i], "click", ts + 0.5, request_id=rid))
    # left out of the estimate: visitors (no stored context) and an interleaved slate
    imps += [ImpressionIn(f"v{n}", None, "logger", None, "top-k", (Slot("A0", 1.0),), 5000.0)
             for n in range(2)]
    imps.append(ImpressionIn("t0", "a0", "logger", None, "team-draft:A,B",
                             (Slot("A1", None, team="A"), Slot("B1", None, team="B"),
                              Slot("A2", None, team="A")), 5001.0))
    store.add_impressions(imps)
    store.add_events(clicks)
    store.close()
    return {"bundle": bundle, "url": url, "truth": float(np.mean(truth)), "users": len(seen),
            "folder": folder}


def _seen(ds: object) -> dict[str, np.ndarray]:
    """Each user's training items (internal indices)."""
    seq = ds.sequences()  # type: ignore[attr-defined]
    users = ds.users  # type: ignore[attr-defined]
    return {users.to_python(u): seq.items[seq.indptr[u]:seq.indptr[u + 1]]
            for u in range(len(users))}


def test_ope_json_covers_the_true_value(world: dict, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    code, out, err = run(["ope", "--store", world["url"], "--bundle", str(world["bundle"]),
                          "--k", str(K), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    truth = world["truth"]
    est = {e["estimator"]: e for e in result["estimates"]}
    assert set(est) == {"ips", "snips", "dr"}
    for e in est.values():
        lo, hi = e["ci"]
        assert lo <= truth <= hi, (e, truth)
        assert e["n"] == world["users"] and e["ess"] > 20
    assert est["dr"]["ci"][1] - est["dr"]["ci"][0] < est["ips"]["ci"][1] - est["ips"]["ci"][0]
    # the log's own clicks measure the logging policy, well below the bundle's value
    assert result["logged"]["ci"][1] < truth
    assert result["impressions"] == world["users"] + 3
    assert result["replayed"] == world["users"] + 1
    assert result["visitors_skipped"] == 2 and result["unusable"] == 1
    assert result["policies"] == {"plackett-luce:T=1": world["users"], "team-draft:A,B": 1}
    assert result["offline"] is None and result["k"] == K


def test_ope_table(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["ope", "--store", world["url"], "--bundle", str(world["bundle"]),
                          "--k", str(K)], capsys)
    assert code == 0, err
    for word in ("ips", "snips", "dr", "logged (observed)", "95% CI"):
        assert word in out
    assert "2 from visitors skipped" in err and "1 without known propensities" in err
    assert "records no offline metric" in err


def test_offline_metric_comes_from_auto_json(tmp_path: Path) -> None:
    from lmrec.cli.ope import offline_metric

    assert offline_metric(tmp_path) is None
    (tmp_path / "auto.json").write_text(json.dumps(
        {"metric": "ndcg@10", "winner": {"family": "ease", "valid ndcg@10": 0.25}}))
    assert offline_metric(tmp_path) == {"metric": "ndcg@10", "value": 0.25,
                                        "source": "auto.json: the search's validation split"}
    (tmp_path / "auto.json").write_text("{not json")
    assert offline_metric(tmp_path) is None


def test_since_keeps_later_impressions(world: dict, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ope", "--store", world["url"], "--bundle", str(world["bundle"]), "--k", str(K),
            "--json", "--since"]
    code, out, err = run([*args, "2100"], capsys)
    assert code == 0, err
    result = json.loads(out)
    # the users' impressions at 2100.. (the last 100), the visitors' and the interleaved one
    assert result["impressions"] == 100 + 3 and result["replayed"] == 101
    assert result["since"] == 2100.0
    code, out, err = run([*args, "1970-01-01T00:35:00"], capsys)
    assert code == 0, err
    assert json.loads(out)["since"] == 2100.0
    code, out, err = run([*args, "1970-01-01T01:35:00+01:00"], capsys)
    assert code == 0, err
    assert json.loads(out)["since"] == 2100.0


def test_bad_input_is_one_line(world: dict, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    bundle, url = str(world["bundle"]), world["url"]
    cases = [
        (["--store", url, "--bundle", str(tmp_path / "nope")], "--bundle"),
        (["--store", url, "--bundle", str(tmp_path)], "--bundle"),
        (["--store", f"sqlite:///{tmp_path / 'none.db'}", "--bundle", bundle], "--store"),
        (["--store", "sqlite:///:memory:", "--bundle", bundle], "no impressions"),
        (["--store", "mysql://x/y", "--bundle", bundle], "--store"),
        (["--store", url, "--bundle", bundle, "--k", "10"], "--k 10"),
        (["--store", url, "--bundle", bundle, "--k", "0"], "--k"),
        (["--store", url, "--bundle", bundle, "--since", "yesterday"], "--since"),
        (["--store", url, "--bundle", bundle, "--since", "9e18"], "no impressions"),
    ]
    for args, needle in cases:
        code, out, err = run(["ope", *args], capsys)
        one_error_line(code, err, needle, out)
    assert not (tmp_path / "none.db").exists()  # reading never creates a store


def test_unreachable_postgres_is_one_line(world: dict, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    code, out, err = run(["ope", "--store", "postgresql://nobody@127.0.0.1:1/none?"
                          "connect_timeout=2", "--bundle", str(world["bundle"])], capsys)
    one_error_line(code, err, "--store", out)


# --- replay --------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def small(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A bundle of the planted data and an empty store of each kind."""
    ds = planted_dataset()
    bundle = write_bundle(create_model("ease", {}).fit(ds, TrainingOptions(rng=0)), ds,
                          tmp_path / "bundle")
    if request.param == "sqlite":
        yield bundle, f"sqlite:///{tmp_path / 'events.db'}"
        return
    with postgres_schema(postgres_base_url()) as url:
        yield bundle, url


def test_replay_rebuilds_each_context(small: tuple[Path, str]) -> None:
    bundle, url = small
    engine = build_engine(bundle)
    first = [s.item for s in Service(engine, open_store("sqlite:///:memory:"))
             .recommend_user("a0", Query(k=K)).items]
    liked = first[0]
    slate = (Slot("B1", 0.5), Slot(liked, 0.25), Slot("ZZ", 0.2), Slot("B2", 0.1))
    with open_store(url) as store:
        store.add_impressions([
            ImpressionIn("r1", "a0", "v", None, "plackett-luce:T=1", slate, 10.0),
            ImpressionIn("r2", "a0", "v", None, "plackett-luce:T=1", slate, 10.5),
            ImpressionIn("r3", "a0", "v", None, "plackett-luce:T=1", slate[:2], 30.0),
            ImpressionIn("r4", None, "v", None, "top-k", slate, 31.0),
            ImpressionIn("r5", "a0", "v", None, "team-draft:A,B",
                         (Slot("ZZ", None, team="A"),), 32.0)])
        store.add_events([
            EventIn("a0", liked, "click", 11.0, request_id="r1"),
            EventIn("a0", liked, "purchase", 12.0, request_id="r1"),  # the same slot: once
            EventIn("a0", "A5", "click", 13.0, request_id="r1"),  # not in the slate
            EventIn("a0", "B1", "click", 31.0, request_id="r3"),
            EventIn("a0", "A9", "view", 20.0)])
        log = replay(engine, store, K)
    assert log.request_ids == ("r1", "r2", "r3", "r5")
    assert log.impressions == 5 and log.visitors == 1 and log.widest == 4
    assert log.contexts == 3  # r1 and r2 share one: no event of a0 between them
    assert log.clicks.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(log.propensities[0], [0.5, 0.25, 0.2])  # trimmed to k
    assert np.isnan(log.propensities[2, 2]) and log.items[2, 2] == -1  # a slate of 2
    assert np.isnan(log.propensities[3, 0])
    # "ZZ" is not in the bundle: an index of its own past the catalogue, the same each time
    assert log.items[0, 2] >= engine.n_items and log.items[3, 0] == log.items[0, 2]
    assert engine.item_indices([liked])[0] == log.items[0, 1]
    # r1's target is the service's answer then; by r3 the clicked item is in the history
    np.testing.assert_array_equal(log.target[0], engine.item_indices(first))
    assert log.target[0].tolist() == log.target[1].tolist()
    assert engine.item_indices([liked])[0] not in log.target[2]
    later = Service(engine, _events_before(url, 30.0)).recommend_user("a0", Query(k=K))
    np.testing.assert_array_equal(log.target[2],
                                  engine.item_indices([s.item for s in later.items]))


def _events_before(url: str, ts: float) -> object:
    """An in-memory store with the events of `url` earlier than `ts`."""
    mem = open_store("sqlite:///:memory:")
    with open_store(url) as store:
        evs = [e for e in store.history("a0") if e.timestamp < ts]
    mem.add_events([EventIn(e.user, e.item, e.type, e.timestamp) for e in evs])
    return mem


def test_offline_ndcg_from_data_is_what_evaluate_reports(
        world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    planted_dataset(users_a=500, users_b=700).save(data)
    code, out, err = run(["ope", "--store", world["url"], "--bundle", str(world["bundle"]),
                          "--k", str(K), "--data", str(data), "--json"], capsys)
    assert code == 0, err
    offline = json.loads(out)["offline"]
    code, out, err = run(["evaluate", "--data", str(data), "--model", "ease", "--k", str(K),
                          "--json"], capsys)
    assert code == 0, err
    assert offline["metric"] == f"ndcg@{K}"
    assert offline["value"] == pytest.approx(json.loads(out)[f"ndcg@{K}"], abs=1e-9)
