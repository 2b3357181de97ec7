"""Real-time pacing on an absolute grid, shared by every tool that sends audio."""

from __future__ import annotations

import trio

# After a stall longer than this many periods the grid restarts instead of
# catching up, because catching up would burst audio faster than real time.
MAX_LATE_PERIODS = 3


class Pacer:
    """`await pacer.wait(seconds)` before sending `seconds` of audio.

    The schedule is absolute (start + audio sent so far), so sleep overshoot
    never accumulates into drift. With `fast`, nothing waits.
    """

    def __init__(self, fast: bool = False) -> None:
        self.fast = fast
        self._start: float | None = None
        self._sent = 0.0
        self.restarts = 0

    @property
    def elapsed_audio(self) -> float:
        return self._sent

    async def wait(self, seconds: float) -> None:
        if self.fast:
            self._sent += seconds
            await trio.lowlevel.checkpoint()
            return
        now = trio.current_time()
        if self._start is None:
            self._start = now
        due = self._start + self._sent
        if now - due > MAX_LATE_PERIODS * max(seconds, 0.001):
            self.restarts += 1
            self._start = now - self._sent
            due = now
        self._sent += seconds
        await trio.sleep_until(due)
