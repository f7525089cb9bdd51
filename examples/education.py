"""Online education: next-lesson recommendations along a learning path.

A generated school has five tracks of lessons (Python, SQL, data analysis, web, machine
learning) with prerequisites between them. Learners start lessons and take each lesson's quiz;
a quiz score of at least 0.7 means the lesson is mastered, and a lesson unlocks only when all of
its prerequisites are mastered. A sequential model (SASRec) learns the paths learners take; the
prerequisites are then applied as a hard constraint: a lesson whose prerequisites the learner
has not mastered is never recommended, and a mastered lesson is not recommended again (a lesson
whose quiz was failed may be, to retry it).

    python examples/education.py            # 1,500 learners
    python examples/education.py --small    # 300 learners, about 10 seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import PrepareConfig, prepare
from lmrec.collect import ColumnMapping
from lmrec.columns import Role
from lmrec.data import Dataset
from lmrec.evaluate import fit_and_evaluate, split_loo
from lmrec.models import create_model
from lmrec.train import TrainingOptions

START = 1_704_067_200  # 2024-01-01 00:00 UTC: fixed, so the output never depends on "now"
MASTERY = 0.7  # a quiz score at or above this masters the lesson

# track -> (lesson titles in order, {lesson number: extra prerequisites outside the track})
TRACKS: dict[str, tuple[tuple[str, ...], dict[int, tuple[str, ...]]]] = {
    "py": (("Variables and types", "Control flow", "Functions", "Lists and dicts",
            "Files", "Classes", "Modules and packages", "Testing"), {}),
    "sql": (("SELECT basics", "Filtering and sorting", "Joins", "Aggregation",
             "Subqueries", "Window functions"), {}),
    "da": (("NumPy arrays", "DataFrames", "Cleaning data", "Grouping", "Plotting",
            "Statistics", "Time series", "Reporting"),
           {1: ("py04",), 3: ("sql02",), 4: ("sql04",)}),
    "web": (("HTTP basics", "HTML and CSS", "Templates", "Forms", "REST APIs",
             "Authentication", "Deployment"), {1: ("py05",), 5: ("sql03",)}),
    "ml": (("Linear regression", "Classification", "Model evaluation", "Trees and forests",
            "Feature engineering", "Clustering", "Neural networks", "ML in production"),
           {1: ("da04", "py06"), 3: ("da06",), 8: ("web05",)}),
}
# how strongly each kind of learner wants each track (py is everyone's start)
GOALS: dict[str, dict[str, float]] = {
    "analyst": {"py": 1.0, "sql": 3.0, "da": 4.0, "web": 0.2, "ml": 0.5},
    "developer": {"py": 1.0, "sql": 1.5, "da": 0.3, "web": 4.0, "ml": 0.3},
    "scientist": {"py": 1.0, "sql": 1.0, "da": 3.0, "web": 0.2, "ml": 4.0},
}


@dataclass(frozen=True)
class Curriculum:
    lessons: pl.DataFrame  # lesson, track, number, title, prerequisites ("a|b")
    prereq: dict[str, tuple[str, ...]]  # lesson -> its prerequisites

    @property
    def ids(self) -> list[str]:
        return self.lessons["lesson"].to_list()


def curriculum() -> Curriculum:
    """The lessons and their prerequisites: the previous lesson of the track plus the extras."""
    rows, prereq = [], {}
    for track, (titles, extra) in TRACKS.items():
        for n, title in enumerate(titles, start=1):
            lesson = f"{track}{n:02d}"
            needs = ((f"{track}{n - 1:02d}",) if n > 1 else ()) + extra.get(n, ())
            prereq[lesson] = needs
            rows.append((lesson, track, n, title, "|".join(needs)))
    lessons = pl.DataFrame(rows, schema=["lesson", "track", "number", "title", "prerequisites"],
                           orient="row")
    return Curriculum(lessons, prereq)


def generate(n_learners: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, Curriculum]:
    """Seeded events (learner, lesson, event start|quiz, timestamp, score) and learners.

    Each learner has a goal (analyst, developer, scientist) and an ability. They study in
    sessions: mostly the next lesson of the track they are on, sometimes another unlocked
    lesson their goal favours, and after a failed quiz usually the same lesson again. Harder
    (later) lessons have lower expected scores; only unlocked lessons are ever started.
    """
    rng = np.random.default_rng(seed)
    cur = curriculum()
    goals = list(GOALS)
    rows: list[tuple[str, str, str, int, float | None]] = []
    learners = []
    for u in range(n_learners):
        learner = f"L{u + 1:05d}"
        goal = goals[int(rng.integers(len(goals)))]
        ability = float(rng.normal(0.0, 1.0))
        learners.append((learner, goal))
        mastered: set[str] = set()
        t = START + int(rng.integers(0, 90 * 86_400))
        track, failed = "py", None
        for _ in range(int(rng.integers(6, 40))):
            open_ = [x for x in cur.ids
                     if x not in mastered and all(p in mastered for p in cur.prereq[x])]
            if not open_:
                break
            nxt = next((x for x in open_ if x.startswith(track)), None)
            if failed in open_ and rng.random() < 0.7:
                lesson = failed
            elif nxt is not None and rng.random() < 0.75:
                lesson = nxt
            else:
                w = np.array([GOALS[goal][x[:-2]] for x in open_])
                lesson = open_[int(rng.choice(len(open_), p=w / w.sum()))]
            track = lesson[:-2]
            depth = int(lesson[-2:])
            score = 1 / (1 + np.exp(-(ability + 1.6 - 0.18 * depth + rng.normal(0, 0.8))))
            rows.append((learner, lesson, "start", t, None))
            t += 600 + int(rng.exponential(1_800))
            rows.append((learner, lesson, "quiz", t, round(float(score), 3)))
            if score >= MASTERY:
                mastered.add(lesson)
                failed = None
            else:
                failed = lesson
            t += 3_600 + int(rng.exponential(2 * 86_400))
    events = pl.DataFrame(rows, schema={"learner": pl.String, "lesson": pl.String,
                                        "event": pl.String, "timestamp": pl.Int64,
                                        "score": pl.Float64}, orient="row")
    users = pl.DataFrame(learners, schema=["learner", "goal"], orient="row")
    return events, users, cur


def mastery(ds: Dataset) -> sp.csr_matrix:
    """(n_users, n_items) bool: quiz events with a score >= MASTERY, from the prepared events."""
    quiz = ds.events.filter((pl.col("event") == "quiz") & (pl.col("value") >= MASTERY))
    return _bool_matrix(quiz["user_idx"].to_numpy(), quiz["item_idx"].to_numpy(),
                        (ds.n_users, ds.n_items))


def locked(ds: Dataset, mastered: sp.csr_matrix, prereq: dict[str, tuple[str, ...]]
           ) -> sp.csr_matrix:
    """(n_users, n_items) bool: lessons with at least one prerequisite the user has not
    mastered (vectorised: a lesson is open when its mastered prerequisites are all of them)."""
    ids = ds.items.id_of(np.arange(ds.n_items)).tolist()
    pos = {x: i for i, x in enumerate(ids)}
    r = [pos[p] for x in ids for p in prereq[x] if p in pos]
    c = [pos[x] for x in ids for p in prereq[x] if p in pos]
    need = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(ds.n_items, ds.n_items))
    n_need = np.asarray(need.sum(axis=0)).ravel()
    have = (mastered.astype(np.float64) @ need).toarray()
    return sp.csr_matrix(have < n_need[None, :])


def blocked(ds: Dataset, mastered: sp.csr_matrix, prereq: dict[str, tuple[str, ...]]
            ) -> sp.csr_matrix:
    """What a learner may not be recommended: locked lessons and lessons already mastered."""
    return (locked(ds, mastered, prereq) + mastered).astype(bool).tocsr()


def _bool_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=shape)
    m.sum_duplicates()
    return m.astype(bool)


@dataclass
class Result:
    n_learners: int
    n_events: int
    metrics: dict[str, dict[str, float]]  # model -> metric -> value (plain and constrained)
    unconstrained_violations: float  # share of learners whose raw first lesson is locked
    violations: int  # recommended lessons with an unmastered prerequisite (must be 0)
    recommendations: dict[str, list[str]]  # learner -> recommended lessons


def run(n_learners: int = 1500, *, seed: int = 0, k: int = 3, epochs: int = 30,
        show: int = 2) -> Result:
    events, users, cur = generate(n_learners, seed)
    prepared = prepare(events, users, cur.lessons,
                       mapping=ColumnMapping(user="learner", item="lesson", event="event",
                                             time="timestamp", value="score"),
                       config=PrepareConfig(
                           behaviour_weights={"start": 1.0, "quiz": 1.0},
                           user_roles={"goal": Role.CATEGORICAL},
                           item_roles={"track": Role.CATEGORICAL, "number": Role.NUMERIC,
                                       "title": Role.TEXT, "prerequisites": Role.MULTI}),
                       name="school")
    ds = prepared.dataset
    print(f"School: {ds.n_users} learners, {ds.n_items} lessons in {len(TRACKS)} tracks, "
          f"{ds.n_events} events (lesson starts and quizzes; mastery = quiz score >= {MASTERY})")

    # 1. accuracy on each learner's last new lesson (time-ordered leave-one-out)
    split = split_loo(ds, valid=False)
    train_block = blocked(split.train, mastery(split.train), cur.prereq)
    test = split.test.matrix("binary").tocsr()
    metrics: dict[str, dict[str, float]] = {}
    sasrec_params = {"epochs": epochs, "hidden": 32, "inner": 64, "max_len": 30,
                     "patience": None, "progress": False}
    for name, params in (("popularity", {}), ("sasrec", sasrec_params)):
        model = create_model(name, params)
        res = fit_and_evaluate(model, split, [1, k, 10], rng=seed)
        users = np.flatnonzero(np.diff(test.indptr) > 0)
        hist = split.train.sequences().take(users)
        top, _ = model.recommend_idx(users, k, exclude=train_block, histories=hist)
        hit = test[users[:, None], np.maximum(top, 0)].toarray().astype(bool) & (top >= 0)
        metrics[name] = {"hit@1": res.metrics["hit@1"], f"hit@{k}": res.metrics[f"hit@{k}"],
                         "ndcg@10": res.metrics["ndcg@10"],
                         "hit@1 prereq": float(hit[:, 0].mean()),
                         f"hit@{k} prereq": float(hit.any(axis=1).mean())}
    print(f"\nNext new lesson of each learner (leave-last-out, {users.size} learners):")
    cols = list(metrics["sasrec"])
    print(f"  {'model':<12}" + "".join(f"{c:>14}" for c in cols))
    for name, m in metrics.items():
        print(f"  {name:<12}" + "".join(f"{m[c]:>14.4f}" for c in cols))
    print("  (prereq: locked and mastered lessons removed before ranking)")

    # 2. the model on all the data; prerequisites as a hard constraint at recommendation time
    model = create_model("sasrec", sasrec_params).fit(ds, TrainingOptions(rng=seed))
    mastered = mastery(ds)
    lock = locked(ds, mastered, cur.prereq)
    everyone = np.arange(ds.n_users)
    raw, _ = model.recommend_idx(everyone, k, exclude_seen=False, exclude=mastered)
    raw_locked = lock[everyone[:, None], np.maximum(raw, 0)].toarray().astype(bool) & (raw >= 0)
    top, scores = model.recommend_idx(everyone, k, exclude_seen=False,
                                      exclude=blocked(ds, mastered, cur.prereq))
    shown_locked = lock[everyone[:, None], np.maximum(top, 0)].toarray().astype(bool) & (top >= 0)
    share = float(raw_locked[:, 0].mean())
    print(f"\nWithout the constraint, the first recommendation of {share:.1%} of learners (and "
          f"{raw_locked.mean():.1%} of all top-{k} slots) would be a lesson whose prerequisites "
          f"they have not mastered; with it: {int(shown_locked.sum())} such lessons.")

    titles = dict(zip(cur.ids, cur.lessons["title"].to_list(), strict=True))
    recs: dict[str, list[str]] = {}
    for u in everyone:
        recs[str(ds.users.to_python(int(u)))] = [
            str(ds.items.to_python(int(i))) for i in top[u] if i >= 0]
    for u in everyone[:show]:
        learner = ds.users.to_python(int(u))
        done = [ds.items.to_python(int(i)) for i in mastered[u].indices]
        print(f"\nLearner {learner}: mastered {len(done)} lessons "
              f"({', '.join(sorted(map(str, done))) or 'none'})")
        for rank, (i, s) in enumerate(zip(top[u], scores[u], strict=True), start=1):
            if i < 0:
                continue
            lesson = str(ds.items.to_python(int(i)))
            needs = ", ".join(cur.prereq[lesson]) or "none"
            print(f"  {rank}. {lesson:<6} {titles[lesson]:<22} score {s:7.3f}   "
                  f"prerequisites mastered: {needs}")
    return Result(ds.n_users, ds.n_events, metrics, share, int(shown_locked.sum()), recs)


def main(argv: Sequence[str] | None = None) -> Result:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="300 learners (seconds)")
    ap.add_argument("--learners", type=int, default=None, help="number of learners")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=3, help="recommendations per learner")
    args = ap.parse_args(argv)
    n = args.learners or (300 if args.small else 1500)
    return run(n, seed=args.seed, k=args.k, epochs=10 if args.small else 30)


if __name__ == "__main__":
    main()
