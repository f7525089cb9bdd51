"""`lmrec train`, `lmrec recommend` and `lmrec embed`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lmrec.cli.auto import AUTO, auto_options, train_auto
from lmrec.cli.batch import item_titles, ranked_rows, recommend_all_users, recommend_served
from lmrec.cli.checks import check_choice, check_out, check_range
from lmrec.cli.options import (
    SEED_MAX,
    _BudgetOption,
    _FamiliesOption,
    _MaxTrialsOption,
    parse_params,
)
from lmrec.cli.rerank import RerankOption, parse_rerank_options
from lmrec.console import err, out, print_json, steps, table
from lmrec.errors import ConfigError, InputError
from lmrec.models.kinds import EmbeddingModel
from lmrec.serve.codes import QUANTIZE
from lmrec.serve.retrieval import DEFAULT_ANN_THRESHOLD
from lmrec.train.options import TrainingOptions


def train(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the trained model.")],
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE, repeatable.")
                     ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with model parameters.")
                      ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    rules: Annotated[Path | None, typer.Option(
        help="Business rules (JSON or TOML) to ship in the bundle.")] = None,
    ann_threshold: Annotated[int, typer.Option(
        help="Catalogue size from which embedding models get an ANN index.")
    ] = DEFAULT_ANN_THRESHOLD,
    quantize: Annotated[str, typer.Option(
        help="Store the item index compressed: none, fp16, int8 (faiss scalar quantiser) or "
             "pq (product quantiser), and the model's large arrays in fp16 or int8 (pq: "
             "int8); embedding models only.")] = "none",
    budget: _BudgetOption = None,
    families: _FamiliesOption = None,
    max_trials: _MaxTrialsOption = None,
    teacher: Annotated[Path | None, typer.Option(
        help="Distil from this bundle: a sequential model trained on the same data (the "
             "student, --model, must be sequential too; see distill_weight).")] = None,
) -> None:
    """Train a model on a dataset folder and save it as a servable bundle (model, items,
    training histories, version; see `lmrec serve`).

    `--model auto --budget 5m` searches models and parameters on an internal per-user 9:1
    split of the data, then trains the winner on all of it (the search goes to auto.json)."""
    from lmrec.data import Dataset
    from lmrec.models import create_model, model_class
    from lmrec.serve.bundle import write_bundle

    check_out(out_dir, "--out")
    check_range("--seed", seed, low=0, high=SEED_MAX)
    check_range("--ann-threshold", ann_threshold, low=0)
    check_choice("--quantize", quantize, QUANTIZE)
    if rules is not None:  # a bad rules file is refused before training, not after it
        from lmrec.serve.rules import Rules

        Rules.from_file(rules)
    params = parse_params(param, config)
    auto = auto_options(model == AUTO, budget, families, max_trials,
                        {"--param": bool(param), "--config": config is not None})
    if auto is None:
        if "checkpoint_dir" in model_class(model).Config.model_fields:
            # neural models keep checkpoints, history.json and the training curve with it
            params.setdefault("checkpoint_dir", str(out_dir / "run"))
        rec = create_model(model, params)
        if quantize != "none" and not isinstance(rec, EmbeddingModel):
            raise ConfigError(f"--quantize {quantize}: model {model!r} has no item embeddings "
                              "to compress (embedding models: als, two-tower, ...)")
    teacher_model = _teacher(teacher, model, auto is not None)
    ds = Dataset.load(data)
    if teacher_model is not None:  # refused before training, not after it
        from lmrec.models.distill import check_teacher
        from lmrec.models.sequential import SequentialRecommender

        check_teacher(teacher_model, rec, ds, "--teacher", family=SequentialRecommender)
    t0 = time.perf_counter()
    found = None
    with steps(f"training {model} on {ds.name}") as step:
        if auto is not None:  # the winner comes fitted on all of ds
            found = train_auto(ds, auto, seed, out_dir, step)
            assert found.model is not None
            rec = found.model
        else:
            rec.fit(ds, TrainingOptions(rng=seed, teacher=teacher_model))
    seconds = time.perf_counter() - t0
    from lmrec.train.distributed import dist_env

    if not dist_env().is_main:  # under torchrun every rank trains; rank 0 alone writes
        return
    if quantize != "none" and not isinstance(rec, EmbeddingModel):  # --model auto's winner
        err.print(f"[yellow]note:[/] --quantize {quantize} ignored: {rec.name} has no item "
                  "embeddings")
        quantize = "none"
    write_bundle(rec, ds, out_dir, ann_threshold=ann_threshold, rules=rules,
                 quantize=quantize)
    if found is not None:
        from lmrec.jsonfile import write_json

        write_json(out_dir / "auto.json", found.to_dict())
    err.print(f"Trained {rec!r} on {ds.n_users} users, {ds.n_items} items, {ds.n_events} "
              f"events in {seconds:.2f} s; saved to {out_dir}")
    if rec.settings_:
        chosen = ", ".join(f"{key}={v}" for key, v in rec.settings_.items())
        err.print(f"Chosen from the data's statistics: {chosen}")


def _teacher(folder: Path | None, model: str, auto: bool) -> Any:
    """The --teacher model loaded, after checking that the student can learn from one."""
    if folder is None:
        return None
    from lmrec.models import load_model, model_class
    from lmrec.models.distill import family_names
    from lmrec.models.sequential import SequentialRecommender

    if auto or not issubclass(model_class(model), SequentialRecommender):
        raise ConfigError(f"--teacher: model {model!r} cannot learn from a teacher; sequential "
                          f"models can ({family_names(SequentialRecommender)})")
    try:
        return load_model(folder)
    except InputError as exc:
        raise InputError(f"--teacher: {exc}") from None


def recommend(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `lmrec train`.")],
    user: Annotated[list[str] | None, typer.Option("--user", help="User id; repeatable.")
                    ] = None,
    text: Annotated[str | None, typer.Option(
        "--text", help="Describe a taste in words instead of naming a user (zero-shot; "
                       "text models such as content-text).")] = None,
    k: Annotated[int, typer.Option("--k", help="How many items.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    strict: Annotated[bool, typer.Option(help="Unknown users are an error.")] = False,
    include_seen: Annotated[bool, typer.Option(help="Allow items the user already has.")
                            ] = False,
    all_users: Annotated[bool, typer.Option(
        "--all-users", help="Every training user, written to --out (batch scoring).")] = False,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="With --all-users: the Parquet file (user, rank, item, score).")] = None,
    rerank: RerankOption = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="With --user: the history item behind each recommendation "
                          "(because) and the reason.")] = False,
) -> None:
    """Top-k recommendations for users of a trained model, for a text (--text), or for every
    user to a Parquet file (--all-users --out recs.parquet). With --rerank or --explain the
    answer comes from the serving engine over the bundle, as over HTTP."""
    from lmrec.models import load_model

    if sum((text is not None, bool(user), all_users)) != 1:
        raise ConfigError("give one of --user (one or more), --text or --all-users")
    if all_users != (out_file is not None):
        raise ConfigError("--all-users and --out go together: --all-users --out recs.parquet")
    check_range("--k", k, low=1)
    specs = parse_rerank_options(rerank)
    if (specs or explain) and not user:
        option = "--rerank" if specs else "--explain"
        raise ConfigError(f"{option} goes with --user (the serving engine answers users)")
    if specs or explain:
        assert user is not None
        recommend_served(model_dir, user, k, include_seen, strict, specs, explain, as_json)
        return
    rec = load_model(model_dir)
    if all_users:
        assert out_file is not None
        recommend_all_users(rec, out_file, k, include_seen)
        return
    if text is not None:
        _recommend_for_text(rec, model_dir, text, k, as_json)
        return
    result = rec.recommend(user, k, exclude_seen=not include_seen, strict=strict)
    records = result.to_records()
    if as_json:
        for r in records:
            print_json(r)
        return
    titles = item_titles(model_dir)
    for r in records:
        if "note" in r:
            err.print(f"[yellow]note:[/] user {r['user']}: {r['note']}")
        rows = ranked_rows(r["items"], titles)
        out.print(table(f"Top {k} for user {r['user']} ({rec.name})",
                        ["rank", "item", "title", "score"], rows))


def _recommend_for_text(rec: Any, model_dir: Path, text: str, k: int, as_json: bool) -> None:
    from lmrec.models import MODELS
    from lmrec.models.kinds import TextQueries

    check_range("--k", k, low=1)
    if not isinstance(rec, TextQueries):
        able = sorted(n for n, klass in MODELS.items() if issubclass(klass, TextQueries))
        raise ConfigError(f"model {rec.name!r} cannot recommend from a text; models that can: "
                          f"{', '.join(able)}")
    with steps("encoding the text"):
        ranked = rec.recommend_for_text(text, k)
    if as_json:
        print_json({"text": text, "items": [{"item": i, "score": round(s, 6)}
                                            for i, s in ranked]})
        return
    titles = item_titles(model_dir)
    rows = [(r, i, titles.get(i, ""), s) for r, (i, s) in enumerate(ranked, start=1)]
    out.print(table(f"Top {k} for {text!r} ({rec.name})", ["rank", "item", "title", "score"],
                    rows))


# --- text embeddings ------------------------------------------------------------------------
def embed(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    encoder: Annotated[str | None, typer.Option(
        help="'default' (all-MiniLM-L6-v2) or a local sentence-transformers model folder.")
                       ] = None,
    template: Annotated[str | None, typer.Option(
        help="Item text: a format string such as '{title}. Genres: {genres}.' or columns "
             "'title,genres'; default: title/genres/tags/... as available.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Embedding cache (default $LMREC_CACHE_DIR or ~/.cache/lmrec/embeddings).")
                         ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Texts encoded per batch.")] = 64,
    show: Annotated[int, typer.Option(help="Print the texts of this many items.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Encode the item texts of a dataset into the embedding cache (new or changed texts only)."""
    from lmrec.data import Dataset
    from lmrec.features import EmbeddingCache, encode_cached, get_encoder, item_texts

    check_choice("--device", device, ("cpu", "cuda", "auto"))
    check_range("--batch-size", batch_size, low=1)
    check_range("--show", show, low=0)
    check_out(cache_dir, "--cache-dir")
    ds = Dataset.load(data)
    enc = get_encoder(encoder, device=device)  # type: ignore[arg-type]
    texts = item_texts(ds, template)
    res = encode_cached(texts, enc, cache_dir=cache_dir, batch_size=batch_size,
                        progress=not as_json)
    summary = {"dataset": ds.name, "items": ds.n_items, "encoder": res.encoder,
               "dim": int(res.vectors.shape[1]), "newly_encoded": res.n_encoded,
               "from_cache": res.n_cached, "empty_texts": sum(1 for t in texts if not t),
               "seconds": round(res.seconds, 3),
               "items_per_s": round(ds.n_items / res.seconds, 1) if res.seconds > 0 else None,
               "cache": str(EmbeddingCache(res.encoder, cache_dir).folder)}
    if as_json:
        print_json(summary)
        return
    for i, t in enumerate(texts[:show]):
        out.print(f"{ds.items.to_python(i)}: {t}", highlight=False)
    out.print(table(f"Embedded {ds.name!r}", ["", "value"],
                    [(key, f"{v:g}" if isinstance(v, float) else v) for key, v in summary.items()]))
