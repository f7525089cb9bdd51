"""Saving a model's large arrays in reduced precision (`Recommender.save(precision=...)`,
`write_bundle(quantize=...)`), restored to float32 on load.

Which arrays: the model's own (`model.*` in arrays.npz; never the vocabularies, seen items or
popularity) that are float32, have at least 2 dimensions and at least `MIN_ELEMENTS` elements,
and hold only finite values: the tables whose size grows with the catalogue or the users (item
and user factors, embedding tables, EASE's item-item B). Smaller network weights (d x d layers,
biases, positional embeddings) stay float32: they are a negligible share of the file and a
sensitive one for the network's output. float64 arrays stay as they are (restoring them as
float32 would change what the model computes with), and so does an array that float16 cannot
hold (a magnitude over 65504).

    fp16   the array as float16 under its own key
    int8   int8 codes under its own key and, under `key + SCALE_SUFFIX`, one float32 scale per
           row (the last axis is the row): symmetric, scale = max|row| / 127, code =
           round(value / scale); a row of zeros has scale 0. Each value comes back within
           scale / 2 of the one saved.

config.json records `array_precision` and `quantized_arrays` (the keys encoded) and says
format_version 2, which lmrec before this reads as "train the model again" rather than using
int8 codes as factors; models saved in full precision write version 1 exactly as before.
Loading decodes the listed arrays to float32 before the model sees them, so model code does
not change, and the memory a loaded model takes is the same; only the files shrink.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lmrec.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")
MIN_ELEMENTS = 65_536
SCALE_SUFFIX = "@scale"  # '@' cannot appear in an attribute name, so no model array has it
MODEL_PREFIX = "model."
_FP16_MAX = float(np.finfo(np.float16).max)


def check_precision(precision: str) -> str:
    """`precision` as one of PRECISIONS ("none" means fp32); ConfigError otherwise."""
    value = "fp32" if precision == "none" else precision
    if value not in PRECISIONS:
        raise ConfigError(f"array precision: unknown value {precision!r} "
                          f"(known: {', '.join(PRECISIONS)})")
    return value


def precision_for(quantize: str) -> str:
    """The array precision of a bundle written with `--quantize` (pq: int8)."""
    return {"none": "fp32", "fp16": "fp16", "int8": "int8", "pq": "int8"}[quantize]


def quantizable(key: str, value: np.ndarray) -> bool:
    """Whether `save` stores this array in reduced precision (see the module's docstring)."""
    return (key.startswith(MODEL_PREFIX) and isinstance(value, np.ndarray)
            and value.dtype == np.float32 and value.ndim >= 2 and value.size >= MIN_ELEMENTS
            and bool(np.isfinite(value).all()))


def quantize_int8(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes of `value`'s shape, float32 scale per row: `value.shape[:-1]` flattened)."""
    rows = np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])
    scale = (np.abs(rows).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1)).astype(np.float64)
    codes = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
    return codes.reshape(value.shape), scale


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 values of int8 `codes` with per-row `scale` (the inverse of `quantize_int8`)."""
    if codes.dtype != np.int8 or codes.ndim < 2:
        raise ValueError(f"int8 codes expected, found {codes.dtype} with shape {codes.shape}")
    rows = codes.reshape(-1, codes.shape[-1])
    if scale.dtype != np.float32 or scale.shape != (rows.shape[0],):
        raise ValueError(f"scale of shape {scale.shape} ({scale.dtype}) for {rows.shape[0]} "
                         "rows of codes")
    return (rows.astype(np.float32) * scale[:, None]).reshape(codes.shape)


def encode_arrays(arrays: Mapping[str, np.ndarray], precision: str
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the arrays to write, the keys stored in reduced precision); `arrays` unchanged."""
    precision = check_precision(precision)
    out = dict(arrays)
    if precision == "fp32":
        return out, []
    encoded = []
    for key, value in arrays.items():
        if not quantizable(key, value):
            continue
        if precision == "fp16":
            if float(np.abs(value).max()) > _FP16_MAX:
                continue
            out[key] = value.astype(np.float16)
        else:
            out[key], out[key + SCALE_SUFFIX] = quantize_int8(value)
        encoded.append(key)
    return out, encoded


def decode_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
    """The arrays of a saved model with the ones config.json (`meta`) lists as stored in
    reduced precision decoded to float32; ValueError when they are not what it says."""
    out = dict(arrays)
    precision = str(meta.get("array_precision", "fp32"))
    if precision not in PRECISIONS:
        raise ValueError(f"array_precision {precision!r} unknown (known: {', '.join(PRECISIONS)})")
    keys = list(meta.get("quantized_arrays") or [])
    if precision == "fp32" and keys:
        raise ValueError("quantized_arrays listed for array_precision fp32")
    for key in keys:
        if key not in out:
            raise ValueError(f"array {key!r} (listed as {precision}) missing")
        value = out[key]
        if precision == "fp16":
            if value.dtype != np.float16:
                raise ValueError(f"array {key!r} is {value.dtype}, expected float16")
            out[key] = value.astype(np.float32)
        else:
            scale = out.pop(key + SCALE_SUFFIX, None)
            if scale is None:
                raise ValueError(f"array {key + SCALE_SUFFIX!r} missing")
            out[key] = dequantize_int8(value, scale)
    stray = [k for k in out if SCALE_SUFFIX in k]
    if stray:
        raise ValueError(f"array(s) {stray} not listed in config.json's quantized_arrays")
    return out
