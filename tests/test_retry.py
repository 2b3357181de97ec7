from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.retry import RetryConfig, RetryPolicy, RetryStatistics


def fail_until_give_up(policy: RetryPolicy, now: float = 0.0) -> list[float]:
    delays: list[float] = []
    while (d := policy.failed(now)) is not None:
        delays.append(d)
        now += d
    return delays


# --- config validation ------------------------------------------------------------------------


def test_defaults_match_attendee() -> None:
    cfg = RetryConfig()
    assert (cfg.max_retries, cfg.delay, cfg.backoff) == (30, 2.0, "fixed")
    assert (cfg.max_delay, cfg.healthy_after) == (30.0, 10.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"delay": -0.1}, "delay"),
        ({"delay": math.nan}, "delay"),
        ({"max_delay": -1.0}, "max_delay"),
        ({"healthy_after": -5.0}, "healthy_after"),
        ({"backoff": "linear"}, "backoff"),
    ],
)
def test_invalid_config(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must .*\.$"):
        RetryConfig(**kwargs)


def test_zero_values_are_valid() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=0, delay=0.0, max_delay=0.0, healthy_after=0.0))
    assert policy.failed(0.0) == 0.0


# --- fixed backoff ----------------------------------------------------------------------------


def test_fixed_retries_max_times_then_gives_up() -> None:
    policy = RetryPolicy(RetryConfig())
    assert policy.max_retries == 30
    assert policy.attempt == 0
    delays = fail_until_give_up(policy)
    assert delays == [2.0] * 30
    assert policy.attempt == 30
    assert policy.failed(100.0) is None  # stays given up
    assert policy.statistics() == RetryStatistics(failures=32, connects=0, resets=0, gave_up=True)


def test_attempt_is_one_based_for_the_retry_about_to_happen() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=3))
    seen = []
    while policy.failed(0.0) is not None:
        seen.append(policy.attempt)
    assert seen == [1, 2, 3]


def test_zero_max_retries_retries_forever() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=0, delay=1.0))
    for i in range(1, 5001):
        assert policy.failed(float(i)) == 1.0
    assert policy.attempt == 5000


def test_quick_drop_does_not_reset_counter() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=3, healthy_after=10.0))
    now = 0.0
    for _ in range(3):
        assert policy.failed(now) is not None
        now += 2.0
        policy.connected(now)
        now += 9.9  # drops just short of healthy
    assert policy.failed(now) is None
    assert policy.statistics().resets == 0


def test_healthy_connection_resets_counter() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=3, healthy_after=10.0))
    for _ in range(3):
        policy.failed(0.0)
    assert policy.attempt == 3
    policy.connected(6.0)
    assert policy.failed(16.0) == 2.0  # exactly healthy_after counts as healthy
    assert policy.attempt == 1
    assert policy.statistics().resets == 1


def test_reset_needs_a_connection_not_just_time() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=2))
    policy.failed(0.0)
    policy.failed(1000.0)
    assert policy.failed(5000.0) is None


def test_healthy_connection_revives_a_policy_that_had_given_up() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=1))
    policy.failed(0.0)
    assert policy.failed(2.0) is None
    policy.connected(3.0)
    assert not policy.statistics().gave_up
    assert policy.failed(20.0) == 2.0


def test_connected_alone_keeps_the_counter() -> None:
    policy = RetryPolicy(RetryConfig())
    policy.failed(0.0)
    policy.failed(2.0)
    policy.connected(4.0)
    assert policy.attempt == 2


# --- exponential backoff ----------------------------------------------------------------------


class RecordingRandom(random.Random):
    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return b


def test_exponential_full_jitter_bounds() -> None:
    rng = RecordingRandom()
    policy = RetryPolicy(
        RetryConfig(max_retries=8, delay=1.0, backoff="exponential", max_delay=30.0), rng
    )
    delays = fail_until_give_up(policy)
    caps = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert rng.bounds == [(0.0, c) for c in caps]
    assert delays == caps


def test_exponential_forever_does_not_overflow() -> None:
    policy = RetryPolicy(
        RetryConfig(max_retries=0, delay=2.0, backoff="exponential", max_delay=30.0),
        RecordingRandom(),
    )
    for _ in range(3000):
        d = policy.failed(0.0)
    assert d == 30.0


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32),
    delay=st.floats(0.0, 10.0),
    max_delay=st.floats(0.0, 60.0),
    n=st.integers(1, 40),
)
def test_exponential_delays_within_bounds(
    seed: int, delay: float, max_delay: float, n: int
) -> None:
    policy = RetryPolicy(
        RetryConfig(max_retries=n, delay=delay, backoff="exponential", max_delay=max_delay),
        random.Random(seed),
    )
    delays = fail_until_give_up(policy)
    assert len(delays) == n
    for i, d in enumerate(delays, start=1):
        assert 0.0 <= d <= min(max_delay, delay * 2 ** (i - 1))


def test_exponential_is_reproducible_with_seeded_rng() -> None:
    cfg = RetryConfig(backoff="exponential", max_retries=10)
    a = fail_until_give_up(RetryPolicy(cfg, random.Random(7)))
    b = fail_until_give_up(RetryPolicy(cfg, random.Random(7)))
    assert a == b and len(set(a)) > 1


# --- driven by trio's virtual clock -----------------------------------------------------------


async def run_shell(policy: RetryPolicy, outcomes: list[float | None]) -> list[float]:
    """Minimal reconnect loop; outcomes[i] is how long attempt i stays up (None = fails)."""
    start = trio.current_time()
    attempts: list[float] = []
    i = 0
    while True:
        attempts.append(trio.current_time() - start)
        up = outcomes[i] if i < len(outcomes) else None
        i += 1
        if up is not None:
            policy.connected(trio.current_time())
            await trio.sleep(up)
        delay = policy.failed(trio.current_time())
        if delay is None:
            return attempts
        await trio.sleep(delay)


async def test_fixed_schedule_on_virtual_clock(autojump_clock: trio.testing.MockClock) -> None:
    attempts = await run_shell(RetryPolicy(RetryConfig()), [])
    assert attempts == [2.0 * i for i in range(31)]  # first try + 30 retries, t=0..60


async def test_exponential_schedule_on_virtual_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = RetryConfig(max_retries=10, delay=1.0, backoff="exponential", max_delay=8.0)
    attempts = await run_shell(RetryPolicy(cfg, random.Random(3)), [])
    assert len(attempts) == 11
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for n, gap in enumerate(gaps, start=1):
        assert 0.0 <= gap <= min(8.0, 2.0 ** (n - 1)) + 1e-9
    # Same seed, same schedule: the timestamps are exactly the policy's delays accumulated.
    expected = fail_until_give_up(RetryPolicy(cfg, random.Random(3)))
    assert attempts == pytest.approx([0.0, *itertools.accumulate(expected)])


async def test_healthy_connection_resets_on_virtual_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = RetryConfig(max_retries=3, delay=2.0, healthy_after=10.0)
    attempts = await run_shell(RetryPolicy(cfg), [None, None, 10.0, None, 3.0])
    # t=0 fail (retry 1), t=2 fail (retry 2), t=4 up until 14: healthy, so the drop starts a
    # new run (retry 1), t=16 fail (retry 2), t=18 up only 3 s: no reset (retry 3), t=23 fail
    # with all 3 retries used: give up.
    assert attempts == [0.0, 2.0, 4.0, 16.0, 18.0, 23.0]


# --- renewals: the server's routine end of a session -------------------------------------------


def test_a_renewal_is_granted_only_to_a_session_that_lived_long_enough() -> None:
    policy = RetryPolicy(RetryConfig(max_retries=2))
    policy.connected(0.0)
    assert not policy.renewed(899.0, 900.0)
    # Refused, the close is a failure like any other.
    assert policy.failed(899.0) == 2.0
    policy.connected(901.0)
    assert policy.renewed(1801.0, 900.0)
    assert policy.attempt == 0
    assert policy.statistics().renewals == 1


def test_a_renewal_is_granted_once_per_connection() -> None:
    policy = RetryPolicy(RetryConfig())
    policy.connected(0.0)
    assert policy.renewed(1000.0, 900.0)
    assert not policy.renewed(1000.0, 900.0)


def test_never_connected_is_never_renewed() -> None:
    assert not RetryPolicy(RetryConfig()).renewed(1e9, 0.0)


async def test_a_server_ending_every_session_at_once_uses_up_the_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The loop Link.serve runs: a session-length close right after opening,
    every time, is given up on after max_retries, like any other close."""
    policy = RetryPolicy(RetryConfig(max_retries=2, delay=2.0))
    connects = 0
    while True:
        policy.connected(trio.current_time())
        connects += 1
        await trio.sleep(0.01)
        if policy.renewed(trio.current_time(), 900.0):
            continue
        delay = policy.failed(trio.current_time())
        if delay is None:
            break
        await trio.sleep(delay)
    assert connects == 3
