"""Item text encoding speed: MovieLens latest-small (9,742 items) and 100K, cold and cached.

Cold: an empty temporary cache, so every distinct item text goes through all-MiniLM-L6-v2
(model load timed separately). Cached: the same call again in a fresh encoder object whose
model is never loaded, reading every vector back from disk (hashing included). Prints one
JSON line per dataset. Run on a quiet machine for figures worth reporting:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/text_encoding.py [--device cpu]
        [--batch-size 64] [--datasets /path/to/shared/datasets]

Targets on 2 CPU cores: latest-small cold under 2 minutes, cached under 2 seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=Path, default=Path(os.environ.get(
        "LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()

    import torch

    from lmrec.datasets.movielens import load_movielens_100k, load_movielens_latest_small
    from lmrec.features import SentenceTransformerEncoder, encode_cached, item_texts

    encoder = SentenceTransformerEncoder(device=a.device)
    t0 = time.perf_counter()
    encoder._load()  # timed on its own: a one-off cost per process
    load_s = time.perf_counter() - t0
    loaders = {"movielens-latest-small": (load_movielens_latest_small, "ml-latest-small"),
               "movielens-100k": (load_movielens_100k, "ml-100k")}
    for name, (loader, folder) in loaders.items():
        if not (a.datasets / folder).is_dir():
            print(json.dumps({"dataset": name, "skipped": f"{a.datasets / folder} not found"}))
            continue
        ds = loader(a.datasets / folder).dataset
        t0 = time.perf_counter()
        texts = item_texts(ds)
        texts_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as cache:
            cold = encode_cached(texts, encoder, cache_dir=cache, batch_size=a.batch_size,
                                 progress=False)
            fresh = SentenceTransformerEncoder(device=a.device)  # same name, nothing loaded
            cached = encode_cached(texts, fresh, cache_dir=cache, progress=False)
            assert cached.n_encoded == 0 and not fresh.loaded
            assert (cached.vectors == cold.vectors).all()
        print(json.dumps({
            "dataset": name, "items": ds.n_items, "distinct_texts": cold.n_encoded,
            "mean_text_chars": round(sum(map(len, texts)) / max(len(texts), 1), 1),
            "device": a.device, "torch_threads": torch.get_num_threads(),
            "batch_size": a.batch_size, "model_load_s": round(load_s, 2),
            "item_texts_s": round(texts_s, 3),
            "cold_encode_s": round(cold.seconds, 2),
            "cold_with_load_s": round(cold.seconds + load_s, 2),
            "cold_items_per_s": round(ds.n_items / cold.seconds, 1),
            "cached_s": round(cached.seconds, 3),
            "cached_items_per_s": round(ds.n_items / cached.seconds, 1),
        }), flush=True)
        load_s = 0.0  # loaded once, counted with the first dataset


if __name__ == "__main__":
    main()
