"""torchrun scale-out: 2 processes (gloo, CPU) train as well as 1 on a planted dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    import torch.distributed as dist
    from lmrec import testing as T
    from lmrec.evaluate import evaluate, split_random
    from lmrec.models import TwoTower
    from lmrec.train import TrainingOptions

    torch.set_num_threads(1)
    ds = T.planted_dataset(users_a=40, users_b=60, items_per_group=30, seen_per_user=12)
    split = split_random(ds, (0.7, 0.15, 0.15), seed=0)
    model = TwoTower(epochs=30, batch_size=64, lr=0.01, dim=16, id_dim=16, feature_dim=4,
                     layers=(32,), temperature=0.2, dropout=0.1, share_embeddings=False,
                     progress=False, device="cpu")
    model.fit(split.train, TrainingOptions(rng=0))
    result = model.train_result_
    if int(os.environ.get("RANK", "0")) == 0:
        # both held-out parts, to halve the noise of a small planted set
        valid = sum(evaluate(model, split, [10], part=p).metrics["ndcg@10"]
                    for p in ("valid", "test")) / 2
        with open(sys.argv[1], "w") as fh:
            json.dump({"ndcg": valid, "world": int(os.environ.get("WORLD_SIZE", "1")),
                       "steps_examples": result.examples, "epochs": len(result.history)}, fh)
    if dist.is_initialized():
        dist.destroy_process_group()
''')


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_match_one(tmp_path: Path) -> None:
    script = tmp_path / "train_planted.py"
    script.write_text(SCRIPT)
    _run([sys.executable, str(script), str(tmp_path / "one.json")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--standalone", str(script), str(tmp_path / "two.json")], tmp_path)
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world"] == 2 and one["world"] == 1
    # each rank trained on about half of the examples
    assert abs(two["steps_examples"] - one["steps_examples"] / 2) <= 64 * two["epochs"]

    from lmrec import testing as T
    from lmrec.evaluate import fit_and_evaluate, split_random
    from lmrec.models import Popularity

    ds = T.planted_dataset(users_a=40, users_b=60, items_per_group=30, seen_per_user=12)
    pop = fit_and_evaluate(Popularity(), split_random(ds, (0.7, 0.15, 0.15), seed=0), [10],
                           part="valid").metrics["ndcg@10"]
    print(f"held-out NDCG@10: 1 process {one['ndcg']:.4f}, 2 processes {two['ndcg']:.4f}, "
          f"popularity {pop:.4f}")
    assert one["ndcg"] > pop + 0.1 and two["ndcg"] > pop + 0.1, (one, two, pop)
    assert abs(one["ndcg"] - two["ndcg"]) < 0.08, (one, two)
