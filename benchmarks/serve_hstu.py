"""The `hstu` scenario of `serve_load.py`: fresh histories scored by `hstu` over HTTP.

Data: an ML-1M-shaped synthetic log (`ml1m_like`): 6,040 training users, 3,416 items, history
lengths log-normal with a floor of 20 (ML-1M's 20-rating minimum) and a mean of about 165,
items drawn from a Zipf(0.9) popularity, timestamps increasing with exponential gaps. Only
the shapes matter here (the work of one request is the same whatever the weights): the model
is trained for `--hstu-epochs` (default 1) with its defaults otherwise (hidden 64, 2 layers,
2 heads, full cross-entropy), one bundle per `max_len`.

Requests carry a history the server has never seen, two ways (`--hstu-mode`):
- `visitor` (default): POST /v1/recommendations {"history": [...], "k": 10} with the item
  sequence of a held-out user (500 users of the same generator, not in training): the
  history arrives with the request and is scored by the model at request time;
- `live`: each requested training user first gets one new event through POST /v1/events
  (before the timed run), so GET /v1/users/{id}/recommendations reads the live event from
  the store and scores training history + live event (not the trained state).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

N_USERS, N_ITEMS, MEAN_LEN = 6_040, 3_416, 165  # ML-1M as preprocessed by SASRec
HELD_OUT = 500  # visitors: users of the same generator, not in the training data


def ml1m_like(n_users: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, timestamp) arrays of an ML-1M-shaped log, users 0..n_users-1 in order."""
    rng = np.random.default_rng(seed)
    # log-normal(mu, 1) has mean exp(mu + .5); with the floor of 20 and ML-1M's longest
    # history as the cap, mu = log(165) - .49 gives mean 165.4 and median 98 (ML-1M: 165.6, 96)
    lengths = np.clip(rng.lognormal(np.log(MEAN_LEN) - 0.49, 1.0, n_users), 20, 2_314)
    lengths = lengths.astype(np.int64)
    pop = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.9
    n = int(lengths.sum())
    items = rng.choice(N_ITEMS, n, p=pop / pop.sum())
    items[: N_ITEMS] = rng.permutation(N_ITEMS)  # every item in the vocabulary
    users = np.repeat(np.arange(n_users), lengths)
    ts = 978_300_000 + np.cumsum(rng.exponential(600.0, n)).astype(np.int64)
    return users, items, ts


def hstu_bundle(work: Path, max_len: int, epochs: int) -> Path:
    """An hstu bundle trained on the ML-1M-shaped log (built once per max_len, epochs)."""
    out = work / f"hstu-ml1m-like-L{max_len}-e{epochs}"
    if (out / "bundle.json").exists():
        return out
    import polars as pl

    from lmrec.models import create_model
    from lmrec.prepare import prepare
    from lmrec.serve.bundle import write_bundle
    from lmrec.train.options import TrainingOptions

    users, items, ts = ml1m_like(N_USERS)
    events = pl.DataFrame({"user": users, "item": items, "timestamp": ts})
    ds = prepare(events, name="ml1m-like").dataset
    t0 = time.perf_counter()
    model = create_model("hstu", {"max_len": max_len, "epochs": epochs, "num_threads": 1,
                                  "progress": False}).fit(ds, TrainingOptions(rng=0))
    fit_s = time.perf_counter() - t0
    write_bundle(model, ds, out)
    print(json.dumps({"hstu_bundle": str(out), "users": ds.n_users, "items": ds.n_items,
                      "events": ds.n_events, "fit_s": round(fit_s, 1)}), flush=True)
    return out


def visitor_histories(n: int, seed: int = 1) -> list[list[int]]:
    """`n` histories (item ids, oldest first, at most the API's 1,000) drawn from HELD_OUT
    generated users that are not in the training data."""
    users, items, _ = ml1m_like(N_USERS + HELD_OUT)  # the same generator, more users
    keep = users >= N_USERS
    bounds = np.searchsorted(users[keep], np.arange(N_USERS, N_USERS + HELD_OUT + 1))
    held = items[keep]
    picks = np.random.default_rng(seed).integers(0, HELD_OUT, n)
    return [held[bounds[p]: bounds[p + 1]][-1_000:].tolist() for p in picks.tolist()]


def hstu_requests(bundle: Path, mode: str, n: int, k: int
                  ) -> tuple[list[Any], list[dict[str, Any]], dict[str, Any]]:
    """(requests for `serve_load.open_loop`, events to ingest first, facts to report).

    A request is a GET path, or (path, json body) for a POST."""
    if mode == "visitor":
        hists = visitor_histories(n)
        lengths = np.array([len(h) for h in hists])
        reqs: list[Any] = [("/v1/recommendations", {"history": h, "k": k}) for h in hists]
        return reqs, [], {"history_mean": round(float(lengths.mean()), 1),
                          "history_p50": int(np.median(lengths)), "history_max":
                          int(lengths.max())}
    with np.load(bundle / "arrays.npz", allow_pickle=False) as z:
        user_ids, item_ids = z["user_ids"], z["item_ids"]
    rng = np.random.default_rng(2)
    picks = user_ids[rng.integers(0, user_ids.size, n)]
    fresh = sorted(set(picks.tolist()))
    now = int(time.time())
    events = [{"user": u, "item": item_ids[rng.integers(0, item_ids.size)].item(),
               "type": "view", "timestamp": now, "event_id": f"hstu-live-{u}"}
              for u in fresh]
    reqs = [f"/v1/users/{u}/recommendations?k={k}" for u in picks.tolist()]
    return reqs, events, {"users_with_live_event": len(fresh)}
