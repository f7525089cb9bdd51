"""The bad-input matrix: every CLI command x every class of bad input.

Each cell must end with exit code 2, exactly one line on stderr that names the place (the
file, line or column, or the option), no traceback anywhere, and nothing written to the
command's output folder. Cells run in process (fast); a few at the end run `lmrec` as a real
subprocess, as a user would.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers_cli import CliProcess, cli_processes, one_error_line
from lmrec.cli import main
from lmrec.train.options import TrainingOptions

# --- the world the cells run in -------------------------------------------------------------


@dataclass(frozen=True)
class World:
    root: Path
    csv: Path  # a good event file
    data: Path  # a prepared dataset folder
    model: Path  # a bundle written by `lmrec train`
    bad_data: Path  # a dataset folder with a corrupt events table
    bad_model: Path  # a bundle whose model arrays are corrupt
    file: Path  # an existing plain file (never to be overwritten)
    garbage: Path  # binary junk under a .parquet name
    bad_toml: Path


FILE_TEXT = "keep me\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from lmrec.models import create_model
    from lmrec.prepare import prepare
    from lmrec.serve.bundle import write_bundle

    root = tmp_path_factory.mktemp("bad-input")
    rows = ["user,item,ts"]
    for u in range(20):
        rows += [f"u{u},i{(u * 7 + j) % 30},{1_700_000_000 + 10 * u + j}" for j in range(8)]
    csv = root / "events.csv"
    csv.write_text("\n".join(rows) + "\n")
    prepared = prepare(str(csv))
    data = prepared.save(root / "data")
    model = create_model("popularity").fit(prepared.dataset, TrainingOptions(rng=0))
    bundle = write_bundle(model, prepared.dataset, root / "model")

    bad_data = root / "bad-data"
    prepared.save(bad_data)
    (bad_data / "events.parquet").write_bytes(b"PAR1 this is not parquet at all")
    bad_model = root / "bad-model"
    write_bundle(model, prepared.dataset, bad_model)
    (bad_model / "arrays.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    (bad_model / "config.json").write_text("{not json")

    file = root / "existing.txt"
    file.write_text(FILE_TEXT)
    garbage = root / "garbage.parquet"
    garbage.write_bytes(bytes(range(256)) * 4)
    bad_toml = root / "bad.toml"
    bad_toml.write_text("epochs = = 3\n")
    return World(root, csv, data, bundle, bad_data, bad_model, file, garbage, bad_toml)


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text)
    return path


# --- running the CLI in process ---------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lmrec ARGS`; an escaping exception is reported as a
    traceback with code 1, as the real entry point would print it."""
    import traceback

    import uvicorn

    def no_server(*_: object, **__: object) -> None:
        raise AssertionError("bad input reached uvicorn.run: the server would have started")

    monkeypatch.setattr(uvicorn, "run", no_server)
    monkeypatch.setattr(sys, "argv", ["lmrec", *args])
    escaped = ""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the point is to see it, as the real entry point would show it
        code, escaped = 1, traceback.format_exc()
    captured = capsys.readouterr()
    return code, captured.out, captured.err + escaped


# --- the cells ---------------------------------------------------------------------------------
# args use {csv} {data} {model} {bad_data} {bad_model} {file} {garbage} {bad_toml} {root} {tmp},
# and
# {new}: a fresh path given as the output folder, which must not exist afterwards.
# needle: what the one line must name ({...} filled in the same way).

CELLS: list[tuple[str, list[str], str]] = [
    # data prepare
    ("prepare-missing-file", ["data", "prepare", "--events", "{root}/nope.csv", "--out", "{new}"],
     "{root}/nope.csv"),
    ("prepare-corrupt-file", ["data", "prepare", "--events", "{garbage}", "--out", "{new}"],
     "{garbage}"),
    ("prepare-core-zero", ["data", "prepare", "--events", "{csv}", "--core", "0", "--out",
                           "{new}"], "--core"),
    ("prepare-core-type", ["data", "prepare", "--events", "{csv}", "--core", "abc", "--out",
                           "{new}"], "--core"),
    ("prepare-dedupe-choice", ["data", "prepare", "--events", "{csv}", "--dedupe", "sideways",
                               "--out", "{new}"], "--dedupe"),
    ("prepare-bad-rows-choice", ["data", "prepare", "--events", "{csv}", "--on-bad-rows",
                                 "maybe", "--out", "{new}"], "--on-bad-rows"),
    ("prepare-out-file", ["data", "prepare", "--events", "{csv}", "--out", "{file}"], "--out"),
    ("prepare-out-under-file", ["data", "prepare", "--events", "{csv}", "--out", "{file}/sub"],
     "--out"),
    ("prepare-missing-option", ["data", "prepare", "--events", "{csv}"], "--out"),
    ("prepare-unknown-option", ["data", "prepare", "--events", "{csv}", "--out", "{new}",
                                "--colour", "red"], "--colour"),
    ("prepare-bad-time-value", ["data", "prepare", "--events", "@bad_time.csv", "--time-col",
                                "ts", "--out", "{new}"], "line 3"),
    ("prepare-huge-timestamp", ["data", "prepare", "--events", "@huge_time.csv", "--time-col",
                                "ts", "--out", "{new}"], "line 3"),
    ("prepare-inf-timestamp", ["data", "prepare", "--events", "@inf_time.csv", "--time-col",
                               "ts", "--out", "{new}"], "line 3"),
    ("prepare-jsonl-object-id", ["data", "prepare", "--events", "@object_id.jsonl", "--out",
                                 "{new}"], "line 2"),
    # data inspect
    ("inspect-missing-file", ["data", "inspect", "{root}/nope.csv"], "{root}/nope.csv"),
    ("inspect-corrupt-file", ["data", "inspect", "{garbage}"], "{garbage}"),
    ("inspect-corrupt-dataset", ["data", "inspect", "{bad_data}"], "{bad_data}"),
    ("inspect-unknown-column", ["data", "inspect", "{csv}", "--user-col", "customer"],
     "customer"),
    ("inspect-bad-encoding", ["data", "inspect", "{csv}", "--encoding", "no-such-codec"],
     "'no-such-codec'"),
    # inspect skips and counts bad rows (see below); it fails only when none is left
    ("inspect-only-bad-rows", ["data", "inspect", "@all_bad.csv", "--time-col", "ts"],
     "all_bad.csv"),
    # datasets get
    ("get-missing-source", ["datasets", "get", "movielens-100k", "--from", "{root}/nope",
                            "--out", "{new}"], "{root}/nope"),
    ("get-corrupt-source", ["datasets", "get", "movielens-100k", "--from", "@ml100k_bad",
                            "--out", "{new}"], "u.data"),
    ("get-unknown-name", ["datasets", "get", "movielens-9m", "--out", "{new}"], "movielens-9m"),
    ("get-core-zero", ["datasets", "get", "movielens-100k", "--from", "{root}/nope", "--core",
                       "0", "--out", "{new}"], "--core"),
    ("get-min-rating-nan", ["datasets", "get", "movielens-100k", "--from", "{root}/nope",
                            "--min-rating", "nan", "--out", "{new}"], "--min-rating"),
    ("get-out-file", ["datasets", "get", "movielens-100k", "--from", "{root}/nope", "--out",
                      "{file}"], "--out"),
    ("get-out-under-file", ["datasets", "get", "movielens-100k", "--from", "{root}/nope",
                            "--out", "{file}/sub"], "--out"),
    ("get-cache-dir-file", ["datasets", "get", "movielens-100k", "--cache-dir", "{file}",
                            "--out", "{new}"], "--cache-dir"),
    # train
    ("train-missing-data", ["train", "--data", "{root}/nope", "--model", "popularity", "--out",
                            "{new}"], "{root}/nope"),
    ("train-corrupt-data", ["train", "--data", "{bad_data}", "--model", "popularity", "--out",
                            "{new}"], "{bad_data}"),
    ("train-missing-config", ["train", "--data", "{data}", "--model", "popularity", "--config",
                              "{root}/nope.toml", "--out", "{new}"], "{root}/nope.toml"),
    ("train-corrupt-config", ["train", "--data", "{data}", "--model", "als", "--config",
                              "{bad_toml}", "--out", "{new}"], "{bad_toml}"),
    ("train-config-folder", ["train", "--data", "{data}", "--model", "als", "--config",
                             "{root}", "--out", "{new}"], "{root}"),
    ("train-config-not-table", ["train", "--data", "{data}", "--model", "als", "--config",
                                "@params_not_table.toml", "--out", "{new}"],
     "params_not_table.toml"),
    ("train-missing-rules", ["train", "--data", "{data}", "--model", "popularity", "--rules",
                             "{root}/nope.toml", "--out", "{new}"], "{root}/nope.toml"),
    ("train-corrupt-rules", ["train", "--data", "{data}", "--model", "popularity", "--rules",
                             "{bad_toml}", "--out", "{new}"], "{bad_toml}"),
    ("train-unknown-model", ["train", "--data", "{data}", "--model", "nope", "--out", "{new}"],
     "nope"),
    ("train-param-range", ["train", "--data", "{data}", "--model", "als", "--param",
                           "factors=-3", "--out", "{new}"], "factors"),
    ("train-param-type", ["train", "--data", "{data}", "--model", "als", "--param",
                          "factors=many", "--out", "{new}"], "factors"),
    ("train-seed-negative", ["train", "--data", "{data}", "--model", "popularity", "--seed",
                             "-1", "--out", "{new}"], "--seed"),
    ("train-seed-type", ["train", "--data", "{data}", "--model", "popularity", "--seed", "x",
                         "--out", "{new}"], "--seed"),
    ("train-ann-negative", ["train", "--data", "{data}", "--model", "popularity",
                            "--ann-threshold", "-1", "--out", "{new}"], "--ann-threshold"),
    ("train-out-file", ["train", "--data", "{data}", "--model", "popularity", "--out",
                        "{file}"], "--out"),
    ("train-out-under-file", ["train", "--data", "{data}", "--model", "popularity", "--out",
                              "{file}/sub"], "--out"),
    ("train-missing-option", ["train", "--data", "{data}", "--out", "{new}"], "--model"),
    # recommend
    ("recommend-missing-model", ["recommend", "{root}/nope", "--user", "u1"], "{root}/nope"),
    ("recommend-not-a-model", ["recommend", "{data}", "--user", "u1"], "{data}"),
    ("recommend-corrupt-model", ["recommend", "{bad_model}", "--user", "u1"], "{bad_model}"),
    ("recommend-k-zero", ["recommend", "{model}", "--user", "u1", "--k", "0"], "--k"),
    ("recommend-k-negative", ["recommend", "{model}", "--user", "u1", "--k", "-3", "--json"],
     "--k"),
    ("recommend-k-type", ["recommend", "{model}", "--user", "u1", "--k", "ten"], "--k"),
    ("recommend-text-k-zero", ["recommend", "{model}", "--text", "space", "--k", "0"], "--k"),
    ("recommend-no-user", ["recommend", "{model}"], "--user"),
    ("recommend-unknown-user-strict", ["recommend", "{model}", "--user", "zz", "--strict"],
     "'zz'"),
    # embed
    ("embed-missing-data", ["embed", "--data", "{root}/nope"], "{root}/nope"),
    ("embed-corrupt-data", ["embed", "--data", "{bad_data}"], "{bad_data}"),
    ("embed-device-choice", ["embed", "--data", "{data}", "--device", "tpu"], "--device"),
    ("embed-batch-zero", ["embed", "--data", "{data}", "--batch-size", "0"], "--batch-size"),
    ("embed-show-negative", ["embed", "--data", "{data}", "--show", "-2"], "--show"),
    ("embed-missing-encoder", ["embed", "--data", "{data}", "--encoder", "{root}/no-encoder"],
     "{root}/no-encoder"),
    ("embed-cache-dir-file", ["embed", "--data", "{data}", "--cache-dir", "{file}"],
     "--cache-dir"),
    ("embed-cache-dir-under-file", ["embed", "--data", "{data}", "--cache-dir", "{file}/sub"],
     "--cache-dir"),
    # evaluate
    ("evaluate-missing-data", ["evaluate", "--data", "{root}/nope", "--model", "popularity"],
     "{root}/nope"),
    ("evaluate-corrupt-data", ["evaluate", "--data", "{bad_data}", "--model", "popularity"],
     "{bad_data}"),
    ("evaluate-missing-config", ["evaluate", "--data", "{data}", "--model", "als", "--config",
                                 "{root}/nope.toml"], "{root}/nope.toml"),
    ("evaluate-corrupt-config", ["evaluate", "--data", "{data}", "--model", "als", "--config",
                                 "{bad_toml}"], "{bad_toml}"),
    ("evaluate-config-not-utf8", ["evaluate", "--data", "{data}", "--model", "als",
                                  "--config", "@latin1.toml"], "latin1.toml"),
    ("evaluate-trials-zero", ["evaluate", "--data", "{data}", "--model", "ease", "--tune",
                              "--trials", "0"], "--trials"),
    ("evaluate-trials-negative", ["evaluate", "--data", "{data}", "--model", "ease", "--tune",
                                  "--trials", "-4"], "--trials"),
    ("evaluate-k-zero", ["evaluate", "--data", "{data}", "--model", "popularity", "--k", "0"],
     "--k"),
    ("evaluate-k-type", ["evaluate", "--data", "{data}", "--model", "popularity", "--k", "a,b"],
     "--k"),
    ("evaluate-k-too-large", ["evaluate", "--data", "{data}", "--model", "popularity", "--k",
                              "500"], "--k"),
    ("evaluate-folds-one", ["evaluate", "--data", "{data}", "--model", "popularity", "--split",
                            "kfold", "--folds", "1"], "--folds"),
    ("evaluate-test-share-high", ["evaluate", "--data", "{data}", "--model", "popularity",
                                  "--split", "temporal", "--test-share", "1.5"], "--test-share"),
    ("evaluate-test-share-nan", ["evaluate", "--data", "{data}", "--model", "popularity",
                                 "--split", "temporal", "--test-share", "nan"], "--test-share"),
    ("evaluate-holdout-zero", ["evaluate", "--data", "{data}", "--model", "popularity",
                               "--split", "cold-items", "--holdout-share", "0"],
     "--holdout-share"),
    ("evaluate-holdout-one", ["evaluate", "--data", "{data}", "--model", "popularity",
                              "--split", "cold-users", "--holdout-share", "1"],
     "--holdout-share"),
    ("evaluate-max-train-events-zero", ["evaluate", "--data", "{data}", "--model",
                                        "popularity", "--split", "cold-users",
                                        "--max-train-events", "0"], "--max-train-events"),
    ("evaluate-seed-negative", ["evaluate", "--data", "{data}", "--model", "popularity",
                                "--seed", "-1"], "--seed"),
    ("evaluate-ratios-sum", ["evaluate", "--data", "{data}", "--model", "popularity",
                             "--ratios", "0.9,0.9,0.9"], "--ratios"),
    ("evaluate-ratios-negative", ["evaluate", "--data", "{data}", "--model", "popularity",
                                  "--ratios", "1.2,-0.1,-0.1"], "--ratios"),
    ("evaluate-ratios-type", ["evaluate", "--data", "{data}", "--model", "popularity",
                              "--ratios", "most,some"], "--ratios"),
    ("evaluate-split-choice", ["evaluate", "--data", "{data}", "--model", "popularity",
                               "--split", "sideways"], "sideways"),
    ("evaluate-part-choice", ["evaluate", "--data", "{data}", "--model", "popularity",
                              "--part", "train"], "--part"),
    ("evaluate-history-choice", ["evaluate", "--data", "{data}", "--model", "popularity",
                                 "--history", "bogus"], "--history"),
    ("evaluate-history-tune", ["evaluate", "--data", "{data}", "--model", "ease", "--tune",
                               "--trials", "2", "--history", "bogus"], "--history"),
    ("evaluate-history-kfold", ["evaluate", "--data", "{data}", "--model", "popularity",
                                "--split", "kfold", "--history", "Observed"], "--history"),
    ("evaluate-unknown-model", ["evaluate", "--data", "{data}", "--model", "nope"], "nope"),
    ("evaluate-missing-option", ["evaluate", "--data", "{data}"], "--model"),
    # compare
    ("compare-missing-data", ["compare", "--data", "{root}/nope", "--models", "popularity",
                              "--report", "{new}"], "{root}/nope"),
    ("compare-corrupt-data", ["compare", "--data", "{bad_data}", "--models", "popularity",
                              "--report", "{new}"], "{bad_data}"),
    ("compare-unknown-model", ["compare", "--data", "{data}", "--models", "popularity,nope",
                               "--report", "{new}"], "nope"),
    ("compare-bad-variant", ["compare", "--data", "{data}", "--variant", "tt", "--report",
                             "{new}"], "--variant"),
    ("compare-k-zero", ["compare", "--data", "{data}", "--models", "popularity", "--k", "0",
                        "--report", "{new}"], "--k"),
    ("compare-ratios-sum", ["compare", "--data", "{data}", "--models", "popularity",
                            "--ratios", "0.9,0.9,0.9", "--report", "{new}"], "--ratios"),
    ("compare-test-share", ["compare", "--data", "{data}", "--models", "popularity",
                            "--split", "temporal", "--test-share", "0", "--report", "{new}"],
     "--test-share"),
    ("compare-max-train-events", ["compare", "--data", "{data}", "--models", "popularity",
                                  "--split", "cold-users", "--max-train-events", "0",
                                  "--report", "{new}"], "--max-train-events"),
    ("compare-seed-negative", ["compare", "--data", "{data}", "--models", "popularity",
                               "--seed", "-7", "--report", "{new}"], "--seed"),
    ("compare-history-choice", ["compare", "--data", "{data}", "--models", "popularity",
                                "--history", "bogus", "--report", "{new}"], "--history"),
    ("compare-report-file", ["compare", "--data", "{data}", "--models", "popularity",
                             "--report", "{file}"], "--report"),
    ("compare-report-under-file", ["compare", "--data", "{data}", "--models", "popularity",
                                   "--report", "{file}/sub"], "--report"),
    # serve
    ("serve-missing-bundle", ["serve", "{root}/nope"], "{root}/nope"),
    ("serve-not-a-bundle", ["serve", "{data}"], "{data}"),
    ("serve-corrupt-bundle", ["serve", "{bad_model}", "--store", "sqlite:///{tmp}/s1.db"],
     "{bad_model}"),
    ("serve-port-high", ["serve", "{model}", "--port", "80000", "--store",
                         "sqlite:///{tmp}/s2.db"], "--port"),
    ("serve-port-negative", ["serve", "{model}", "--port", "-5", "--store",
                             "sqlite:///{tmp}/s3.db"], "--port"),
    ("serve-port-type", ["serve", "{model}", "--port", "http"], "--port"),
    ("serve-workers-zero", ["serve", "{model}", "--workers", "0"], "--workers"),
    ("serve-log-level-choice", ["serve", "{model}", "--log-level", "loud", "--store",
                                "sqlite:///{tmp}/s4.db"], "--log-level"),
    ("serve-store-unwritable", ["serve", "{model}", "--store",
                                "sqlite:////nonexistent/dir/s.db"], "/nonexistent/dir/s.db"),
    ("serve-missing-rules", ["serve", "{model}", "--rules", "{root}/nope.toml", "--store",
                             "sqlite:///{tmp}/s5.db"], "{root}/nope.toml"),
    ("serve-corrupt-rules", ["serve", "{model}", "--rules", "{bad_toml}", "--store",
                             "sqlite:///{tmp}/s6.db"], "{bad_toml}"),
    ("serve-missing-keys-file", ["serve", "{model}", "--keys-file", "{root}/nope-keys",
                                 "--store", "sqlite:///{tmp}/s7.db"], "{root}/nope-keys"),
    ("serve-one-arm", ["serve", "--arm", "A={model}"], "--arm"),
    ("serve-arm-form", ["serve", "--arm", "A", "--arm", "B={model}"], "--arm"),
    ("serve-arm-name", ["serve", "--arm", "a b={model}", "--arm", "B={model}"], "--arm"),
    ("serve-arm-missing-bundle", ["serve", "--arm", "A={model}", "--arm", "B={root}/nope"],
     "{root}/nope"),
    ("serve-arm-and-bundle", ["serve", "{model}", "--arm", "A={model}", "--arm",
                              "B={model}"], "--arm"),
    ("serve-split-count", ["serve", "--arm", "A={model}", "--arm", "B={model}", "--split",
                           "50/30/20"], "--split"),
    ("serve-split-negative", ["serve", "--arm", "A={model}", "--arm", "B={model}",
                              "--split", "60/-40"], "--split"),
    ("serve-split-no-arms", ["serve", "{model}", "--split", "50/50"], "--split"),
    ("serve-interleave-unknown", ["serve", "--arm", "A={model}", "--arm", "B={model}",
                                  "--interleave", "A,C"], "--interleave"),
    ("serve-explore-spec", ["serve", "{model}", "--explore", "softmax:2"], "--explore"),
    ("serve-explore-temperature", ["serve", "{model}", "--explore", "plackett-luce:0"],
     "--explore"),
]

# bad data files referenced as "@name"; written once per run under the world's root
FILES: dict[str, str] = {
    "bad_time.csv": "user,item,ts\nu1,i1,5\nu2,i2,yesterday\n",
    "huge_time.csv": "user,item,ts\nu1,i1,5\nu2,i2,1e30\n",
    "inf_time.csv": "user,item,ts\nu1,i1,5\nu2,i2,inf\n",
    "object_id.jsonl": '{"user": "u1", "item": "i1"}\n{"user": {"id": 2}, "item": "i2"}\n',
    "params_not_table.toml": "params = 3\n",
    "all_bad.csv": "user,item,ts\nu1,i1,1e30\nu2,i2,inf\n",
}


def _materialise(world: World, tmp_path: Path, arg: str) -> str:
    if arg.startswith("@"):
        name = arg[1:]
        if name == "latin1.toml":
            path = tmp_path / name
            path.write_bytes("# réglages\nfactors = 8\n".encode("latin-1"))
            return str(path)
        if name == "ml100k_bad":
            folder = tmp_path / "ml-100k"
            folder.mkdir(exist_ok=True)
            (folder / "u.data").write_bytes(b"\x00\xff\xfe garbage\tno\n")
            return str(folder)
        return str(_write(tmp_path, name, FILES[name]))
    return arg.format(csv=world.csv, data=world.data, model=world.model, bad_data=world.bad_data,
                      bad_model=world.bad_model, file=world.file, garbage=world.garbage,
                      bad_toml=world.bad_toml, root=world.root, tmp=tmp_path,
                      new=tmp_path / "new-out")


@pytest.mark.parametrize(("args", "needle"), [pytest.param(a, n, id=i) for i, a, n in CELLS])
def test_bad_input_cell(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str,
                        real_runs: dict[str, CliProcess]) -> None:
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "emb-cache"))
    argv = [_materialise(world, tmp_path, a) for a in args]
    before = sorted(p.name for p in world.root.iterdir())
    code, out, err = run_cli(argv, capsys, monkeypatch)
    one_error_line(code, err, _materialise(world, tmp_path, needle), out)
    assert not (tmp_path / "new-out").exists(), "something was written to the output folder"
    assert world.file.read_text() == FILE_TEXT
    assert not (world.file.parent / "existing.txt" / "sub").exists()
    assert sorted(p.name for p in world.root.iterdir()) == before


def test_inspect_counts_bad_values_with_their_line(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _materialise(world, tmp_path, "@huge_time.csv")
    code, out, err = run_cli(["data", "inspect", path, "--time-col", "ts", "--json"], capsys,
                             monkeypatch)
    assert code == 0, err
    report = json.loads(out)
    assert report["totals"]["rows_dropped"] == 1
    assert "line 3, column 'ts'" in report["sources"][0]["examples"][0]


def test_every_command_has_cells() -> None:
    commands = {" ".join(a[:2]) if a[0] in ("data", "datasets") else a[0] for _, a, _ in CELLS}
    assert commands == {"data prepare", "data inspect", "datasets get", "train", "recommend",
                        "embed", "evaluate", "compare", "serve"}


# --- a few as a real process: what a user's terminal (here a pipe) shows ------------------------
# They are started together with the first in-process cell (see `real_runs`) and run on the
# other core while the cells run; each test below checks its own process.

REAL: list[tuple[str, list[str], str]] = [
    ("trials-zero", ["evaluate", "--data", "{data}", "--model", "ease", "--tune", "--trials",
                     "0"], "--trials"),
    ("train-out-file", ["train", "--data", "{data}", "--model", "popularity", "--out",
                        "{file}"], "--out"),
    ("usage-error-type", ["recommend", "{model}", "--user", "u1", "--k", "ten"], "--k"),
    ("usage-error-missing", ["evaluate", "--data", "{data}"], "--model"),
]


@pytest.fixture(scope="module")
def real_runs(world: World, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, CliProcess]]:
    jobs = {}
    for key, args, _ in REAL:
        tmp = tmp_path_factory.mktemp(f"real-{key}")
        argv = [_materialise(world, tmp, a) for a in args]
        jobs[key] = (argv, tmp / "run", {"COLUMNS": "80",
                                         "LMREC_CACHE_DIR": str(tmp / "emb-cache")})
    with cli_processes(jobs) as started:
        yield started


@pytest.mark.parametrize("needle", [pytest.param(n, id=i) for i, _, n in REAL])
def test_bad_input_subprocess(world: World, real_runs: dict[str, CliProcess],
                              request: pytest.FixtureRequest, needle: str) -> None:
    proc = real_runs[request.node.callspec.id].result()
    one_error_line(proc.returncode, proc.stderr, needle, proc.stdout)
    assert world.file.read_text() == FILE_TEXT
