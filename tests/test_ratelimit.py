"""TokenBucket: a burst, then the sustained rate; time is passed in, never read."""

from __future__ import annotations

import pytest

from sidecar.ratelimit import TokenBucket


def test_burst_then_refusals_are_counted() -> None:
    bucket = TokenBucket(rate=5, burst=5)
    taken = [bucket.take(0.0) for _ in range(8)]
    assert taken == [True] * 5 + [False] * 3
    assert bucket.refused == 3


def test_tokens_refill_at_the_rate() -> None:
    bucket = TokenBucket(rate=4, burst=4)
    for _ in range(4):
        bucket.take(10.0)
    assert not bucket.take(10.125)  # half a token
    assert bucket.take(10.25)  # one whole token since the burst
    assert not bucket.take(10.25)


def test_refill_never_exceeds_the_burst() -> None:
    bucket = TokenBucket(rate=5, burst=3)
    bucket.take(0.0)
    taken = [bucket.take(1000.0) for _ in range(5)]
    assert taken == [True] * 3 + [False] * 2


def test_zero_rate_allows_only_the_burst() -> None:
    bucket = TokenBucket(rate=0, burst=2)
    assert [bucket.take(t) for t in (0.0, 1.0, 1e6)] == [True, True, False]


def test_a_clock_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert not bucket.take(5.5)
    assert bucket.take(6.0)  # a whole second after 5.0: the step back cost nothing


@pytest.mark.parametrize(("rate", "burst"), [(-1, 1), (1, 0), (1, 0.5)])
def test_invalid_settings(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
