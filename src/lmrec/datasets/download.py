"""Download and unpack a dataset archive into the cache, verifying a checksum first.

Known checksums are checked before anything is unpacked. An archive without a published
checksum is trusted on first use: its SHA-256 is written next to it (`<zip>.sha256`) and every
later use verifies against that record.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from lmrec.errors import InputError, Location

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None if unknown)
_CHUNK = 1 << 16


def default_cache_dir() -> Path:
    """`LMREC_CACHE_DIR`, else ~/.cache/lmrec."""
    env = os.environ.get("LMREC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmrec"


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch `url` to `dest` (atomically, via a .part file) and verify it.

    With neither checksum given the file is trusted on first use (see `verify_archive`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise InputError(
            f"cannot download {url} ({reason})",
            location=Location(str(dest)),
            expected="a network connection; or download the file yourself and pass its "
            "folder with --from",
        ) from exc
    part.replace(dest)
    verify_archive(dest, md5=md5, sha256=sha256)
    return dest


def verify_archive(path: Path, *, md5: str | None = None, sha256: str | None = None) -> None:
    """Check `path` against the given checksums, or against its trust-on-first-use record.

    A mismatch deletes the file (it is corrupt or not the expected release) and raises.
    """
    record = path.with_name(path.name + ".sha256")
    expected: list[tuple[str, str, str]] = []  # (algorithm, digest, where it came from)
    if md5:
        expected.append(("md5", md5.lower(), "the published checksum"))
    if sha256:
        expected.append(("sha256", sha256.lower(), "the published checksum"))
    if not expected and record.is_file():
        stored = record.read_text().split()
        if stored:
            expected.append(("sha256", stored[0].lower(), f"the record {record.name}"))
    for algorithm, digest, origin in expected:
        found = file_digest(path, algorithm)
        if found != digest:
            path.unlink(missing_ok=True)
            raise InputError(
                f"checksum mismatch: {algorithm} does not match {origin}; the file was "
                "deleted (a broken download, or the server changed the file)",
                location=Location(str(path)),
                expected=f"{algorithm} {digest}",
                found=found,
            )
    if not expected:
        # no published checksum: remember this one so a later corruption is caught
        record.write_text(f"{file_digest(path, 'sha256')}  {path.name}\n")


def unpack_zip(archive: Path, target: Path, needed: tuple[str, ...]) -> Path:
    """Unpack `archive` and move the folder holding every `needed` file to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as tmp:
        tmp_path = Path(tmp)
        try:
            with zipfile.ZipFile(archive) as zf:
                root = tmp_path.resolve()
                for member in zf.namelist():
                    # refuse members that would land outside the folder ("zip slip")
                    if not (root / member).resolve().is_relative_to(root):
                        raise InputError(f"archive member {member!r} points outside the folder",
                                         location=Location(str(archive)))
                zf.extractall(tmp_path)
        except zipfile.BadZipFile as exc:
            archive.unlink(missing_ok=True)
            raise InputError(f"not a valid zip archive ({exc}); the file was deleted",
                             location=Location(str(archive))) from exc
        found = _folder_with(tmp_path, needed)
        if found is None:
            raise InputError(
                f"the archive does not contain the files {list(needed)}",
                location=Location(str(archive)),
            )
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(found), str(target))
    return target


def _folder_with(root: Path, needed: tuple[str, ...]) -> Path | None:
    candidates = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    for folder in candidates:
        if all((folder / n).is_file() for n in needed):
            return folder
    return None
