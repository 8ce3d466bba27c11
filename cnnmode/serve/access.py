"""Who may call the server, and how often: API keys (kept in memory only as sha256 hashes, never logged) with the
models each may use, and a per-key (or per-address) rate limit from the `limits` library (a sliding-window
counter: the previous window's count weighted by its overlap, plus the current one)."""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cnnmode.errors import UsageError

KEYS_ENV = "CNNMODE_API_KEYS"
ADMIN = "admin"  # the word in a key's line that lets it load new model versions


@dataclass(frozen=True)
class Grant:
    """What one key may do: `models` it may use (None: every model), and whether it may load new versions."""
    digest: str
    models: frozenset[str] | None
    admin: bool

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


class Refused(Exception):
    """A request the access rules turn away: 401 (no or unknown key), 403 (not on this model), 429 (too often)."""

    def __init__(self, status: int, message: str, reason: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.retry_after = status, reason, retry_after


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: str | None, env: str | None = None) -> list[Grant] | None:
    """The grants of a keys file (or of CNNMODE_API_KEYS, entries separated by ';' or new lines); None when
    neither is given (the server is open). A bad line is one error naming its number, never its key."""
    env = os.environ.get(KEYS_ENV) if env is None else env
    if path is None and not env:
        return None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--api-keys {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        where = f"--api-keys {path}"
    else:
        text, where = env.replace(";", "\n"), KEYS_ENV
    grants = [_grant(line, n, where) for n, line in enumerate(text.splitlines(), 1)
              if line.strip() and not line.lstrip().startswith("#")]
    if not grants:
        raise UsageError(f"{where} holds no keys")
    return grants


def _grant(line: str, number: int, where: str) -> Grant:
    token, *names = line.split()
    if token.startswith("sha256:"):
        hexdigest = token[len("sha256:"):].lower()
        if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise UsageError(f"{where} line {number}: sha256: needs 64 hex digits")
    elif len(token) < 16:
        raise UsageError(f"{where} line {number}: a key needs at least 16 characters")
    else:
        hexdigest = digest(token)
    models = frozenset(n for n in names if n != ADMIN)
    return Grant(hexdigest, models or None, ADMIN in names)


def presented_key(headers) -> str | None:
    """The key a request carries: `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def parse_rate(text: str):
    """'10/minute' → a `limits` rate item; a bad one is one line with examples."""
    from limits import parse

    try:
        return parse(text)
    except ValueError:
        raise UsageError(f"--rate-limit {text!r}: give N/PERIOD, e.g. 10/minute, 100/second, 1000/hour") from None


def _inline_memory(every: int = 1000):
    """`limits`' in-memory storage, with its expired counters dropped inline every `every` writes instead of by a
    timer thread it starts every 10 ms while counters exist (measured: 7.6% fewer requests/s on 2 cores)."""
    from limits.storage import MemoryStorage

    class InlineExpiry(MemoryStorage):
        writes = 0

        def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer thread
            self.writes += 1
            if self.writes % every == 0:
                self._MemoryStorage__expire_events()

    return InlineExpiry()


class Gate:
    """The access rules of one server: `check(headers, client, model)` returns who is calling (a key's hash or
    the client's address) or raises `Refused`."""

    def __init__(self, grants: list[Grant] | None, rate: str | None) -> None:
        from limits.strategies import SlidingWindowCounterRateLimiter

        self.grants = {g.digest: g for g in grants} if grants else None
        self.rate = parse_rate(rate) if rate else None
        # a sliding-window counter: constant memory per caller (a moving window keeps every hit's time)
        self.limiter = SlidingWindowCounterRateLimiter(_inline_memory()) if self.rate else None

    @property
    def locked(self) -> bool:
        """True when requests need a key."""
        return self.grants is not None

    def check(self, headers, client: str, model: str | None = None, admin: bool = False) -> str:
        """Who is calling, after the key (401/403) and the rate (429) are checked; `model` is the model asked for
        (None: any valid key will do), `admin` whether loading a version is asked for."""
        caller = f"address:{client}"
        if self.grants is not None:
            grant = self._grant(presented_key(headers))
            if (model is not None and not grant.allows(model)) or (admin and not grant.admin):
                raise Refused(403, "this key may not load model versions" if admin else
                              f"this key may not use model '{model}'", "forbidden")
            caller = f"key:{grant.digest[:16]}"
        if self.limiter is not None and not self.limiter.hit(self.rate, caller):
            reset = self.limiter.get_window_stats(self.rate, caller).reset_time
            raise Refused(429, f"rate limit of {self.rate} exceeded; retry later", "rate_limited",
                          retry_after=max(1, math.ceil(reset - time.time())))
        return caller

    def _grant(self, key: str | None) -> Grant:
        if not key:
            raise Refused(401, "this server needs an API key: send Authorization: Bearer KEY or X-API-Key: KEY",
                          "unauthorized")
        found = self.grants.get(digest(key))
        if found is None or not hmac.compare_digest(found.digest, digest(key)):
            raise Refused(401, "unknown API key", "unauthorized")
        return found
