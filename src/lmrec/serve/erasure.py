"""Erasing a user, all or nothing: `Service.forget` (`erase_user`), behind
`DELETE /v1/users/{id}`.

What is erased: the user's events and cached state in the store (one transaction, with an
anonymous audit row) and, when the served bundle was trained on them, their rows in the bundle
(training history, seen items, per-user learned rows, and their attributes in users.parquet,
every value but the id made null: `redact_bundle`), on disk and in memory.

The steps are ordered so that a failure at any of them leaves either all of it or none of it
erased:

    1. prepare   Holding the bundle folder's lock exclusively (until step 3 is over): load the
                 bundle from disk (its digests checked), redact the user in memory, write the
                 changed files (arrays.npz, histories.npz, users.parquet when the bundle
                 has one, then bundle.json with new digests)
                 under temporary names inside the folder and build the engine that will serve
                 them. Nothing anyone can see has changed yet.
    2. store     One transaction: delete the user's events and cached state, write the audit
                 row (outcome "erased"), point the other workers at the new model_version
                 (`BundleSync`), and last swap the files in (`RedactionPlan.commit`: each old
                 file is kept under a temporary name first; bundle.json goes last).
    3. commit    The transaction commits.
    4. serve     The new engine is swapped in: one reference assignment, which cannot fail.

A failure in step 1 changes nothing. A failure in step 2 or 3 rolls the transaction back and
puts back every file moved so far (`RedactionPlan.rollback`). Either way the service answers
503 (`ErasureFailed`: nothing was erased), records an audit row with outcome "rolled_back"
(when the store takes it) and keeps serving the bundle it served before; asking again redoes
the whole erasure. No reader sees a mix of old and new files: loads wait for the lock, and the
digests in bundle.json refuse a mix to readers that take no lock.

Left open: a crash of the process (not an exception) after some files were swapped in and
before the commit leaves the bundle redacted and the store not erased; asking again then
finishes the job. A commit whose outcome the database never reports (the connection lost
during COMMIT) is treated as failed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.data.dataset import Sequences
from lmrec.errors import LmrecError
from lmrec.integrity import sha256_files
from lmrec.models.artifacts import ARRAYS_FILE, ids_array, read_artifact_meta
from lmrec.models.redaction import kept_entries
from lmrec.serve.bundle import (
    BUNDLE_FILE,
    CONFIG_FILE,
    HISTORIES_FILE,
    USERS_FILE,
    Bundle,
    bundle_files,
    bundle_lock,
    find_rules,
    fsync_dir,
    fsync_file,
    load_bundle,
    read_bundle_meta,
)
from lmrec.serve.engine import Engine
from lmrec.serve.rules import Rules
from lmrec.serve.store.base import DeleteResult, EventStore, StateWriter
from lmrec.serve.sync import POINTER_KEY, SYSTEM_USER, BundleSync

log = logging.getLogger("lmrec.serve")

# the files a redaction replaces, in order (users.parquet too, before bundle.json, when present)
SWAPPED = (ARRAYS_FILE, HISTORIES_FILE, BUNDLE_FILE)
_OLD = ".old"  # suffix of the kept copy of a replaced file, inside the temporary folder


class ErasureFailed(LmrecError):
    """An erasure that failed and was rolled back: nothing was erased (HTTP 503)."""


@dataclass(frozen=True)
class Forgotten:
    """What `Service.forget` removed."""

    user: Any  # public id
    events_deleted: int
    audit_id: int
    in_training_data: bool  # the served bundle held the user's training data before this
    redacted_from_model: bool  # ... and the bundle served now no longer does
    model_version: str  # the bundle version served after the erasure


# --- the bundle on disk ----------------------------------------------------------------------
@dataclass(frozen=True)
class Redaction:
    """What `redact_bundle` did: the bundle.json now on disk and the users redacted now."""

    meta: dict[str, Any]
    users: int  # 0 when none was in the training data or all were redacted before

    @property
    def model_version(self) -> str:
        return str(self.meta["model_version"])


@dataclass
class RedactionPlan:
    """A redaction prepared in `tmp` (a temporary folder inside `folder`), not yet visible.

    `bundle` is the redacted bundle as it will be served, `meta` its bundle.json, `users` the
    number of users redacted now: 0 when there is nothing to write, and `bundle` is then the
    bundle on disk as it is. `base_version` is the model_version on disk before."""

    folder: Path
    tmp: Path
    meta: dict[str, Any]
    bundle: Bundle
    users: int
    base_version: str
    moved: list[str] = field(default_factory=list)
    swapped: tuple[str, ...] = SWAPPED  # the files `commit` replaces, in order

    def commit(self) -> None:
        """Swap the new files in, bundle.json last, keeping each old file in `tmp` first (a
        hard link, or a copy where the file system has none) so that `rollback` can put it
        back."""
        if not self.users:
            return
        for name in self.swapped:
            _keep(self.folder / name, self.tmp / (name + _OLD))
        for name in self.swapped:
            os.replace(self.tmp / name, self.folder / name)
            self.moved.append(name)
        fsync_dir(self.folder)

    def rollback(self) -> None:
        """Put back the files `commit` replaced so far, last first."""
        while self.moved:
            name = self.moved[-1]
            os.replace(self.tmp / (name + _OLD), self.folder / name)
            self.moved.pop()
        fsync_dir(self.folder)


@contextmanager
def redaction(folder: str | Path, users: Sequence[Any]) -> Iterator[RedactionPlan]:
    """Prepare the redaction of training users (external ids; others are ignored) in the
    bundle at `folder`, holding the folder's lock exclusively until the block ends; the block
    calls `plan.commit()` to make it visible. When the block raises, the files it swapped in
    are put back; the temporary files always go."""
    folder = Path(folder)
    read_bundle_meta(folder)  # refuse a folder that is not a bundle before touching it
    with bundle_lock(folder):
        tmp = Path(tempfile.mkdtemp(prefix=".redact-", dir=folder))
        plan: RedactionPlan | None = None
        keep_tmp = False
        try:
            plan = _prepare(folder, tmp, users)
            yield plan
        except BaseException:
            if plan is not None and plan.moved:
                try:
                    plan.rollback()
                except OSError:  # the folder is now a mix that the digests will refuse
                    keep_tmp = True  # it holds the old files
                    log.critical("could not put back the files of bundle %s after a failed "
                                 "redaction; restore them from %s", folder, tmp)
                    raise
            raise
        finally:
            if not keep_tmp:
                shutil.rmtree(tmp, ignore_errors=True)


def redact_bundle(folder: str | Path, users: Sequence[Any]) -> Redaction:
    """Forget training users in the bundle at `folder` (external ids; others are ignored).

    Their histories.npz row and seen items are emptied and their per-user learned rows zeroed
    (`Recommender.redact_users`); `redacted` marks them; arrays.npz keeps the precision it was
    saved in (`write_bundle(quantize=...)`). The changed files are written in a
    temporary folder inside `folder`, flushed to disk and moved over the old ones with
    `os.replace`, then bundle.json (new digests and model_version, `redactions` counted up).
    Holds the folder's lock, and reads the files again under it, so that concurrent erasures
    (threads or worker processes) compose.
    """
    with redaction(folder, users) as plan:
        plan.commit()
    return Redaction(plan.meta, plan.users)


def _prepare(folder: Path, tmp: Path, users: Sequence[Any]) -> RedactionPlan:
    """Load the bundle, redact `users` in memory and write the changed files into `tmp`."""
    bundle = load_bundle(folder)  # under the exclusive lock: what is on disk now, verified
    model, meta = bundle.model, bundle.meta
    n_users = len(model.users_)
    redacted = (np.array(bundle.redacted, dtype=bool) if bundle.redacted is not None
                else np.zeros(n_users, dtype=bool))
    idx = model.users_.index(list(users)) if len(users) else np.empty(0, np.int64)
    idx = np.unique(idx[idx >= 0])
    idx = idx[~redacted[idx]]
    if idx.size == 0:
        return RedactionPlan(folder, tmp, meta, bundle, 0, bundle.model_version)
    model.redact_users(idx)
    h = bundle.histories
    indptr, keep = kept_entries(h.indptr, idx)
    seqs = Sequences(indptr, h.items[keep], h.events[keep], h.timestamps[keep], h.event_types)
    redacted[idx] = True
    # in the precision the bundle's arrays were saved in (a quantized bundle stays so); its
    # config.json is not used unless what it records of the arrays changed (it cannot: the
    # redaction keeps every array's shape)
    saved = read_artifact_meta(folder)
    model.save(tmp, precision=str(saved.get("array_precision", "fp32")))
    config_changed = (read_artifact_meta(tmp).get("quantized_arrays")
                      != saved.get("quantized_arrays"))
    np.savez(tmp / HISTORIES_FILE, allow_pickle=False, indptr=seqs.indptr, items=seqs.items,
             events=seqs.events, timestamps=seqs.timestamps,
             event_types=np.asarray(seqs.event_types, dtype=np.str_),
             user_ids=ids_array(model.users_), item_ids=ids_array(model.items_),
             redacted=redacted)
    users_table = bundle.user_table
    if users_table is not None:  # the attributes go too; the id stays, as in the vocabulary
        users_table = blank_rows(users_table, redacted)
        users_table.write_parquet(tmp / USERS_FILE)
    changed = (ARRAYS_FILE, HISTORIES_FILE, *((USERS_FILE,) if users_table is not None else ()),
               *((CONFIG_FILE,) if config_changed else ()))
    replaced = {name: tmp / name for name in changed}
    for path in replaced.values():
        fsync_file(path)
    digest, files = sha256_files(bundle_files(folder, meta.get("index"), replaced))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(meta["created_at"]))
    meta = {**meta, "model_version": f"{meta['model']}-{stamp}-{digest[:12]}",
            "content_sha256": digest, "files": files,
            "redactions": int(meta.get("redactions", 0)) + int(idx.size),
            "redacted_at": time.time()}
    (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    fsync_file(tmp / BUNDLE_FILE)
    new = Bundle(folder, meta, model, bundle.items, seqs, bundle.index, redacted, users_table)
    return RedactionPlan(folder, tmp, meta, new, int(idx.size), bundle.model_version,
                         swapped=(*changed, BUNDLE_FILE))


def blank_rows(table: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """`table` with every column but the user id null in the rows marked by `rows` (bool)."""
    gone = pl.Series(rows.astype(bool))
    return table.with_columns(pl.when(gone).then(None).otherwise(pl.col(c)).alias(c)
                              for c in table.columns if c != C.USER)


def _keep(path: Path, copy: Path) -> None:
    try:
        os.link(path, copy)
    except OSError:
        shutil.copy2(path, copy)


# --- the service -------------------------------------------------------------------------
def erase_user(served: Engine, store: EventStore, raw_user: Any, *, sync: BundleSync | None,
               rules_path: Path | None) -> tuple[Engine, Forgotten]:
    """`Service.forget` for the engine `served` now: the engine to serve afterwards (`served`
    itself when the bundle does not hold the user) and what was removed. The caller holds the
    service's reload lock when the bundle may hold the user (so that the bundle redacted is
    the one served) and serves the returned engine before answering. ErasureFailed, with an
    audit row, when it failed and nothing was erased."""
    key, public, u = served.user_key(raw_user)
    if u < 0:  # nothing in the bundle: one store transaction is all there is
        deleted = store.delete_user(key)
        return served, Forgotten(public, deleted.events, deleted.audit_id, False, False,
                                 served.model_version)
    try:
        engine, deleted = _erase(served, store, key, sync, rules_path)
    except Exception as exc:
        audit = _record_failure(store)
        # no user id in the log: it would outlive the erasure
        log.error("an erasure failed and was rolled back (audit id %s): %s", audit, exc,
                  exc_info=exc)
        raise ErasureFailed("the erasure failed and was rolled back: nothing was erased; "
                            "try again") from None
    if engine is not served:
        log.info("serving bundle %s after an erasure (was %s)", engine.model_version,
                 served.model_version)
    return engine, Forgotten(public, deleted.events, deleted.audit_id, True,
                             engine.user_key(key)[2] < 0, engine.model_version)


def _erase(served: Engine, store: EventStore, key: str, sync: BundleSync | None,
           rules_path: Path | None) -> tuple[Engine, DeleteResult]:
    """Steps 1 to 3: the engine to serve afterwards and the store's DeleteResult."""
    path = served.bundle.path
    with redaction(path, [key]) as plan:
        engine = Engine(plan.bundle, _rules(served, plan, rules_path))
        pointer = (sync.pointer(path, plan.meta["model_version"])
                   if sync is not None and plan.users else None)

        def swap(tx: StateWriter) -> None:
            if pointer is not None:  # the other workers follow once this commits
                tx.put_state(SYSTEM_USER, POINTER_KEY, pointer)
            plan.commit()  # last: only the commit is left after it

        deleted = store.delete_user(key, before_commit=swap)
    return engine, deleted


def _rules(served: Engine, plan: RedactionPlan, rules_path: Path | None) -> Rules | None:
    """The served rules, or the rules file's when the bundle on disk was another version
    (replaced since it was loaded), as a reload would read them."""
    if plan.base_version == served.model_version:
        return served.rules
    rules_file = rules_path or find_rules(plan.folder)
    return Rules.from_file(rules_file) if rules_file else None


def _record_failure(store: EventStore) -> int | None:
    try:
        return store.record_failed_erasure()
    except Exception as exc:  # the store may be the reason of the failure
        log.error("could not record the failed erasure in the audit table: %s", exc)
        return None
