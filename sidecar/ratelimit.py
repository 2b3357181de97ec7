"""A token bucket (sans-I/O): error replies must not let a server make us flood it."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("a token bucket needs rate >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None
        self.refused = 0

    def take(self, now: float) -> bool:
        """Spend a token at time `now` (seconds, any monotonic origin)."""
        if self._last is None or now > self._last:
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.refused += 1
        return False
