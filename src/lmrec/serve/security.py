"""API keys: where they come from, how they are held, how a request's key is checked.

Keys are sent as `Authorization: Bearer KEY`. Three roles:

    write   POST /v1/events, DELETE /v1/users/{id}
    admin   POST /v1/admin/reload
    read    the recommendation endpoints, only when read keys are configured (open otherwise)

Sources (all optional, merged):

    LMREC_API_KEYS    comma-separated keys with the write and admin roles
    LMREC_ADMIN_KEYS  comma-separated keys with the admin role only; when set, LMREC_API_KEYS
                      keys can no longer administer
    LMREC_READ_KEYS   comma-separated keys with the read role; setting it makes reads need a key
    a keys file       one key a line, "KEY" (write + admin) or "read:KEY" / "write:KEY" /
                      "admin:KEY"; blank lines and lines starting with # are ignored

With no write key configured every write is refused (401): the service is closed by default.
Only sha256 digests of the keys are kept in memory; a presented key is hashed and compared with
`hmac.compare_digest` against every stored digest (no early exit, so the time taken does not
tell which key nearly matched). Keys with the write or admin role may also read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmrec.errors import ConfigError, Location

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
MIN_KEY_LENGTH = 16  # shorter keys are guessable


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class KeyRing:
    """sha256 digests of the accepted keys, per role."""

    digests: Mapping[Role, tuple[bytes, ...]] = field(default_factory=dict)

    @classmethod
    def from_keys(cls, keys: Mapping[Role, Iterable[str]]) -> KeyRing:
        out: dict[Role, tuple[bytes, ...]] = {}
        for role, values in keys.items():
            if role not in ROLES:
                raise ConfigError(f"unknown key role {role!r} (known: {', '.join(ROLES)})")
            values = [v.strip() for v in values if v.strip()]
            for v in values:
                if len(v) < MIN_KEY_LENGTH:
                    raise ConfigError(f"an API key for {role!r} is shorter than "
                                      f"{MIN_KEY_LENGTH} characters")
            out[role] = tuple(_digest(v) for v in values)
        return cls(out)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 keys_file: str | Path | None = None) -> KeyRing:
        """Keys from LMREC_API_KEYS / LMREC_ADMIN_KEYS / LMREC_READ_KEYS and a keys file."""
        env = os.environ if environ is None else environ
        keys: dict[Role, list[str]] = {r: [] for r in ROLES}
        api = split_list(env.get("LMREC_API_KEYS", ""))
        admin = split_list(env.get("LMREC_ADMIN_KEYS", ""))
        keys["write"] += api
        keys["admin"] += admin if admin else api
        keys["read"] += split_list(env.get("LMREC_READ_KEYS", ""))
        if keys_file is not None:
            for role, key in _read_keys_file(Path(keys_file)):
                if role is None:
                    keys["write"].append(key)
                    keys["admin"].append(key)
                else:
                    keys[role].append(key)
        return cls.from_keys(keys)

    def has(self, role: Role) -> bool:
        return bool(self.digests.get(role))

    @property
    def reads_need_key(self) -> bool:
        return self.has("read")

    def allows(self, key: str | None, role: Role) -> bool:
        """True when `key` holds `role` (write/admin keys may also read)."""
        if not key:
            return False
        roles: tuple[Role, ...] = ("read", "write", "admin") if role == "read" else (role,)
        presented = _digest(key)
        ok = False
        for r in roles:
            for d in self.digests.get(r, ()):
                ok |= hmac.compare_digest(presented, d)
        return ok

    def knows(self, key: str | None) -> bool:
        """True when `key` holds any role (to tell 403 from 401)."""
        return self.allows(key, "read")


def split_list(value: str | None) -> list[str]:
    """The non-empty, stripped items of a comma-separated list ("a, b,," -> ["a", "b"])."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _read_keys_file(path: Path) -> list[tuple[Role | None, str]]:
    if not path.is_file():
        raise ConfigError(f"keys file not found: {path}")
    out: list[tuple[Role | None, str]] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, sep, key = line.partition(":")
        if sep and role in ROLES:
            out.append((role, key.strip()))  # type: ignore[arg-type]
        elif sep and role.isalpha() and role.islower():
            raise ConfigError(f"{Location(str(path), line=n).describe()}: unknown key role "
                              f"{role!r} (known: {', '.join(ROLES)})")
        else:
            out.append((None, line))
    return out
