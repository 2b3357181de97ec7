"""The control channel: the bot's commands in, every event out (the trio shell).

Commands come as JSON lines from one client of the `--control` socket (or
the inherited `--control-fd` connection) and, with `--control-stdin`, from
stdin. `commands.py` reads them; here they are carried out and each gets its
one `command_result` event. The socket's client also reads every event line,
as stdout carries them, through a bounded subscriber of the event log: a
client that does not read loses the oldest lines, counted, never the
sidecar's time. The agent's tool calls wait in `calls.ToolCalls`, whose
timer runs here.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from sidecar import events
from sidecar.calls import TIMEOUT_S, CallStatistics, ToolCalls
from sidecar.commands import Clear, LineReader, Mute, Parsed, Refusal, parse, refusal
from sidecar.dialects import base
from sidecar.dialects.base import (
    COMMANDS,
    AgentCommand,
    Dialect,
    RawSend,
    SessionEnded,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
)
from sidecar.outbox import MAX_CONTROL_BYTES, control_bytes
from sidecar.sockets import REFUSE_TIMEOUT_S, serve_unix_listener

READ_SIZE = 65536
# What a client's writes are gathered into: fewer system calls than one per
# line, and never one copy of a whole backlog.
WRITE_SIZE = 65536
# After the client's end of input, how long what it is owed (the answers to
# its last commands) may take to reach it before the connection closes.
FLUSH_S = REFUSE_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class ControlStatistics:
    commands: int
    refused: dict[str, int]
    """Commands answered ok: false, by error code."""
    events_dropped: int
    calls: CallStatistics


class Control:
    """Carries out the bot's commands; keeps the agent's tool calls."""

    def __init__(
        self,
        log: events.EventLog,
        dialect: Dialect,
        reply: Callable[[base.Control], None],
        mute: Callable[[bool], None],
        clear: Callable[[], None],
        tool_timeout: float = TIMEOUT_S,
    ) -> None:
        self._log = log
        self._dialect = dialect
        self._reply = reply
        self._mute = mute
        self._clear = clear
        self.calls = ToolCalls(tool_timeout)
        self._timer: trio.CancelScope | None = None
        self._client: events.Subscriber | None = None
        self._commands = 0
        self._refused: collections.Counter[str] = collections.Counter()
        # Of clients gone; the connected one's are added when asked.
        self._events_dropped = 0

    def statistics(self) -> ControlStatistics:
        live = 0 if self._client is None else self._client.dropped
        return ControlStatistics(
            commands=self._commands,
            refused=dict(self._refused),
            events_dropped=self._events_dropped + live,
            calls=self.calls.statistics(),
        )

    # -- the agent's tool calls ------------------------------------------------------

    def on_calls(self, incoming: ToolCallIn | ToolCallCancelledIn | SessionEnded) -> None:
        """The downlink's word on the tool calls (the dialect's, and the link's)."""
        match incoming:
            case ToolCallIn():
                self._out(self.calls.called(incoming, trio.current_time()))
            case ToolCallCancelledIn():
                self._out(self.calls.cancelled(incoming))
            case SessionEnded():
                self._out(self.calls.session_ended())
        self._rearm()

    async def serve_timer(self) -> None:
        """Answers the calls nobody answered in time."""
        while True:
            deadline = self.calls.deadline
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as timer:
                self._timer = timer
                await trio.sleep_forever()
            self._timer = None
            self._out(self.calls.expire(trio.current_time()))

    def _rearm(self) -> None:
        if self._timer is not None:
            deadline = self.calls.deadline
            self._timer.deadline = math.inf if deadline is None else deadline

    def _out(self, items: list[events.Event | ToolResult]) -> None:
        for item in items:
            if isinstance(item, ToolResult):
                self._reply(item)
            else:
                self._log.emit(item)

    # -- commands ------------------------------------------------------------------------

    def handle(self, line: bytes | Refusal) -> events.CommandResult:
        """One command line (or the reader's refusal of one): carried out, answered."""
        self._commands += 1
        result = self._execute(parse(line) if isinstance(line, bytes) else line)
        if result.error is not None:
            self._refused[result.error.code] += 1
        self._log.emit(result)
        return result

    def _execute(self, parsed: Parsed | Refusal) -> events.CommandResult:
        if isinstance(parsed, Refusal):
            return parsed.result()
        ident, name, action = parsed.id, parsed.command, parsed.action

        def refused(code: str, message: str) -> events.CommandResult:
            return refusal(code, message, ident, name).result()

        match action:
            case Mute(muted=muted):
                self._mute(muted)
            case AgentCommand() | RawSend():
                if isinstance(action, AgentCommand):
                    why = self._dialect.refuses(COMMANDS[type(action)])
                    if why is not None:
                        return refused("unsupported", why)
                if control_bytes(action) > MAX_CONTROL_BYTES:
                    # The control lane would drop it at once, and unsaid.
                    return refused(
                        "too_large",
                        f"larger than the control lane holds ({MAX_CONTROL_BYTES >> 20} MiB)",
                    )
                if isinstance(action, ToolResult) and not self.calls.answer(action.call_id):
                    return refused(
                        "stale",
                        f"no tool call {action.call_id!r} is waiting (answered, timed out, "
                        "cancelled, or its session ended)",
                    )
                self._rearm()
                # Queued for the link: sent now, or on the next connection.
                self._reply(action)
            case Clear():
                self._clear()
        return events.CommandResult(id=ident, command=name, ok=True)

    # -- the channels ----------------------------------------------------------------------

    async def serve_listener(self, listener: trio.SocketListener) -> None:
        await serve_unix_listener(listener, self.serve_connection, name="control")

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """One client: its commands in, every event out, until either side ends."""
        async with stream:
            if self._client is not None:
                busy = refusal("busy", "another client is connected to the control socket")
                with (
                    trio.move_on_after(REFUSE_TIMEOUT_S),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await stream.send_all(self._log.line(busy.result()))
                return
            client = self._client = events.Subscriber()
            self._log.subscribe(client)
            try:
                async with trio.open_nursery() as nursery:

                    async def read() -> None:
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError
                        ):
                            await self._read(stream)
                        # The answers to its last commands are still its due.
                        client.close()
                        nursery.cancel_scope.deadline = trio.current_time() + FLUSH_S

                    async def write() -> None:
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError
                        ):
                            await _write(stream, client)
                        nursery.cancel_scope.cancel()

                    async def warn() -> None:
                        await client.dropping.wait()
                        self._log.emit(
                            events.WarningEvent(
                                message="the control client reads events too slowly: the "
                                "oldest are being dropped (stats.control_events_dropped)",
                                code="control_events_dropped",
                            )
                        )

                    nursery.start_soon(read)
                    nursery.start_soon(write)
                    nursery.start_soon(warn)
            finally:
                self._log.unsubscribe(client)
                self._events_dropped += client.dropped
                self._client = None

    async def _read(self, stream: trio.abc.ReceiveStream) -> None:
        reader = LineReader()
        while data := await stream.receive_some(READ_SIZE):
            for line in reader.feed(bytes(data)):
                self.handle(line)
        for line in reader.end():
            self.handle(line)

    async def serve_stdin(self, on_eof: Callable[[], None] | None, fd: int = 0) -> None:
        """--control-stdin: commands as lines on stdin; `on_eof` when it closes."""
        reader = LineReader()
        while True:
            try:
                data = await trio.to_thread.run_sync(os.read, fd, READ_SIZE, abandon_on_cancel=True)
            except OSError:
                data = b""  # no stdin at all (closed by the parent): its end
            if not data:
                break
            for line in reader.feed(data):
                self.handle(line)
        for line in reader.end():
            self.handle(line)
        if on_eof is not None:
            on_eof()


async def _write(stream: trio.abc.SendStream, client: events.Subscriber) -> None:
    while batch := await client.take():
        pending: list[bytes] = []
        size = 0
        for line in batch:
            pending.append(line)
            size += len(line)
            if size >= WRITE_SIZE:
                await stream.send_all(b"".join(pending))
                pending, size = [], 0
        if pending:
            await stream.send_all(b"".join(pending))
        client.written()
