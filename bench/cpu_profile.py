"""`python -m bench.cpu_profile OUT MODULE [ARGS...]`: a module under cProfile, CPU-timed.

The profiler's clock is `time.process_time`, so time a task spends asleep in
the event loop's epoll wait costs nothing and every function's total is the
CPU it burned (inflated by the profiler's own per-call cost, which is why the
call counts matter more than the seconds). SIGUSR1 starts profiling and
SIGUSR2 stops it and writes OUT, so start-up and shutdown stay out of the
counts. Used by `python -m bench --profile` to count calls per audio frame.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType


def main(argv: Sequence[str] | None = None) -> int:
    out, module, *args = list(sys.argv[1:] if argv is None else argv)
    sys.argv = [module, *args]
    profiler = cProfile.Profile(time.process_time)
    state = {"on": False, "written": False}

    def start(signum: int, frame: FrameType | None) -> None:
        if not state["on"] and not state["written"]:
            profiler.enable()
            state["on"] = True

    def stop(signum: int, frame: FrameType | None) -> None:
        if state["on"]:
            profiler.disable()
            state["on"] = False
            profiler.dump_stats(out)
            state["written"] = True

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    finally:
        stop(signal.SIGUSR2, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
