"""The experiment report behind GET /v1/experiments, from the impression log and its feedback.

A *click* is a distinct (request_id, item) pair with at least one linked feedback event (any
type) whose item was in that impression's slate; a *conversion* is the same with an event type
in `conversion_types`. Rates are per impression (CTR = clicks / impressions), with normal
intervals over impressions (`lmrec.evaluate.abtest`).

Which impressions count where:
* team-draft impressions (policy "team-draft:A,B") feed only the "interleaving" block: the
  pair of the latest one, counting the impressions logged under that same pair. Each is won
  by the arm whose team (`Slot.team`, the arm's name) got more of its clicks; an impression
  with clicks but no majority is a tie, and one without clicks counts in "impressions" only.
* every other impression counts for the `ArmInfo` of its arm; those logged outside an
  experiment (arm None) count for the first arm in "single" mode, and for none otherwise.
* "comparison": control = the first arm with at least two impressions (a variance needs
  two), treatment = the second such arm; null when there is no second.
* "timeline": per arm and time bucket of `bucket_s` seconds (start = a multiple of bucket_s),
  buckets with impressions only, ordered by start then arm.
An interval over fewer than two impressions is the point itself ([0, 0] with none), and
rate intervals are clipped at 0, so the JSON never holds NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmrec.errors import ConfigError
from lmrec.evaluate.abtest import preference_test, summary_ci, welch
from lmrec.serve.store import StoredEvent, StoredImpression

MODES = ("single", "ab", "interleave")
TEAM_DRAFT = "team-draft"


@dataclass(frozen=True)
class ArmInfo:
    arm: str
    model_version: str
    share: float  # of traffic, in [0, 1]


def experiment_report(impressions: Sequence[StoredImpression], feedback: Sequence[StoredEvent],
                      arms: Sequence[ArmInfo], mode: str,
                      conversion_types: Sequence[str] = ("purchase",),
                      bucket_s: float = 3600.0, level: float = 0.95) -> dict[str, Any]:
    """The GET /v1/experiments JSON (see the module docstring for what counts where)."""
    if mode not in MODES:
        raise ConfigError(f"experiment mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not bucket_s > 0:
        raise ConfigError(f"bucket_s must be > 0, got {bucket_s!r}")
    n = len(impressions)
    clicks, conversions, net = _outcomes(impressions, feedback, set(conversion_types))
    policies = [imp.policy for imp in impressions]
    drafted = np.fromiter((p.startswith(TEAM_DRAFT) for p in policies), bool, n)
    where = {a.arm: j for j, a in enumerate(arms)}
    code = np.fromiter((where.get(imp.arm, -1) if imp.arm is not None
                        else (0 if mode == "single" and arms else -1)
                        for imp in impressions), np.int64, n)  # (n,) arm index, -1: none
    code[drafted] = -1
    counted = code >= 0
    per_arm = [_sums(code[counted], x[counted], len(arms)) for x in (clicks, conversions)]
    blocks = []
    for j, a in enumerate(arms):
        blocks.append({"arm": a.arm, "model_version": a.model_version, "share": float(a.share),
                       "impressions": int(per_arm[0][0][j]), "clicks": int(per_arm[0][1][j]),
                       **_rate("ctr", per_arm[0], j, level),
                       "conversions": int(per_arm[1][1][j]),
                       **_rate("conversion", per_arm[1], j, level, "conversion_rate")})
    ts = np.fromiter((imp.timestamp for imp in impressions), np.float64, n)
    return {"mode": mode, "arms": blocks,
            "comparison": _comparison(arms, per_arm, level),
            "interleaving": _interleaving(policies, drafted, clicks, net, level),
            "timeline": _timeline(arms, code[counted], ts[counted], clicks[counted],
                                  float(bucket_s), level)}


def _outcomes(impressions: Sequence[StoredImpression], feedback: Sequence[StoredEvent],
              conversion_types: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per impression (n,): clicks, conversions, and team-draft credit (clicked items of the
    first-named team minus those of the second). One pass over the feedback, not over the
    impressions: feedback is the smaller log."""
    n = len(impressions)
    index = {imp.request_id: i for i, imp in enumerate(impressions)}
    clicked: dict[tuple[int, str], int] = {}  # (impression, item) -> credit sign
    converted: set[tuple[int, str]] = set()
    for ev in feedback:
        i = index.get(ev.request_id) if ev.request_id is not None else None
        if i is None:
            continue
        imp = impressions[i]
        slot = next((s for s in imp.slate if s.item == ev.item), None)
        if slot is None:  # feedback on an item the slate did not show
            continue
        if (i, ev.item) not in clicked:
            sign = 0
            if imp.policy.startswith(TEAM_DRAFT):
                a, b = _pair(imp.policy)
                sign = 1 if slot.team == a else -1 if slot.team == b else 0
            clicked[(i, ev.item)] = sign
        if ev.type in conversion_types:
            converted.add((i, ev.item))
    keys = np.fromiter((i for i, _ in clicked), np.int64, len(clicked))
    signs = np.fromiter(clicked.values(), np.float64, len(clicked))
    conv = np.fromiter((i for i, _ in converted), np.int64, len(converted))
    return (np.bincount(keys, minlength=n).astype(np.float64),
            np.bincount(conv, minlength=n).astype(np.float64),
            np.bincount(keys, weights=signs, minlength=n))


def _pair(policy: str) -> tuple[str, str]:
    """("A", "B") from "team-draft:A,B" (empty names when the policy names no pair)."""
    names = [s.strip() for s in policy.partition(":")[2].split(",")]
    a, b, *_ = [*names, "", ""]
    return a, b


def _sums(code: np.ndarray, x: np.ndarray, groups: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum x, sum x^2) per group (groups,), groups given by `code` (m,)."""
    return (np.bincount(code, minlength=groups).astype(np.float64),
            np.bincount(code, weights=x, minlength=groups),
            np.bincount(code, weights=x * x, minlength=groups))


def _interval(n: float, mean: float, lo: float, hi: float, floor: float = 0.0
              ) -> list[float]:
    """[lo, hi] for JSON: the point below two observations, lo clipped at `floor`."""
    if n < 2 or not np.isfinite(lo):
        return [mean, mean] if n else [0.0, 0.0]
    return [max(float(lo), floor), float(hi)]


def _rate(prefix: str, sums: tuple[np.ndarray, ...], j: int | np.ndarray, level: float,
          key: str | None = None) -> dict[str, Any]:
    n, s, ss = (v[j] for v in sums)
    mean, lo, hi = summary_ci(n, s, ss, level)
    value = float(mean) if n else 0.0
    return {key or prefix: value, f"{prefix}_ci": _interval(float(n), value, lo, hi)}


def _comparison(arms: Sequence[ArmInfo], per_arm: list[tuple[np.ndarray, ...]], level: float
                ) -> dict[str, Any] | None:
    (n, *_), _ = per_arm
    ready = [j for j in range(len(arms)) if n[j] >= 2]
    if len(ready) < 2:
        return None
    c, t = ready[:2]
    out: dict[str, Any] = {"control": arms[c].arm, "treatment": arms[t].arm}
    for name, (cnt, s, ss) in zip(("ctr", "conversion"), per_arm, strict=True):
        mean = s / np.maximum(cnt, 1)
        var = (ss - cnt * mean**2) / np.maximum(cnt - 1, 1)
        test = welch(int(cnt[c]), float(mean[c]), max(float(var[c]), 0.0),
                     int(cnt[t]), float(mean[t]), max(float(var[t]), 0.0), level)
        out[f"{name}_diff"] = test.diff
        out[f"{name}_diff_ci"] = [test.lo, test.hi]
        if name == "ctr":
            out["ctr_relative"] = test.relative if np.isfinite(test.relative) else None
            out["p_value"] = test.p_value
        else:
            out["conversion_p_value"] = test.p_value
    out["significant"] = bool(out["p_value"] < 1 - level)
    return out


def _interleaving(policies: list[str], drafted: np.ndarray, clicks: np.ndarray,
                  net: np.ndarray, level: float) -> dict[str, Any] | None:
    if not drafted.any():
        return None
    policy = policies[int(np.flatnonzero(drafted)[-1])]  # the latest pair
    a, b = _pair(policy)
    mine = np.fromiter((p == policy for p in policies), bool, len(policies))
    won_a, won_b = int((net[mine] > 0).sum()), int((net[mine] < 0).sum())
    ties = int(((net[mine] == 0) & (clicks[mine] > 0)).sum())
    test = preference_test(won_a, won_b, ties, level)
    pref = test.preference if test.n else 0.0
    winner = None
    if test.p_value < 1 - level and pref != 0:
        winner = a if pref > 0 else b
    return {"arms": [a, b], "impressions": int(mine.sum()), "wins": {a: won_a, b: won_b},
            "ties": ties, "preference": pref,
            "preference_ci": _interval(test.n, pref, test.lo, test.hi, floor=-1.0),
            "p_value": test.p_value, "winner": winner}


def _timeline(arms: Sequence[ArmInfo], code: np.ndarray, ts: np.ndarray, clicks: np.ndarray,
              bucket_s: float, level: float) -> list[dict[str, Any]]:
    if not code.size:
        return []
    bucket = np.floor(ts / bucket_s).astype(np.int64)  # (m,)
    base = bucket.min()
    keys, group = np.unique((bucket - base) * len(arms) + code, return_inverse=True)
    sums = _sums(group, clicks, keys.size)
    out = []
    for g, key in enumerate(keys.tolist()):  # one row per (bucket, arm): few
        b, j = divmod(key, len(arms))
        out.append({"arm": arms[j].arm, "start": float((b + base) * bucket_s),
                    "impressions": int(sums[0][g]), "clicks": int(sums[1][g]),
                    **_rate("ctr", sums, g, level)})
    return out
