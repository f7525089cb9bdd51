"""`lmrec demo`: data -> preparation -> evaluation -> training -> recommendations, on the
built-in shop data, using the same library calls a user's own pipeline would."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from lmrec import columns as C
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.console import metrics_summary, out, steps, table
from lmrec.data import Dataset
from lmrec.models import MODELS, create_model, load_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve.bundle import write_bundle
from lmrec.train.options import TrainingOptions

if TYPE_CHECKING:
    from lmrec.evaluate import HistoryPolicy

# The folders the demo writes into its output folder (and the only ones it replaces).
DEMO_FOLDERS = ("raw", "data", "report", "model")

# The models the demo compares, in the order shown; only those available are used.
DEMO_MODELS = ("popularity", "content", "itemknn", "userknn", "ease", "als", "bpr", "neumf",
               "two-tower")


def run_demo(out_dir: Path, *, n_users: int = 1000, n_items: int = 1000, seed: int = 0,
             history: HistoryPolicy = "observed") -> None:
    """The demo's five steps into `out_dir`; models are evaluated with the `history` policy
    (`lmrec.evaluate.evaluate`)."""
    from lmrec.datasets import generate_shop
    from lmrec.evaluate import (
        evaluate,
        fit_and_evaluate,
        metrics_table,
        split_random,
        write_report,
    )

    t_start = time.perf_counter()
    out.rule("[bold]lmrec demo: a shop's events, from raw files to recommendations")

    # 1. collect: raw files as a shop would export them (with a few bot users mixed in)
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with steps("generating shop data"):
        shop = generate_shop(n_users=n_users, n_items=n_items, seed=seed, bots=3)
        shop.events.write_csv(raw / "events.csv")
        shop.items.write_csv(raw / "items.csv")
        shop.users.write_csv(raw / "users.csv")
    out.print(f"1. Collected {shop.events.height} events, {shop.items.height} items and "
              f"{shop.users.height} users into {raw}/ (events.csv, items.csv, users.csv)")

    # 2. prepare: the same calls as `lmrec data prepare`
    config = PrepareConfig(max_user_events=500, burst_max=20, burst_window_s=60, core=2)
    mapping = ColumnMapping(user="user", item="item", event="event", time="timestamp")
    with steps("preparing") as step:
        events = to_events(read_table(raw / "events.csv"), mapping)
        prepared = prepare(events, read_table(raw / "users.csv"), read_table(raw / "items.csv"),
                           mapping=mapping, config=config, name="shop", on_step=step)
        data_dir = prepared.save(out_dir / "data")
    ds = prepared.dataset
    rep = prepared.report
    dropped = ", ".join(f"{n} {reason}" for reason, n in rep.dropped_by_reason().items())
    out.print(f"2. Prepared {ds.n_users} users, {ds.n_items} items, {ds.n_events} events "
              f"({rep.rows_dropped} of {rep.rows_read} rows dropped: {dropped or 'none'}); "
              f"quality report: {data_dir / 'quality_report.md'}")

    # 3. evaluate: every available model on one seeded per-user 8:1:1 split
    names = [n for n in DEMO_MODELS if n in MODELS]
    split = split_random(ds, (0.8, 0.1, 0.1), seed=seed)
    ks = [5, 10, 20]
    results = {}
    valid_ndcg: dict[str, float] = {}
    with steps("training and evaluating") as step:
        for name in names:
            step(name)
            model = create_model(name)
            results[name] = fit_and_evaluate(model, split, ks, rng=seed, history=history)
            # the same fitted model, scored on the validation part, picks the final model
            valid_ndcg[name] = evaluate(model, split, [10], part="valid",
                                        history=history).metrics["ndcg@10"]
        step("writing the report")
        paths = write_report(results, out_dir / "report", title="lmrec demo: shop data",
                             split_info=split.sizes())
    out.print("3. Evaluation (full ranking over all items, test part of a random 8:1:1 split):")
    out.print(metrics_summary(metrics_table(results, ks), 10))
    out.print(f"   HTML report with plots: {paths['html']}")

    # 4. train: the model with the best validation NDCG@10, refitted on all the data
    best = max(valid_ndcg, key=lambda n: valid_ndcg[n])
    with steps(f"training {best} on all data"):
        model = create_model(best).fit(ds, TrainingOptions(rng=seed))
        # a servable bundle, as `lmrec train` writes: `lmrec serve demo-output/model`
        model_dir = write_bundle(model, ds, out_dir / "model")
    out.print(f"4. Trained {best} (best validation NDCG@10 = {valid_ndcg[best]:.4f}) on all "
              f"data; saved to {model_dir} (serve it with `lmrec serve {model_dir}`)")

    # 5. recommend: a few users, with what they did and what they get
    loaded = load_model(model_dir)
    show_users = [loaded.users_.to_python(i) for i in (0, 1, 2)]
    recs = loaded.recommend(show_users, k=10)
    out.print("5. Recommendations:")
    for row, user in enumerate(show_users):
        _print_user(ds, user, recs.items_of(row), recs.scores[row])
    out.print(f"Done in {time.perf_counter() - t_start:.1f} s. Try: lmrec recommend "
              f"{model_dir} --user {show_users[0]} --k 10")


def _label(items: pl.DataFrame, item_ids: list) -> list[tuple]:
    cols = [c for c in ("title", "category", "brand", "price") if c in items.columns]
    looked = pl.DataFrame({C.ITEM: item_ids}, schema={C.ITEM: items[C.ITEM].dtype}).join(
        items.select(C.ITEM, *cols), on=C.ITEM, how="left", maintain_order="left")
    return list(looked.iter_rows())


def _print_user(ds: Dataset, user: object, rec_items: list, scores) -> None:
    uidx = int(ds.users.index([user])[0])
    hist = (ds.events.filter(pl.col(C.USER_IDX) == uidx).sort(C.TIME).tail(5))
    hist_ids = ds.items.id_of(hist[C.ITEM_IDX].to_numpy()).tolist()
    rows = [(ev, *lab[1:]) for ev, lab in zip(hist[C.EVENT].to_list(),
                                               _label(ds.item_table, hist_ids), strict=True)]
    cols = [c for c in ("title", "category", "brand", "price") if c in ds.item_table.columns]
    out.print(table(f"user {user}: last events", ["event", *cols], rows))
    rows = [(i, *lab[1:], float(s)) for i, (lab, s) in
            enumerate(zip(_label(ds.item_table, rec_items), scores, strict=False), start=1)]
    out.print(table(f"user {user}: top 10", ["rank", *cols, "score"], rows))
