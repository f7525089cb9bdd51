"""The model bundle: everything `lmrec serve` needs, in one self-contained folder.

`lmrec train --out OUT` writes it; `lmrec recommend OUT` and `lmrec serve OUT` read it.

    config.json, arrays.npz   the model (`Recommender.save`: config, learned arrays, id
                              vocabularies, training seen-items); with `quantize` its large
                              float32 arrays in fp16, or int8 with per-row scales (pq: int8),
                              float32 again once loaded (`lmrec.models.precision`)
    items.parquet             the item table: row i describes internal item i (`item` + attributes)
    users.parquet             the user table: row u describes internal user u (`user` +
                              attributes, e.g. a risk tolerance for suitability re-ranking);
                              bundles written before it existed load without it
    histories.npz             the training histories as `Sequences` arrays (row u = internal user
                              u, oldest first), the external user and item ids, and `redacted`
                              (n_users,) bool: users forgotten since training
    index/                    an ANN index over the item embeddings (`ItemIndex.save`), only for
                              `EmbeddingModel`s with a catalogue of at least
                              `ann_threshold` items; smaller catalogues are searched exactly;
                              with `quantize` (fp16, int8, pq) always, holding codes: a flat
                              scan below the threshold, an inverted file from it
    rules.json | rules.toml   optional business rules (see `lmrec.serve.rules.Rules`)
    bundle.json               written last, so a folder without it is an unfinished bundle:
                              format, format_version, model, model_version (creation time + a
                              content hash of the other files), content_sha256 (that hash),
                              files (name -> sha256 of each file, checked on every load:
                              `lmrec.integrity`), created_at, lmrec_version,
                              n_users, n_items, n_events, index ("index" or null),
                              embedding_scorer (the model is an `EmbeddingModel`),
                              item_roles (attribute column -> role, for filters and diversity),
                              user_roles (the same for users.parquet),
                              array_precision ("fp16" or "int8"; only when not float32);
                              after an erasure also redactions (users forgotten so far) and
                              redacted_at

No pickle anywhere: arrays are .npz with `allow_pickle=False`, tables are Parquet.

Erasure (`redact_bundle` in `lmrec.serve.erasure`, behind `DELETE /v1/users/{id}`): a training
user's history row, seen items, attributes (users.parquet) and per-user learned rows
(`Recommender.redact_users`) are emptied in the files, which are written next to the old
ones and swapped in with `os.replace`, bundle.json last with new digests and so a new
model_version. Internal indices must not shift, so the user's external id stays in the id
vocabularies (arrays.npz and histories.npz user_ids) until the model is retrained: a
placeholder would break the sorted vocabulary's binary search, and integer ids have no free
value to put there. The id then maps to nothing:
`redacted` marks it, and the service treats it as an unknown user. Item-side state learned
from the user's data (item factors, item similarities, network weights, item popularity in the
model's own scores) stays until retraining; so do copies outside this folder (older bundles,
the training dataset), which are the operator's to purge before retraining.

Locking: writers of one folder (`write_bundle`, `redact_bundle`, in any process) take its lock
(`.lock`) exclusively and readers (`load_bundle`) in shared mode, so a reload never reads a mix
of old and new files. Writers also write every file under a temporary name and move it in with
`os.replace`, bundle.json last, for readers that take no lock.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.vocab import IdVocabulary
from lmrec.errors import InputError, LmrecError, Location
from lmrec.integrity import IntegrityError, read_failure, read_npz, sha256_files, verify_manifest
from lmrec.jsonfile import read_json
from lmrec.models.artifacts import ARRAYS_FILE, ids_array
from lmrec.models.base import Recommender
from lmrec.models.io import load_model
from lmrec.models.kinds import EmbeddingModel
from lmrec.models.precision import precision_for
from lmrec.serve.retrieval import DEFAULT_ANN_THRESHOLD
from lmrec.serve.rules import Rules
from lmrec.version import __version__

BUNDLE_FORMAT = "lmrec-bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
HISTORIES_FILE = "histories.npz"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
INDEX_DIR = "index"
RULES_FILES = ("rules.json", "rules.toml")
LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
HISTORY_ARRAYS = ("indptr", "items", "events", "timestamps", "event_types", "user_ids",
                  "item_ids")  # histories.npz (+ `redacted` since erasure exists)


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle. `histories` row u is internal user u of `model.users_`."""

    path: Path
    meta: dict[str, Any]
    model: Recommender
    items: pl.DataFrame  # row i = internal item i
    histories: Sequences
    index: Any | None  # lmrec.serve.retrieval.ItemIndex, loaded from index/ when present
    redacted: np.ndarray | None = None  # (n_users,) bool: users forgotten since training
    user_table: pl.DataFrame | None = None  # row u = internal user u; None in older bundles

    @property
    def model_version(self) -> str:
        return str(self.meta["model_version"])

    @property
    def users(self) -> IdVocabulary:
        return self.model.users_

    @property
    def item_ids(self) -> IdVocabulary:
        return self.model.items_


def write_bundle(model: Recommender, dataset: Dataset, folder: str | Path, *,
                 ann_threshold: int = DEFAULT_ANN_THRESHOLD,
                 rules: str | Path | None = None, quantize: str = "none") -> Path:
    """Save a fitted `model` with what serving needs from the `dataset` it was trained on.

    `rules`: an optional JSON or TOML rules file copied into the bundle. `quantize`: "none",
    or "fp16", "int8", "pq" to store the item index as codes (`lmrec.serve.codes`) and the
    model's large arrays in fp16 or int8 (pq: int8; `lmrec.models.precision`).
    """
    from lmrec.serve.codes import check_quantize

    check_quantize(quantize)
    if model.users_ != dataset.users or model.items_ != dataset.items:
        raise InputError("the model was not trained on this dataset (id vocabularies differ)")
    rules_file = Path(rules) if rules is not None else None
    if rules_file is not None:  # refuse a bad file now, before any folder is made
        Rules.from_file(rules_file)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with bundle_lock(folder):
        tmp = Path(tempfile.mkdtemp(prefix=".write-", dir=folder))
        try:
            return _write_bundle(model, dataset, folder, tmp, ann_threshold, rules_file,
                                 quantize)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_bundle(model: Recommender, dataset: Dataset, folder: Path, tmp: Path,
                  ann_threshold: int, rules: Path | None, quantize: str = "none") -> Path:
    """Write the files in `tmp` (inside `folder`), then move them in; bundle.json last."""
    precision = precision_for(quantize)
    model.save(tmp, precision=precision)
    dataset.item_table.write_parquet(tmp / ITEMS_FILE)
    dataset.user_table.write_parquet(tmp / USERS_FILE)
    seqs = dataset.sequences()
    np.savez(tmp / HISTORIES_FILE, allow_pickle=False,
             indptr=seqs.indptr, items=seqs.items, events=seqs.events,
             timestamps=seqs.timestamps, event_types=np.asarray(seqs.event_types, dtype=np.str_),
             user_ids=ids_array(dataset.users), item_ids=ids_array(dataset.items),
             redacted=np.zeros(dataset.n_users, dtype=bool))
    index_name = None
    # a compressed index is written whatever the catalogue's size: it replaces the float32
    # vectors that exact search would otherwise take from the model
    if isinstance(model, EmbeddingModel) and (dataset.n_items >= ann_threshold
                                              or quantize != "none"):
        from lmrec.serve.retrieval import ItemIndex

        kind = "exact" if dataset.n_items < ann_threshold else "auto"
        ItemIndex.build(model.item_embeddings(), kind=kind, exact_below=ann_threshold,
                        quantize=quantize).save(tmp / INDEX_DIR)
        index_name = INDEX_DIR
    if rules is not None:
        (tmp / f"rules{rules.suffix}").write_bytes(rules.read_bytes())
    (folder / BUNDLE_FILE).unlink(missing_ok=True)  # the folder is unfinished until the end
    for name in RULES_FILES:
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)  # a directory cannot be replaced
    for entry in sorted(tmp.iterdir()):
        if entry.is_file():
            fsync_file(entry)
        os.replace(entry, folder / entry.name)
    fsync_dir(folder)
    created = time.time()
    digest, files = sha256_files(bundle_files(folder, index_name))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "lmrec_version": __version__,
        "model": model.name,
        "model_version": f"{model.name}-{stamp}-{digest[:12]}",
        "content_sha256": digest,
        "files": files,
        "created_at": created,
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "n_events": dataset.n_events,
        "index": index_name,
        "item_roles": {col: str(spec.role) for col, spec in dataset.item_schema.items()},
        "user_roles": {col: str(spec.role) for col, spec in dataset.user_schema.items()},
        "embedding_scorer": isinstance(model, EmbeddingModel),
    }
    if precision != "fp32":
        meta["array_precision"] = precision
    (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    fsync_file(tmp / BUNDLE_FILE)
    os.replace(tmp / BUNDLE_FILE, folder / BUNDLE_FILE)
    fsync_dir(folder)
    return folder


def read_bundle_meta(folder: str | Path) -> dict[str, Any]:
    """bundle.json of `folder`, checked; InputError when it is not a finished bundle."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.exists():
        raise InputError("not a model bundle (no bundle.json); train with `lmrec train --out`",
                         location=Location(str(folder)))
    meta = read_json(path)
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_VERSION:
        raise InputError(
            f"bundle format {meta.get('format')!r} version {meta.get('format_version')!r} is "
            "not supported", location=Location(str(path)),
            expected=f"{BUNDLE_FORMAT} version {BUNDLE_VERSION}; train the model again")
    return meta


def load_bundle(folder: str | Path) -> Bundle:
    """Load a bundle written by `write_bundle` (the model, items, histories, index), holding
    its lock in shared mode so that no writer changes files in between.

    Every file is first checked against bundle.json's digests (`verify_bundle`); a damaged
    file, or one whose arrays do not fit the rest, raises an InputError naming it."""
    folder = Path(folder)
    read_bundle_meta(folder)  # a clear error for a folder that is not a bundle
    with bundle_lock(folder, shared=True):
        return _load_bundle(folder)


def verify_bundle(folder: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Check the bundle's files against bundle.json: each file's sha256 (`files`), and that
    no file of the bundle is missing from the list; IntegrityError names the first file that
    does not match. Bundles written before per-file digests are checked as a whole against
    `content_sha256`, which cannot tell which file changed."""
    folder = Path(folder)
    meta = meta if meta is not None else read_bundle_meta(folder)
    files = meta.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise IntegrityError(folder, BUNDLE_FILE, "`files` must map names to sha256 digests")
        for name, _ in bundle_files(folder, meta.get("index")):
            if name not in files:
                raise IntegrityError(folder, name, f"not part of the bundle as written (not in "
                                     f"{BUNDLE_FILE}'s files)")
        verify_manifest(folder, files)
        return
    if "content_sha256" in meta:
        try:
            digest, _ = sha256_files(bundle_files(folder, meta.get("index")))
        except OSError as exc:
            raise IntegrityError(folder, BUNDLE_FILE, f"a file of the bundle cannot be read "
                                 f"({exc.strerror or exc})") from exc
        if digest != meta["content_sha256"]:
            raise IntegrityError(folder, BUNDLE_FILE, "the bundle's files do not match its "
                                 "content_sha256 (a bundle without per-file digests: which file "
                                 "changed cannot be told)")


def _load_bundle(folder: Path) -> Bundle:
    meta = read_bundle_meta(folder)  # again, under the lock
    verify_bundle(folder, meta)
    model = load_model(folder, verify=False)  # verified just now
    try:
        items = pl.read_parquet(folder / ITEMS_FILE)
    except Exception as exc:  # polars and pyarrow raise their own errors for a bad file
        raise read_failure(folder / ITEMS_FILE, exc) from exc
    arrays = read_npz(folder / HISTORIES_FILE, HISTORY_ARRAYS)
    seqs = Sequences(arrays["indptr"], arrays["items"], arrays["events"], arrays["timestamps"],
                     tuple(str(t) for t in arrays["event_types"]))
    if (seqs.indptr.size != len(model.users_) + 1 or items.height != len(model.items_)
            or not _same_ids(arrays["user_ids"], model.users_)
            or not _same_ids(arrays["item_ids"], model.items_)):
        raise InputError("the bundle's files do not belong together (id vocabularies differ)",
                         location=Location(str(folder)))
    if not (seqs.indptr[0] == 0 and seqs.indptr[-1] == seqs.items.size
            == seqs.events.size == seqs.timestamps.size):
        raise IntegrityError(folder, HISTORIES_FILE, "damaged: the histories' arrays do not "
                             "fit each other")
    index = None
    if meta.get("index"):
        from lmrec.serve.retrieval import ItemIndex

        try:
            index = ItemIndex.load(folder / meta["index"])
        except LmrecError:
            raise
        except Exception as exc:  # faiss reading a damaged file
            raise read_failure(folder / meta["index"], exc) from exc
    redacted = arrays.get("redacted")  # absent in bundles written before erasure existed
    if redacted is not None and redacted.shape != (len(model.users_),):
        raise InputError("histories.npz: `redacted` must have one entry per user",
                         location=Location(str(folder / HISTORIES_FILE)))
    return Bundle(folder, meta, model, items, seqs, index, redacted,
                  _user_table(folder, len(model.users_)))


def _user_table(folder: Path, n_users: int) -> pl.DataFrame | None:
    """users.parquet (one row per internal user), None for bundles written before it."""
    path = folder / USERS_FILE
    if not path.exists():
        return None
    try:
        users = pl.read_parquet(path)
    except Exception as exc:  # polars and pyarrow raise their own errors for a bad file
        raise read_failure(path, exc) from exc
    if users.height != n_users:
        raise InputError("the bundle's files do not belong together (users.parquet has "
                         f"{users.height} rows for {n_users} users)", location=Location(str(path)))
    return users


class _SharedLock:
    """A readers-writer lock within one process: any number of shared holders or one
    exclusive holder. Writers waiting keep new readers out, so a reload cannot starve them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire(self, shared: bool) -> None:
        with self._cond:
            if shared:
                self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
                self._readers += 1
                return
            self._writers_waiting += 1
            try:
                self._cond.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release(self, shared: bool) -> None:
        with self._cond:
            if shared:
                self._readers -= 1
            else:
                self._writer = False
            self._cond.notify_all()


_LOCKS: dict[Path, _SharedLock] = {}
_LOCKS_GUARD = threading.Lock()
_HELD = threading.local()  # .folders: folder -> shared (bool), the folders this thread holds


@contextmanager
def bundle_lock(folder: str | Path, *, shared: bool = False) -> Iterator[None]:
    """Access to a bundle folder: exclusive for writers, shared for readers. A lock per folder
    in this process, plus `flock` on `folder/.lock` across processes where the platform has it
    (elsewhere one writing process per folder). Reentrant within a thread; a thread holding
    the exclusive lock may also read. A reader of a folder it cannot write to (no `.lock` can
    be created there) only takes the in-process lock."""
    key = Path(folder).resolve()
    held: dict[Path, bool] = _HELD.__dict__.setdefault("folders", {})
    if key in held:
        if held[key] and not shared:
            raise RuntimeError("a shared bundle lock cannot be upgraded to an exclusive one")
        yield
        return
    with _LOCKS_GUARD:
        local = _LOCKS.setdefault(key, _SharedLock())
    local.acquire(shared)
    try:
        with _lock_file(key / LOCK_FILE, shared) as f:
            try:
                import fcntl
            except ImportError:
                fcntl = None  # type: ignore[assignment]
            if fcntl is not None and f is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            held[key] = shared
            try:
                yield
            finally:
                del held[key]
                if fcntl is not None and f is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        local.release(shared)


@contextmanager
def _lock_file(path: Path, shared: bool) -> Iterator[BinaryIO | None]:
    """The open lock file; for a reader, read-only when it cannot be created or written, and
    None when it cannot be opened at all (a read-only folder: no writer can change it)."""
    try:
        f = path.open("a+b")
    except OSError:
        if not shared:
            raise
        try:
            f = path.open("rb")
        except OSError:
            yield None
            return
    with f:
        yield f


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def find_rules(folder: Path) -> Path | None:
    """The bundle's rules file, if it has one."""
    for name in RULES_FILES:
        if (folder / name).exists():
            return folder / name
    return None


def bundle_files(folder: Path, index_name: str | None,
                 replaced: dict[str, Path] | None = None) -> list[tuple[str, Path]]:
    """The bundle's files (all but bundle.json) in the order of its content hash, as (name
    relative to the folder, path); `replaced` maps names to the temporary files about to take
    their place."""
    names = [CONFIG_FILE, ARRAYS_FILE, ITEMS_FILE, HISTORIES_FILE]
    names += [USERS_FILE] if (folder / USERS_FILE).exists() else []
    names += [n for n in RULES_FILES if (folder / n).exists()]
    if index_name:
        names += sorted(p.relative_to(folder).as_posix()
                        for p in (folder / index_name).rglob("*") if p.is_file())
    replaced = replaced or {}
    return [(n, replaced.get(n, folder / n)) for n in names]


def _same_ids(arr: np.ndarray, vocab: IdVocabulary) -> bool:
    """Whether saved ids (`ids_array`'s form) are exactly the vocabulary's ids, in order."""
    saved = ids_array(vocab)
    return ((arr.dtype.kind in "iu") == (saved.dtype.kind in "iu")
            and np.array_equal(arr, saved))
