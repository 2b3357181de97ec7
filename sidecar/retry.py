"""Reconnect policy for the websocket to the user's server, sans-I/O.

The trio shell reports events with the time it observed them; the policy answers how long to
wait before the next attempt, or ``None`` to give up. It never reads a clock or sleeps.

Semantics (matching Attendee's "retry up to 30 times with a 2 second delay"):

* A *run of failures* starts with the first failure after a healthy period (or at start). Each
  :meth:`RetryPolicy.failed` in the run uses up one retry; after ``max_retries`` retries the
  next failure gives up. ``max_retries=0`` retries forever.
* ``fixed`` backoff waits ``delay`` every time. ``exponential`` uses capped exponential backoff
  with full jitter: retry *n* waits ``uniform(0, min(max_delay, delay * 2 ** (n - 1)))``.
* The run resets only when a connection that succeeded stayed up for at least
  ``healthy_after`` seconds before dropping. A connection that drops sooner does not reset
  it, so a server that accepts and then immediately hangs up cannot earn infinite retries.
* A *renewal* (the server's routine end of a session, reconnected without a delay) is
  granted by :meth:`RetryPolicy.renewed` only to a connection that lived ``min_age``
  seconds, a plausible share of the session's length, and once per connection; refused,
  the close is a failure like any other. Otherwise a server that closes "at the end of
  the session" right after opening would be reconnected at once, forever.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["Backoff", "RetryConfig", "RetryPolicy", "RetryStatistics"]

Backoff = Literal["fixed", "exponential"]

# 2.0 ** 1024 overflows; past this exponent the cap (max_delay) applies anyway.
_MAX_EXPONENT = 1000


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_retries: int = 30
    delay: float = 2.0
    backoff: Backoff = "fixed"
    max_delay: float = 30.0
    healthy_after: float = 10.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(
                f"max_retries must be 0 (retry forever) or positive, got {self.max_retries}."
            )
        # `not x >= 0` also rejects NaN, which would otherwise make every comparison false.
        for field in ("delay", "max_delay", "healthy_after"):
            value = getattr(self, field)
            if not value >= 0:
                raise ValueError(f"{field} must be a non-negative number of seconds, got {value}.")
        if self.backoff not in ("fixed", "exponential"):
            raise ValueError(f"backoff must be 'fixed' or 'exponential', got {self.backoff!r}.")


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    failures: int
    connects: int
    resets: int
    gave_up: bool
    renewals: int = 0


class RetryPolicy:
    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0
        self._connected_at: float | None = None
        self._gave_up = False
        self._failures = 0
        self._connects = 0
        self._resets = 0
        self._renewals = 0

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def max_retries(self) -> int:
        return self._config.max_retries

    @property
    def config(self) -> RetryConfig:
        return self._config

    def connected(self, now: float) -> None:
        # Deliberately keeps the attempt count: only a connection that proves healthy resets it.
        self._connected_at = now
        self._gave_up = False
        self._connects += 1

    def renewed(self, now: float, min_age: float) -> bool:
        """The server ended the session as routine: may we reconnect at once?

        Yes only when the connection lived `min_age` seconds; then the run of
        failures starts over, and the connection's claim is used up. No:
        call :meth:`failed`, as for any other close.
        """
        at = self._connected_at
        if at is None or not now - at >= min_age:
            return False
        self._connected_at = None
        self._attempt = 0
        self._renewals += 1
        return True

    def failed(self, now: float) -> float | None:
        self._failures += 1
        cfg = self._config
        if self._connected_at is not None and now - self._connected_at >= cfg.healthy_after:
            self._attempt = 0
            self._resets += 1
        self._connected_at = None
        if cfg.max_retries and self._attempt >= cfg.max_retries:
            self._gave_up = True
            return None
        self._attempt += 1
        if cfg.backoff == "fixed":
            return cfg.delay
        exponent = min(self._attempt - 1, _MAX_EXPONENT)
        cap = min(cfg.max_delay, cfg.delay * math.ldexp(1.0, exponent))
        return self._rng.uniform(0.0, cap)

    def statistics(self) -> RetryStatistics:
        return RetryStatistics(
            failures=self._failures,
            connects=self._connects,
            resets=self._resets,
            gave_up=self._gave_up,
            renewals=self._renewals,
        )
