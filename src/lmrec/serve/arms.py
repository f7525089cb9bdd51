"""Online experiments: which arm answers a request.

    lmrec serve --arm A=models/ease --arm B=models/als --split 50/50      an A/B test
    lmrec serve --arm A=models/ease --arm B=models/als --interleave A,B   team-draft interleaving

A/B: a user is assigned to an arm by a hash of their id and the experiment's salt, so the
same user always sees the same arm (sticky, with no state to store or lose) and the shares
hold over any large set of users. An anonymous visitor has no stable id: each of their
requests is assigned at random. Changing the salt reshuffles everyone (a new experiment).

Interleaving: every request is answered by both arms at once, their rankings merged by team
draft (`lmrec.serve.interleave`); each shown item remembers the arm that contributed it, and
the clicks decide which arm the user preferred. Radlinski et al. (2008) and Chapelle et al.
(2012) found it agrees with A/B tests from far fewer impressions.

The arms' bundles are loaded once at start; reloading them while the experiment runs is
refused (a new experiment means a restart with new arms, so that no arm changes under its
own figures).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lmrec.errors import ConfigError
from lmrec.serve.engine import Engine, Scored
from lmrec.serve.interleave import team_draft

ARM_NAME = r"^[A-Za-z0-9_.-]{1,32}$"


class ArmSpec(BaseModel):
    """One arm of an experiment: a name, a bundle and its share of the users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ARM_NAME)
    bundle: Path
    share: float = Field(gt=0.0, le=1.0)


@dataclass
class Experiment:
    """The arms served now (engines replaced in place by an erasure only) and how requests
    are assigned to them."""

    names: tuple[str, ...]
    engines: dict[str, Engine]
    shares: tuple[float, ...]
    salt: str = "lmrec"
    interleave: tuple[str, str] | None = None
    _bounds: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.names) < 1 or len(set(self.names)) != len(self.names):
            raise ConfigError("--arm: give each arm a different name")
        total = float(sum(self.shares))
        self._bounds = np.cumsum(np.asarray(self.shares, dtype=np.float64)) / total
        if self.interleave is not None and (
                len(set(self.interleave)) != 2 or not set(self.interleave) <= set(self.names)):
            raise ConfigError(f"--interleave: name two different arms among "
                              f"{', '.join(self.names)}")

    @property
    def mode(self) -> str:
        return "interleave" if self.interleave else "ab"

    def assign(self, user_key: str | None, rng: np.random.Generator) -> str:
        """The arm of a user (sticky: a hash of the salt and the id), or of one visitor
        request (`user_key` None: at random)."""
        if user_key is None:
            u = float(rng.random())
        else:
            digest = hashlib.sha256(f"{self.salt}\x00{user_key}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform on [0, 1)
        arm = int(np.searchsorted(self._bounds, u, side="right"))
        return self.names[min(arm, len(self.names) - 1)]


def parse_split(raw: str | None, n_arms: int) -> tuple[float, ...]:
    """"50/50" or "90/10" -> shares summing to 1 (equal shares when None)."""
    if raw is None:
        return tuple([1.0 / n_arms] * n_arms)
    try:
        parts = [float(p) for p in raw.split("/")]
    except ValueError:
        parts = []
    if len(parts) != n_arms or any(not np.isfinite(p) or p <= 0 for p in parts):
        raise ConfigError(f"--split must give {n_arms} positive numbers separated by '/', "
                          f"one per --arm (e.g. {'/'.join(['50'] * n_arms)}), got {raw!r}")
    total = sum(parts)
    return tuple(p / total for p in parts)


def parse_arm(raw: str, share: float) -> ArmSpec:
    """"NAME=DIR" -> ArmSpec."""
    name, sep, path = raw.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--arm must be NAME=BUNDLE_DIR, got {raw!r}")
    try:
        return ArmSpec(name=name, bundle=Path(path), share=share)
    except ValueError:
        raise ConfigError(f"--arm {raw!r}: a name is 1-32 letters, digits, '_', '.' or "
                          "'-'") from None


def interleaved(a: list[Scored], b: list[Scored], k: int, names: tuple[str, str],
                rng: np.random.Generator) -> list[Scored]:
    """Two arms' answers merged by team draft: each item keeps the explanation and score of
    the arm that contributed it and names that arm as its `team`; its propensity is unknown
    (None): an interleaved log is for comparing the two arms, not for off-policy estimates."""
    ids = {item: n for n, item in enumerate(dict.fromkeys(x.item for x in (*a, *b)))}
    by_id = [{s.item: s for s in a}, {s.item: s for s in b}]
    order = list(ids)
    items, teams = team_draft([ids[s.item] for s in a], [ids[s.item] for s in b], k, rng)
    return [replace(by_id[int(t)][order[int(i)]], propensity=None, team=names[int(t)])
            for i, t in zip(items, teams, strict=True)]
