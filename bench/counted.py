"""`python -m bench.counted [run] ARGS`: `audio-sidecar run ARGS`, its scheduler counted.

The process is the sidecar's own: the config comes from `sidecar.cli.parser()`
and `build_config`, and `service.Sidecar` runs exactly as `service.main` runs
it (signals handled, the parent watched). What is added is bench-only:

- a `trio.abc.Instrument` (`Counts`) counting scheduler passes (`after_io_wait`:
  one epoll per pass of trio's run loop) and task steps (`before_task_step`),
  each step labelled by its task and by where it resumes, and each pass by the
  steps it ran;
- counters of `trio.Event` and `trio.CancelScope` objects created (their
  `__init__` wrapped, in this process only).

With `SIDECAR_BENCH_COUNTS=FILE` in the environment, every SIGUSR1 appends one
JSON line (a `Snapshot`) to FILE, and so does the end of the run (SIGTERM);
the bench differences two snapshots to count one phase. Each snapshot carries
the sidecar's own counters (frames read from the bot, messages each way,
frames played), so a phase's counts are divided by frames the sidecar itself
read, not by frames the bench believes it wrote.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    from sidecar import service

ENV: Final = "SIDECAR_BENCH_COUNTS"
SNAPSHOT_SIGNAL: Final = signal.SIGUSR1
_SKIP: Final = ("/trio/", "/contextlib.py", "/trio_websocket/", "/outcome/")


def _where(task: trio.lowlevel.Task) -> str:
    """Where a suspended task will resume: the innermost frame of its own code (not
    trio's, contextlib's or trio-websocket's), and the outermost awaitable it waits in."""
    coro: Any = task.coro
    ours = ""
    last = ""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            code = frame.f_code
            name = getattr(code, "co_qualname", code.co_name)
            last = name
            if not any(s in code.co_filename for s in _SKIP):
                ours = f"{name}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    if ours and last and not ours.startswith(last + ":"):
        return f"{ours} > {last}"
    return ours or last or "?"


def task_label(task: trio.lowlevel.Task) -> str:
    name = task.name.removeprefix("sidecar.")
    fn = getattr(task.coro, "cr_frame", None)
    # The link's connection tasks share one wrapper (`guard`); its argument names them.
    if fn is not None and "fn" in fn.f_locals:
        inner = getattr(fn.f_locals["fn"], "__name__", "")
        if inner:
            name = f"{name}({inner})"
    return name


class Counts(trio.abc.Instrument):
    """Scheduler passes and task steps; with `detail`, by task and resume point."""

    def __init__(self, detail: bool = True) -> None:
        self.passes = 0
        self.steps = 0
        self.empty_passes = 0
        """Passes that stepped no task (a wake-up with nothing to run)."""
        self.detail = detail
        self.by_step: collections.Counter[str] = collections.Counter()
        """Steps by `task label @ where it resumed`."""
        self.by_pass: collections.Counter[str] = collections.Counter()
        """Closed passes by the tasks they stepped, in order."""
        self.log: list[tuple[str, ...]] | None = None
        """With `record()`, every closed pass's steps, in order."""
        self._labels: dict[int, str] = {}
        self._current: list[str] = []

    def after_io_wait(self, timeout: float) -> None:
        if self.passes:
            if not self._current:
                self.empty_passes += 1
            if self.detail:
                signature = tuple(self._current)
                self.by_pass[" + ".join(signature) or "(nothing)"] += 1
                if self.log is not None:
                    self.log.append(signature)
            self._current.clear()
        self.passes += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if not self.detail:
            self._current.append("")
            return
        label = self._labels.get(id(task))
        if label is None:
            label = self._labels[id(task)] = task_label(task)
        step = f"{label} @ {_where(task)}"
        self.by_step[step] += 1
        self._current.append(label)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._labels.pop(id(task), None)

    def record(self) -> list[tuple[str, ...]]:
        """Start keeping every pass's steps (the test's diagnostics)."""
        self.log = []
        return self.log


@dataclass
class Created:
    """trio.Event and trio.CancelScope objects constructed while `installed`."""

    events: int = 0
    cancel_scopes: int = 0
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def install(self) -> Created:
        self._wrap(trio.Event, "events")
        self._wrap(trio.CancelScope, "cancel_scopes")
        return self

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap(self, cls: type[Any], counter: str) -> None:
        original = cls.__init__

        def init(obj: Any, *args: Any, **kwargs: Any) -> None:
            setattr(self, counter, getattr(self, counter) + 1)
            original(obj, *args, **kwargs)

        cls.__init__ = init
        self._undo.append(lambda: setattr(cls, "__init__", original))


@dataclass(frozen=True, slots=True)
class Snapshot:
    t: float
    """time.monotonic() (CLOCK_MONOTONIC, the bench's clock too)."""
    final: bool
    passes: int
    empty_passes: int
    steps: int
    events_created: int
    cancel_scopes_created: int
    frames_in: int
    """Frames read from the bot (uplink statistics)."""
    messages_out: int
    messages_in: int
    frames_played: int
    """Frames written to the bot's audio-out (downlink statistics)."""
    by_step: dict[str, int]
    by_pass: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def of(data: dict[str, Any]) -> Snapshot:
        return Snapshot(**data)


def take(
    counts: Counts, created: Created, sidecar: service.Sidecar | None, final: bool
) -> Snapshot:
    frames_in = messages_out = messages_in = played = 0
    if sidecar is not None:
        frames_in = sidecar.uplink.statistics().frames_in
        for link in sidecar.links:
            stats = link.statistics()
            messages_out += stats.messages_out
            messages_in += stats.messages_in
        played = sidecar.downlink.statistics().frames_written
    return Snapshot(
        t=time.monotonic(),
        final=final,
        passes=counts.passes,
        empty_passes=counts.empty_passes,
        steps=counts.steps,
        events_created=created.events,
        cancel_scopes_created=created.cancel_scopes,
        frames_in=frames_in,
        messages_out=messages_out,
        messages_in=messages_in,
        frames_played=played,
        by_step=dict(counts.by_step),
        by_pass=dict(counts.by_pass),
    )


def append(path: Path | None, snapshot: Snapshot) -> None:
    if path is None:
        return
    with path.open("a") as out:
        out.write(json.dumps(snapshot.to_json(), separators=(",", ":")) + "\n")


def read(path: Path) -> list[Snapshot]:
    if not path.exists():
        return []
    return [Snapshot.of(json.loads(line)) for line in path.read_text().splitlines() if line]


def main(argv: Sequence[str] | None = None) -> int:
    # Imported here: the bench process reads snapshots without importing the sidecar.
    from sidecar import cli, events, service
    from sidecar.config import ConfigError, secrets
    from sidecar.sockets import SocketPathError

    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] != "run":
        args_in.insert(0, "run")
    args = cli.parser().parse_args(args_in)
    try:
        config = cli.build_config(args)
    except ConfigError as exc:
        print(f"bench.counted: error: {exc}", file=sys.stderr)
        return service.EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    redacting = getattr(cli, "_RedactingFormatter", None)  # as sidecar.cli logs
    handler.setFormatter(redacting(fmt, secrets(config)) if redacting else logging.Formatter(fmt))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    target = os.environ.get(ENV)
    path = Path(target) if target else None
    counts = Counts()
    created = Created().install()
    holder: list[service.Sidecar] = []

    def snapshot(signum: int, frame: types.FrameType | None) -> None:
        append(path, take(counts, created, holder[0] if holder else None, final=False))

    signal.signal(SNAPSHOT_SIGNAL, snapshot)

    async def counted_main(parent: int) -> int:
        # service.main, with a handle on the Sidecar for its counters.
        sidecar = service.Sidecar(config, events.EventLog())
        holder.append(sidecar)
        return await sidecar.run(handle_signals=True, parent=parent)

    try:
        return trio.run(counted_main, os.getppid(), instruments=[counts])
    except SocketPathError as exc:
        print(f"bench.counted: error: {exc}", file=sys.stderr)
        return service.EXIT_USAGE
    finally:
        append(path, take(counts, created, holder[0] if holder else None, final=True))
        created.uninstall()


if __name__ == "__main__":
    sys.exit(main())
