"""Checking that saved files are the files that were written, and reading them with errors that
name the file.

A bundle's bundle.json (`lmrec.serve.bundle`) is the manifest of its folder: `files` maps each
file's name relative to the folder ("arrays.npz", "index/hnsw.faiss") to the sha256 of its
bytes, and `content_sha256` is one sha256 over all of them (name, then bytes, in a fixed order),
from which the model_version is made. Loaders check the per-file digests before reading
anything (`verify_manifest`), so a truncated or altered file is reported by name rather than
failing somewhere inside numpy, zipfile or Parquet; bundles written before per-file digests
have only `content_sha256`, which tells that something changed but not what.

Whatever a file's damage, the error is an `IntegrityError` (an InputError, so the CLI prints
one line and exits with code 2): it names the file and says what is wrong with it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import InputError, Location
from lmrec.jsonfile import read_json

MANIFEST = "bundle.json"
_CHUNK = 1 << 20


class IntegrityError(InputError):
    """A saved file that is missing, damaged or not the one its manifest records. `file` is its
    name relative to the folder; `reason` says what is wrong without any path (safe to show to
    an HTTP client)."""

    def __init__(self, folder: Path, file: str, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(reason, location=Location(str(Path(folder) / file)))

    @property
    def public(self) -> str:
        """The message without the folder: `file: reason`."""
        return f"{self.file}: {self.reason}"


def sha256_files(files: Iterable[tuple[str, Path]]) -> tuple[str, dict[str, str]]:
    """(one sha256 over all, {name: sha256 of its bytes}) of files given as (name relative to
    the folder, where the bytes are now: the file itself, or a temporary file about to take its
    place). The combined digest hashes each name, then its bytes, in the order given."""
    total = hashlib.sha256()
    each: dict[str, str] = {}
    for name, path in files:
        h = hashlib.sha256()
        total.update(name.encode())
        with Path(path).open("rb") as f:
            while chunk := f.read(_CHUNK):
                total.update(chunk)
                h.update(chunk)
        each[name] = h.hexdigest()
    return total.hexdigest(), each


def verify_manifest(folder: str | Path, files: Mapping[str, Any] | None = None) -> bool:
    """Check the files of `folder` against the per-file sha256 digests of its manifest (`files`,
    or bundle.json's when not given); IntegrityError names the first one that is missing or
    differs. False when there is nothing to check (no manifest, or one without per-file
    digests), True when every file matched."""
    folder = Path(folder)
    if files is None:
        if not (folder / MANIFEST).is_file():
            return False
        meta = read_json(folder / MANIFEST)
        files = meta.get("files") if isinstance(meta, dict) else None
    if not files:
        return False
    if not isinstance(files, Mapping):
        raise IntegrityError(folder, MANIFEST, "`files` must map file names to sha256 digests")
    for name, digest in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise IntegrityError(folder, MANIFEST, f"`files` names {name!r}, which is not "
                                 "inside the folder")
        path = folder / name
        if not path.is_file():
            raise IntegrityError(folder, name, f"missing (listed in {MANIFEST})")
        try:
            with path.open("rb") as f:
                found = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise IntegrityError(folder, name, f"cannot be read ({exc.strerror or exc})") from exc
        if found != digest:
            raise IntegrityError(folder, name, f"damaged or replaced: its sha256 does not match "
                                 f"the one recorded in {MANIFEST}")
    return True


def read_npz(path: Path, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickle), read now; IntegrityError naming the file when it
    is truncated, fails its CRC check, holds something other than arrays or lacks a required
    array."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise IntegrityError(path.parent, path.name, "missing") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise IntegrityError(path.parent, path.name,
                             f"damaged: cannot be read as arrays ({one_line(exc)})") from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise IntegrityError(path.parent, path.name, f"damaged: array(s) {missing} missing")
    return arrays


def read_failure(path: Path, exc: BaseException) -> IntegrityError:
    """The IntegrityError for a file that a reader (Parquet, faiss) could not read."""
    path = Path(path)
    return IntegrityError(path.parent, path.name, f"damaged: cannot be read ({one_line(exc)})")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
