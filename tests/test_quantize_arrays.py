"""A model's large arrays saved in reduced precision (`Recommender.save(precision=...)`,
`write_bundle(quantize=...)`, `lmrec.models.precision`): the encoding's error bounds, which
arrays it takes, bundles that shrink and serve (nearly) the same lists, the formats before it,
integrity digests and erasure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import run
from lmrec.data.dataset import Dataset
from lmrec.integrity import IntegrityError
from lmrec.models import create_model, load_model
from lmrec.models import precision as P
from lmrec.models.base import Recommender
from lmrec.prepare import prepare
from lmrec.serve.bundle import load_bundle, verify_bundle, write_bundle
from lmrec.serve.engine import Engine, Query
from lmrec.serve.erasure import redact_bundle
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions
from test_models_contract import TINY_PARAMS

K = 10
# Share of users whose served top 10 is the same set as the float32 bundle's (ALS, 64 factors,
# on `latent`; measured 300 users: fp16 .993, int8 .93; mean overlap fp16 .9993, int8 .992),
# with room for another BLAS
SAME_TOP10 = {"fp16": 0.97, "int8": 0.85}
MEAN_OVERLAP = {"fp16": 0.995, "int8": 0.98}


def latent_dataset(n_users: int = 1500, n_items: int = 1400, per_user: int = 25,
                   seed: int = 0) -> Dataset:
    """Events drawn from a rank-8 taste model with Zipf popularity: ALS's 64 factors for its
    ~1,300 items and 1,500 users are arrays of more than 65,536 values."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(n_users, 8)), rng.normal(size=(n_items, 8))
    logits = u @ v.T + np.log(rng.zipf(1.5, n_items).clip(max=50))[None, :]
    rows = []
    for user in range(n_users):
        p = np.exp(logits[user] - logits[user].max())
        rows += [(user, int(i)) for i in rng.choice(n_items, per_user, replace=False,
                                                     p=p / p.sum())]
    events = pl.DataFrame(rows, schema=["user", "item"], orient="row")
    return prepare(events, name="latent").dataset


@pytest.fixture(scope="module")
def latent() -> tuple[Dataset, Recommender]:
    ds = latent_dataset()
    return ds, create_model("als", {}).fit(ds, TrainingOptions(rng=0))


@pytest.fixture(scope="module")
def bundles(latent: tuple[Dataset, Recommender], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Path]:
    ds, model = latent
    root = tmp_path_factory.mktemp("quantized-arrays")
    return {q: write_bundle(model, ds, root / q, quantize=q) for q in ("none", "fp16", "int8")}


def raw_arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def served_top(folder: Path, users: range) -> list[set[object]]:
    engine = Engine(load_bundle(folder))
    out = []
    for user in users:
        hist, n_live = engine.history(user, [])
        items, _ = engine.recommend(user, hist, n_live, Query(k=K))
        out.append({s.item for s in items})
    return out


# --- the encoding ------------------------------------------------------------------------
def test_int8_codes_come_back_within_half_a_scale_step() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 64)) * rng.lognormal(0, 2, (300, 1))).astype(np.float32)
    x[7] = 0.0  # a row of zeros: scale 0, decoded exactly
    x[8, 3] = -1e6  # one large value sets its row's scale
    codes, scale = P.quantize_int8(x)
    assert codes.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (300,)
    assert np.abs(codes.astype(int)).max() == 127 and codes.min() >= -127
    np.testing.assert_allclose(scale, np.abs(x).max(axis=1) / 127, rtol=1e-6)
    back = P.dequantize_int8(codes, scale)
    assert back.dtype == np.float32 and back.shape == x.shape
    err = np.abs(back.astype(np.float64) - x).max(axis=1)
    assert (err <= scale.astype(np.float64) / 2 * (1 + 1e-5)).all()
    assert scale[7] == 0 and (back[7] == 0).all()
    # a 3-d array: rows along the last axis
    y = rng.standard_normal((4, 50, 16)).astype(np.float32)
    codes, scale = P.quantize_int8(y)
    assert scale.shape == (200,)
    err = np.abs(P.dequantize_int8(codes, scale) - y).reshape(200, 16).max(axis=1)
    assert (err <= scale / 2 * (1 + 1e-5)).all()


def test_which_arrays_are_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1024, 64)).astype(np.float32)  # 65,536 values: the threshold
    arrays = {
        "model.V": big, "model.small": big[:1023], "model.flat": big.ravel(),
        "model.f64": big.astype(np.float64), "model.ints": big.astype(np.int32),
        "model.nan": np.where(big > 3, np.nan, big).astype(np.float32),
        "model.huge": big * np.float32(1e5),  # beyond float16, still int8
        "popularity": big, "seen.indptr": np.arange(5),
    }
    out, encoded = P.encode_arrays(arrays, "int8")
    assert encoded == ["model.V", "model.huge"]
    assert out["model.V"].dtype == np.int8 and out["model.V@scale"].shape == (1024,)
    assert all(out[k] is arrays[k] for k in arrays if k not in encoded)
    out, encoded = P.encode_arrays(arrays, "fp16")
    assert encoded == ["model.V"] and out["model.V"].dtype == np.float16
    assert P.encode_arrays(arrays, "fp32") == (arrays, [])
    meta = {"array_precision": "fp16", "quantized_arrays": encoded}
    back = P.decode_arrays(out, meta)
    assert back["model.V"].dtype == np.float32
    np.testing.assert_allclose(back["model.V"], big, rtol=2**-11, atol=2**-24)  # subnormals
    monkeypatch.setattr(P, "MIN_ELEMENTS", 10)
    assert "model.small" in P.encode_arrays(arrays, "fp16")[1]
    with pytest.raises(Exception, match="unknown value"):
        P.encode_arrays(arrays, "int4")


# --- without quantize nothing changes ----------------------------------------------------------
@pytest.mark.parametrize("name", ["als", "sasrec"])
def test_save_and_load_without_precision_is_bit_identical(name: str, tmp_path: Path) -> None:
    ds = planted_dataset()
    model = create_model(name, TINY_PARAMS[name]).fit(ds, TrainingOptions(rng=0))
    folder = model.save(tmp_path / name)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format_version"] == 1
    assert "array_precision" not in meta and "quantized_arrays" not in meta
    saved = raw_arrays(folder)
    assert not any("@" in k for k in saved)
    for key, value in model._arrays().items():
        assert saved[f"model.{key}"].dtype == value.dtype
        assert np.array_equal(saved[f"model.{key}"], value)
    loaded = load_model(folder)
    for key, value in loaded._arrays().items():
        want = model._arrays()[key]
        assert value.dtype == want.dtype and np.array_equal(value, want), key
    users = np.arange(len(ds.users))
    assert np.array_equal(loaded.score(users), model.score(users))


def test_an_fp32_bundle_is_the_format_before(bundles: dict[str, Path]) -> None:
    """Bundles written without quantize (and so every bundle written before it) record no
    precision, hold float32 arrays and load as before."""
    folder = bundles["none"]
    assert "array_precision" not in json.loads((folder / "bundle.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1 and "quantized_arrays" not in config
    assert raw_arrays(folder)["model.V"].dtype == np.float32
    assert load_bundle(folder).model.V_.dtype == np.float32


# --- quantized bundles ---------------------------------------------------------------------
@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_a_quantized_bundle_is_smaller_and_loads_as_float32(
        quantize: str, latent: tuple[Dataset, Recommender], bundles: dict[str, Path]) -> None:
    _, model = latent
    folder = bundles[quantize]
    assert json.loads((folder / "bundle.json").read_text())["array_precision"] == quantize
    config = json.loads((folder / "config.json").read_text())
    assert (config["format_version"], config["array_precision"]) == (2, quantize)
    assert config["quantized_arrays"] == ["model.U", "model.V"]
    raw = raw_arrays(folder)
    assert raw["model.V"].dtype == (np.float16 if quantize == "fp16" else np.int8)
    assert ("model.V@scale" in raw) == (quantize == "int8")
    size = (folder / "arrays.npz").stat().st_size
    base = (bundles["none"] / "arrays.npz").stat().st_size
    # the factors are ~85% of the file: fp16 measured .60 of it, int8 .42
    assert size < base * {"fp16": 0.65, "int8": 0.45}[quantize]
    verify_bundle(folder)  # the digests cover the quantized files
    loaded = load_bundle(folder).model
    for name in ("U_", "V_"):
        got, want = getattr(loaded, name), getattr(model, name)
        assert got.dtype == np.float32 and got.shape == want.shape
        if quantize == "int8":
            scale = np.abs(want).max(axis=1) / 127
            assert (np.abs(got - want).max(axis=1) <= scale / 2 * (1 + 1e-5)).all()
        else:
            np.testing.assert_allclose(got, want, rtol=2**-11, atol=1e-7)


@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_a_quantized_als_bundle_serves_nearly_the_same_top_10(
        quantize: str, bundles: dict[str, Path]) -> None:
    users = range(0, 1500, 5)
    base = served_top(bundles["none"], users)
    got = served_top(bundles[quantize], users)
    same = np.mean([a == b for a, b in zip(got, base, strict=True)])
    overlap = np.mean([len(a & b) / K for a, b in zip(got, base, strict=True)])
    assert same >= SAME_TOP10[quantize], same
    assert overlap >= MEAN_OVERLAP[quantize], overlap


def test_train_quantize_from_the_cli(latent: tuple[Dataset, Recommender], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = latent[0].save(tmp_path / "data")
    out = tmp_path / "bundle"
    code, _, err = run(["train", "--data", str(data), "--model", "als", "--quantize", "fp16",
                        "--out", str(out)], capsys)
    assert code == 0, err
    assert json.loads((out / "bundle.json").read_text())["array_precision"] == "fp16"
    assert raw_arrays(out)["model.V"].dtype == np.float16
    code, stdout, err = run(["recommend", str(out), "--user", "0", "--k", "3", "--json"],
                            capsys)
    assert code == 0, err
    assert len(json.loads(stdout)["items"]) == 3


def test_pq_quantizes_the_arrays_as_int8(latent: tuple[Dataset, Recommender],
                                          tmp_path: Path) -> None:
    ds, model = latent
    folder = write_bundle(model, ds, tmp_path / "pq", quantize="pq")
    assert json.loads((folder / "config.json").read_text())["array_precision"] == "int8"
    assert raw_arrays(folder)["model.V"].dtype == np.int8


def test_a_model_without_embeddings_is_quantized_too(tmp_path: Path) -> None:
    """write_bundle quantizes any model's large arrays (EASE's item-item B here)."""
    ds = latent_dataset(n_users=600, n_items=400, per_user=15)
    model = create_model("ease", {}).fit(ds, TrainingOptions(rng=0))
    assert model.B_.size >= P.MIN_ELEMENTS
    folder = write_bundle(model, ds, tmp_path / "ease", quantize="int8")
    assert raw_arrays(folder)["model.B"].dtype == np.int8
    loaded = load_bundle(folder).model
    top = model.recommend_idx(np.arange(len(ds.users)), K)[0]
    got = loaded.recommend_idx(np.arange(len(ds.users)), K)[0]
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(top, got, strict=True)])
    assert overlap >= 0.97, overlap  # measured .99


@pytest.mark.parametrize("name", ["als", "bpr", "ease", "neumf", "two-tower", "gru4rec",
                                  "sasrec", "multvae"])
def test_every_kind_of_model_loads_its_quantized_arrays(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the size threshold lowered, the tiny models' tables, factors and layers are
    encoded; each model loads them through its own code and scores about as before."""
    monkeypatch.setattr(P, "MIN_ELEMENTS", 32)
    ds = planted_dataset()
    model = create_model(name, TINY_PARAMS.get(name)).fit(ds, TrainingOptions(rng=0))
    users = np.arange(len(ds.users))
    before = model.score(users)
    for precision in ("fp16", "int8"):
        folder = model.save(tmp_path / precision, precision=precision)
        assert json.loads((folder / "config.json").read_text())["quantized_arrays"]
        after = load_model(folder).score(users)
        assert after.shape == before.shape
        corr = np.corrcoef(before.ravel(), after.ravel())[0, 1]
        assert corr > 0.99, (precision, corr)


def test_damaged_quantized_arrays_are_refused(latent: tuple[Dataset, Recommender],
                                              tmp_path: Path) -> None:
    _, model = latent
    folder = model.save(tmp_path / "m", precision="int8")
    raw = raw_arrays(folder)
    del raw["model.V@scale"]
    np.savez(folder / "arrays.npz", allow_pickle=False, **raw)
    with pytest.raises(IntegrityError, match=r"model\.V@scale"):
        load_model(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "array_precision": "int4"}))
    with pytest.raises(IntegrityError, match="int4"):
        load_model(folder)


# --- erasure -------------------------------------------------------------------------------
@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_a_quantized_bundle_can_be_redacted_and_stays_quantized(
        quantize: str, latent: tuple[Dataset, Recommender], tmp_path: Path) -> None:
    ds, model = latent
    folder = write_bundle(model, ds, tmp_path / quantize, quantize=quantize)
    config_before = (folder / "config.json").read_bytes()
    before = load_bundle(folder).model
    gone = [ds.users.to_python(3), ds.users.to_python(40)]
    result = redact_bundle(folder, gone)
    assert result.users == 2
    verify_bundle(folder)  # new digests for the rewritten arrays
    assert (folder / "config.json").read_bytes() == config_before
    assert json.loads((folder / "bundle.json").read_text())["array_precision"] == quantize
    raw = raw_arrays(folder)
    assert raw["model.U"].dtype == raw["model.V"].dtype == (
        np.float16 if quantize == "fp16" else np.int8)
    after = load_bundle(folder)
    assert after.redacted is not None and after.redacted[[3, 40]].all()
    assert (after.model.U_[[3, 40]] == 0).all()
    keep = np.setdiff1d(np.arange(len(ds.users)), [3, 40])
    # encoding decoded values again gives the same values (int8: up to a float32 rounding)
    np.testing.assert_allclose(after.model.U_[keep], before.U_[keep], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after.model.V_, before.V_, rtol=1e-6, atol=1e-7)
