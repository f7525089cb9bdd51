"""Text vectors cached on disk, so each text is encoded once per model.

Layout: one folder per encoder, named by a hash of the encoder's `name`, so vectors of one
model are never served for another:

    $LMREC_CACHE_DIR (default ~/.cache/lmrec/embeddings)
      <sha256(encoder name)[:24]>/
        encoder.json                 {"encoder": name, "dim": d}
        part-<time>-<random>.npz     keys (n,) S64 hex sha256 of the text; vectors (n, d) float32

Each batch of newly encoded texts is a new part, written to a temporary file and renamed into
place, so a reader never sees half a file and two processes filling the same cache do not
overwrite each other (they may both encode a text; the copies are identical). Once there are
more than `MAX_PARTS` parts they are merged into one, again through a temporary file.
Lookups are vectorised: a sorted key array and `np.searchsorted`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.features.item_text import ItemTextTemplate, item_texts
from lmrec.features.text_encoder import TextEncoder, get_encoder
from lmrec.jsonfile import read_json

CACHE_ENV = "LMREC_CACHE_DIR"
MAX_PARTS = 16
_KEY_DTYPE = "S64"  # hex digests: fixed width, no NUL bytes for numpy to strip


def default_cache_dir() -> Path:
    """`$LMREC_CACHE_DIR`, else ~/.cache/lmrec/embeddings."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmrec" / "embeddings"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """(N,) S64: the hex sha256 of each text's UTF-8 bytes."""
    return np.array([hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts],
                    dtype=_KEY_DTYPE)


class EmbeddingCache:
    """The cached vectors of one encoder (identified by its name) under `root`."""

    def __init__(self, encoder_name: str, root: str | Path | None = None) -> None:
        self.encoder_name = encoder_name
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        digest = hashlib.sha256(encoder_name.encode("utf-8")).hexdigest()[:24]
        self.folder = self.root / digest
        self._keys: np.ndarray | None = None  # sorted (M,) S64
        self._vectors: np.ndarray | None = None  # (M, d) float32, rows follow _keys

    # --- reading ---------------------------------------------------------------------------
    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """For N keys: (found (N,) bool, vectors (N, d) float32 with zero rows where missing).

        The vectors are None when the cache is empty (the dimension is then unknown).
        """
        self._read()
        assert self._keys is not None
        keys = np.asarray(keys, dtype=_KEY_DTYPE)
        if self._vectors is None or self._keys.size == 0:
            return np.zeros(keys.size, dtype=bool), None
        pos = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
        found = self._keys[pos] == keys
        vectors = np.zeros((keys.size, self._vectors.shape[1]), dtype=np.float32)
        vectors[found] = self._vectors[pos[found]]
        return found, vectors

    def __len__(self) -> int:
        self._read()
        assert self._keys is not None
        return int(self._keys.size)

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []

    def _read(self) -> None:
        if self._keys is not None:
            return
        self._check_owner()
        keys, vectors = [], []
        for part in self._parts():
            try:
                with np.load(part, allow_pickle=False) as z:
                    keys.append(z["keys"])
                    vectors.append(z["vectors"])
            except FileNotFoundError:  # merged away by another process meanwhile: re-encoded
                continue
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"embedding cache part {part} is unreadable ({exc}); delete "
                                  "it (it is only a cache)") from exc
        if not keys:
            self._keys, self._vectors = np.zeros(0, dtype=_KEY_DTYPE), None
            return
        dims = {v.shape[1] for v in vectors}
        if len(dims) != 1:
            raise ConfigError(f"embedding cache {self.folder} mixes vector sizes {sorted(dims)}; "
                              "delete the folder")
        all_keys = np.concatenate(keys).astype(_KEY_DTYPE)
        uniq, first = np.unique(all_keys, return_index=True)
        self._keys = uniq
        self._vectors = np.concatenate(vectors).astype(np.float32, copy=False)[first]

    def _check_owner(self) -> None:
        """Refuse a folder that belongs to another encoder (a hash collision or a hand edit)."""
        meta = self.folder / "encoder.json"
        if meta.is_file():
            owner = read_json(meta).get("encoder")
            if owner != self.encoder_name:
                raise ConfigError(f"embedding cache {self.folder} belongs to encoder {owner!r}, "
                                  f"not {self.encoder_name!r}")

    # --- writing ---------------------------------------------------------------------------
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Store N new (key, vector) pairs as one new part; merge parts when there are many."""
        keys = np.asarray(keys, dtype=_KEY_DTYPE)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if keys.size == 0:
            return
        if vectors.ndim != 2 or vectors.shape[0] != keys.size:
            raise ValueError(f"{keys.size} keys but vectors of shape {vectors.shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_owner()
        meta = self.folder / "encoder.json"
        if not meta.exists():
            _atomic_write_bytes(meta, json.dumps(
                {"encoder": self.encoder_name, "dim": int(vectors.shape[1])}).encode())
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        _atomic_savez(self.folder / name, keys=keys, vectors=vectors)
        self._keys = self._vectors = None  # re-read on the next lookup
        parts = self._parts()
        if len(parts) > MAX_PARTS:
            self._merge(parts)

    def _merge(self, parts: list[Path]) -> None:
        """One part with every key of `parts`; the old parts are removed after it is in place."""
        self._read()
        assert self._keys is not None and self._vectors is not None
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        _atomic_savez(self.folder / name, keys=self._keys, vectors=self._vectors)
        for p in parts:
            p.unlink(missing_ok=True)
        self._keys = self._vectors = None


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class EncodedTexts:
    """Vectors for N texts and how they were obtained."""

    vectors: np.ndarray  # (N, d) float32, unit rows (zero rows for empty texts)
    n_encoded: int  # distinct texts the encoder ran on (the rest came from the cache)
    n_cached: int  # distinct non-empty texts found in the cache
    seconds: float
    encoder: str  # the encoder's name


def encode_cached(
    texts: Sequence[str],
    encoder: TextEncoder | str | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> EncodedTexts:
    """Vectors of `texts`: cached ones read, the rest encoded (each distinct text once) and
    stored. Empty texts get zero rows and are never encoded. The encoder's model is loaded
    only when some text is not cached.
    """
    t0 = time.perf_counter()
    enc = get_encoder(encoder)
    texts = [t if isinstance(t, str) else str(t) for t in texts]
    keys = text_keys(texts)
    nonempty = np.array([bool(t.strip()) for t in texts], dtype=bool)
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    uniq_ok = nonempty[first]
    cache = EmbeddingCache(enc.name, cache_dir) if use_cache else None
    if cache is not None:
        found, cached = cache.lookup(uniq)
    else:
        found, cached = np.zeros(uniq.size, dtype=bool), None
    found &= uniq_ok
    todo = np.flatnonzero(uniq_ok & ~found)
    if cached is None:
        cached = np.zeros((uniq.size, enc.dim), dtype=np.float32)
    if todo.size:
        new = enc.encode([texts[i] for i in first[todo]], batch_size=batch_size,
                         progress=progress)
        if new.shape[1] != cached.shape[1]:
            where = cache.folder if cache is not None else "the cache"
            raise ConfigError(f"encoder {enc.name!r} gives {new.shape[1]}-d vectors but its "
                              f"cache holds {cached.shape[1]}-d ones; delete {where}")
        cached[todo] = new
        if cache is not None:
            cache.add(uniq[todo], new)
    vectors = cached[inverse.ravel()]
    vectors[~nonempty] = 0.0
    return EncodedTexts(vectors, int(todo.size), int(found.sum()),
                        time.perf_counter() - t0, enc.name)


def item_text_vectors(
    dataset: Dataset,
    *,
    encoder: TextEncoder | str | None = None,
    template: ItemTextTemplate | str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """(dataset.n_items, dim) float32 text vectors in internal item order (row i = item i).

    Rows are of unit length; an item whose text is empty (no title, genres, ...) gets a zero
    row. Texts come from `item_texts(dataset, template)`; vectors are cached on disk per
    encoder, so only new or changed texts are encoded.
    """
    return encode_item_texts(dataset, encoder=encoder, template=template, cache_dir=cache_dir,
                             batch_size=batch_size, progress=progress).vectors


def encode_item_texts(
    dataset: Dataset,
    *,
    encoder: TextEncoder | str | None = None,
    template: ItemTextTemplate | str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> EncodedTexts:
    """`item_text_vectors` with how they were obtained (the encoder's name, cache hits)."""
    return encode_cached(item_texts(dataset, template), encoder, cache_dir=cache_dir,
                         batch_size=batch_size, progress=progress)


def text_vectors(
    texts: Sequence[str],
    *,
    encoder: TextEncoder | str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    cache: bool = False,
) -> np.ndarray:
    """(N, dim) float32 unit vectors of arbitrary texts (e.g. a user's own description).

    Not cached unless `cache` is set: free-text queries are rarely repeated.
    """
    if isinstance(texts, str):
        raise ConfigError("text_vectors takes a list of texts, not one string")
    return encode_cached(list(texts), encoder, cache_dir=cache_dir, use_cache=cache,
                         progress=progress).vectors
