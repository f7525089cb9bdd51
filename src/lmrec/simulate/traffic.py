"""Simulated shoppers asking a live server for recommendations and clicking on them.

Reproducibility with concurrent requests: the users and the uniform draws that decide their
clicks come from one seeded stream, in order, whatever thread serves them; and requests go
out in rounds in which no user appears twice, each request's clicks posted before its round
ends. A user's next slate then always sees all their earlier clicks (the service adds them
to the user's history), exactly as if the requests had been sent one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from lmrec.simulate.server import ServerError, check_answer
from lmrec.simulate.world import SimWorld

_CHUNK = 4_096  # users drawn from the stream at a time


@dataclass(frozen=True)
class Impression:
    """One answer as the simulated user saw it (world indices; `slate` -1 padded to k)."""

    user: int
    request_id: str
    arm: str | None
    slate: np.ndarray  # (k,) int
    expected: float  # true expected clicks of the slate
    clicks: np.ndarray  # (k,) bool: the clicks sampled and sent back


class UserStream:
    """Users drawn uniformly from the world's users, each with k uniforms for its clicks."""

    def __init__(self, n_users: int, k: int, seed: int | np.random.SeedSequence) -> None:
        self._rng = np.random.default_rng(seed)
        self.n_users, self.k = n_users, k
        self._users = np.empty(0, dtype=np.int64)
        self._draws = np.empty((0, k))
        self._at = 0

    def peek(self) -> tuple[int, np.ndarray]:
        """The next user and their draws, left in the stream."""
        if self._at == self._users.size:
            self._users = self._rng.integers(0, self.n_users, size=_CHUNK)
            self._draws = self._rng.random((_CHUNK, self.k))
            self._at = 0
        return int(self._users[self._at]), self._draws[self._at]

    def take(self) -> tuple[int, np.ndarray]:
        """The next user and their draws, taken out of the stream."""
        out = self.peek()
        self._at += 1
        return out


class Traffic:
    """Sends impressions to a server: GET a user's top-k, sample clicks, POST the clicks."""

    def __init__(self, client: httpx.Client, world: SimWorld, k: int,
                 concurrency: int = 4, round_size: int = 64) -> None:
        self.client, self.world, self.k = client, world, k
        self.concurrency = concurrency
        self.round_size = max(round_size, concurrency)

    def run(self, stream: UserStream, enough: Callable[[list[Impression]], bool],
            skip: Callable[[int], bool] = lambda u: False,
            every: int = 0, look: Callable[[list[Impression]], None] | None = None
            ) -> list[Impression]:
        """Serve users from `stream` (those `skip` refuses are passed over) in rounds until
        `enough(served)`; after each round with `every` or more new impressions since the last
        look, call `look(served)`."""
        served: list[Impression] = []
        last_look = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="lmrec-sim") as pool:
            while not enough(served):
                batch = self._round(stream, skip)
                served.extend(pool.map(lambda ud: self.one(*ud), batch))
                if look is not None and every and len(served) - last_look >= every:
                    look(served)
                    last_look = len(served)
        if look is not None and every and last_look != len(served):
            look(served)
        return served

    def _round(self, stream: UserStream, skip: Callable[[int], bool]
               ) -> list[tuple[int, np.ndarray]]:
        """The next users of the stream, up to round_size and none twice (a repeated user
        ends the round and opens the next, so the stream's order is kept)."""
        batch: list[tuple[int, np.ndarray]] = []
        users: set[int] = set()
        for _ in range(100 * self.round_size):  # bounded: skip may refuse nearly everyone
            user, draws = stream.peek()
            if user in users:
                break
            stream.take()
            if skip(user):
                continue
            batch.append((user, draws))
            users.add(user)
            if len(batch) == self.round_size:
                break
        if not batch:
            raise ServerError("no user left to serve (every user's arm has its impressions)")
        return batch

    def one(self, user: int, draws: np.ndarray) -> Impression:
        """One request, its clicks sampled and posted as feedback."""
        resp = self.client.get(f"/v1/users/{user + 1}/recommendations",
                               params={"k": self.k})
        body = check_answer(resp, f"GET recommendations of user {user + 1}")
        ids = [s["item"] for s in body["items"]][: self.k]
        slate = np.full(self.k, -1, dtype=np.int64)
        try:
            slate[: len(ids)] = self.world.item_index(ids)
        except ValueError as exc:
            raise ServerError(f"the server recommended an item outside the world: {exc}"
                              ) from None
        probs = self.world.click_probabilities(np.array([user]), slate[None, :])[0]
        clicks = draws < probs
        request_id = str(body["request_id"])
        for pos in np.flatnonzero(clicks):
            check_answer(self.client.post("/v1/feedback", json={
                "request_id": request_id, "item": ids[pos], "type": "click"}),
                "POST /v1/feedback")
        return Impression(user, request_id, body.get("arm"), slate, float(probs.sum()),
                          clicks)


def experiment(client: httpx.Client) -> dict[str, Any]:
    """GET /v1/experiments."""
    return dict(check_answer(client.get("/v1/experiments"), "GET /v1/experiments"))
