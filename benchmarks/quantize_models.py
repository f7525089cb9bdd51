"""A model's own arrays in reduced precision (`lmrec train --quantize fp16|int8`): bundle size on
disk and the accuracy the loaded model keeps.

Each model is trained once on ml-latest-small (ratings >= 3, 10-core; or `--data`) and written
as a bundle three times (`write_bundle(quantize=none|fp16|int8)`); each bundle is loaded back
(`load_bundle`, arrays decoded to float32) and evaluated on the test part, full ranking with
the training items masked. Sizes: arrays.npz, the index/ folder (`--quantize` also compresses
the item index: `benchmarks/quantize.py`; float32 bundles below `ann_threshold` have none) and
the whole bundle; "tables": the arrays the rule of `lmrec.models.precision` reduces (with
their int8 scales), as stored.

    als, two-tower   random per-user 8:1:1 split (seed 0), history "trained" (the fitted state)
    sasrec           time-ordered leave-one-out with a validation item, history "observed"
                     (the next-item protocol of `sequential_protocol.py`), `--sasrec-epochs`
                     epochs (default 20: short training, no early stop)

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/quantize_models.py
    .venv/bin/python benchmarks/quantize_models.py --models als --data amazon-beauty

Prints one JSON object a line; the last line holds every result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.datasets import load_dataset
from lmrec.evaluate import evaluate, split_loo, split_random
from lmrec.models import create_model
from lmrec.models.precision import SCALE_SUFFIX, encode_arrays
from lmrec.models.sequential import SequentialRecommender
from lmrec.prepare import PrepareConfig
from lmrec.serve.bundle import load_bundle, write_bundle
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small",
           "amazon-beauty": "amazon-beauty"}
FORMATS = ("none", "fp16", "int8")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_model(name: str, ds: Any, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"progress": False} if name != "als" else {}
    if name == "sasrec":
        params["epochs"] = args.sasrec_epochs
    model = create_model(name, params)
    sequential = isinstance(model, SequentialRecommender)
    split = split_loo(ds, valid=True) if sequential else split_random(ds, seed=0)
    history = "observed" if sequential else "trained"
    t0 = time.perf_counter()
    model.fit(split.train, TrainingOptions(rng=0, valid=split.valid))
    fit_s = time.perf_counter() - t0
    # the arrays the reduced precisions take (lmrec.models.precision's rule)
    tables = encode_arrays({f"model.{k}": v for k, v in model._arrays().items()}, "int8")[1]
    rows = []
    base_top = None
    for q in FORMATS:
        folder = write_bundle(model, split.train, root / f"{name}-{q}", quantize=q)
        config = json.loads((folder / "config.json").read_text())
        loaded = load_bundle(folder).model
        res = evaluate(loaded, split, ks=(10,), history=history)
        arrays = (folder / "arrays.npz").stat().st_size
        index = folder_bytes(folder / "index") if (folder / "index").is_dir() else 0
        total = folder_bytes(folder)
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            table_bytes = sum(z[k].nbytes for k in z.files
                              if k.removesuffix(SCALE_SUFFIX) in tables)
        users = np.arange(len(loaded.users_))
        top = loaded.recommend_idx(users, 10)[0]
        if base_top is None:
            base_top = top
        same = float(np.mean([set(a) == set(b) for a, b in zip(top, base_top, strict=True)]))
        row = {"dataset": args.data, "model": name, "fit_s": round(fit_s, 1), "quantize": q,
               "split": split.name, "history": history,
               "quantized_arrays": config.get("quantized_arrays", []),
               "tables_mib": round(table_bytes / 2**20, 3),
               "arrays_mib": round(arrays / 2**20, 3), "index_mib": round(index / 2**20, 3),
               "bundle_mib": round(total / 2**20, 3),
               "recall@10": round(float(res.metrics["recall@10"]), 4),
               "ndcg@10": round(float(res.metrics["ndcg@10"]), 4),
               "same_top10_as_fp32": round(same, 4)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=tuple(LOADERS), default="ml-latest-small")
    ap.add_argument("--models", default="als,two-tower,sasrec")
    ap.add_argument("--sasrec-epochs", type=int, default=20)
    args = ap.parse_args()
    # MovieLens: ratings >= 3, 10-core; amazon-beauty: the loader's 5-core
    config = None if args.data == "amazon-beauty" else PrepareConfig(min_rating=3, core=10)
    ds = load_dataset(LOADERS[args.data], SHARED / args.data, download=False,
                      config=config).dataset
    out: dict[str, Any] = {"benchmark": "quantize_models", "data": args.data,
                           "users": ds.n_users, "items": ds.n_items, "events": ds.n_events,
                           "cores": os.cpu_count(), "rows": []}
    root = Path(tempfile.mkdtemp(prefix="lmrec-quantize-models-"))
    try:
        for name in args.models.split(","):
            out["rows"] += run_model(name, ds, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
