"""The one nursery that wires the sidecar together; signals and lifecycle."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import trio

from sidecar import __version__, dialects, events, messages, stats
from sidecar.config import Config, Endpoint, dialect_options, redact_url, secrets
from sidecar.control import Control
from sidecar.dialects import base
from sidecar.downlink import Downlink
from sidecar.gate import PauseGate
from sidecar.link import Link, LinkEnded, LinkGaveUp, LinkRejected, LinkUnusable
from sidecar.memory import ConversationRecord, MemorySnapshot
from sidecar.outbox import Outbox
from sidecar.recall import Recall
from sidecar.redact import Redactor
from sidecar.sockets import adopt_fd, open_unix_listener
from sidecar.uplink import Route, Uplink

log = logging.getLogger("sidecar")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_GAVE_UP = 3
EXIT_REJECTED = 4
EXIT_INTERRUPTED = 130
"""Ctrl-C in a tool, as a shell reports a job ended by SIGINT (128 + 2)."""

# How long a graceful stop may take before everything is cancelled.
STOP_GRACE_S = 3.0
# How long the last events (stats, stopped) may wait for a parent that reads
# stdout slowly; one that does not read at all loses them rather than our exit.
EVENTS_DRAIN_S = 1.0
PARENT_POLL_S = 0.5
STDIN_CLOSED = "stdin closed (parent gone)"


@dataclass(slots=True)
class _Outcome:
    code: int = EXIT_OK
    reason: str = "stopped"


class Sidecar:
    def __init__(self, config: Config, log_sink: events.EventLog) -> None:
        self.config = config
        self.events = log_sink
        self.redactor = Redactor.for_run(secrets(config), os.environ)
        if log_sink.redact is None:
            log_sink.redact = self.redactor
        self.outcome = _Outcome()
        live_ms = max(2000.0, config.replay_ms)
        self.outbox = Outbox(config.replay_ms, live_ms)
        self.gate = None if config.pause_threshold is None else PauseGate(config.pause_threshold)
        self.dialect = dialects.make(config.protocol, dialect_options(config))
        # The conversation as the meeting heard it, for every new agent session.
        self.recall = (
            Recall(ConversationRecord(config.memory_turns, config.memory_chars))
            if config.memory
            else None
        )
        self.control = Control(
            log_sink,
            self.dialect,
            self._reply,
            mute=lambda muted: self.uplink.mute(muted),
            clear=self._bot_clear,
            tool_timeout=config.tool_timeout,
        )
        self.downlink = Downlink(
            config,
            log_sink,
            self._reply,
            self.gate,
            error_replies=self.dialect.error_replies,
            on_calls=self.control.on_calls,
        )
        self.link = Link(
            config,
            self.outbox,
            self.dialect,
            self._incoming,
            log_sink,
            redactor=self.redactor,
            history=self._history,
            quiet=self._quiet,
        )
        mixed = Route(self.outbox, self.link.notify)
        self.links = [self.link]
        participants: Route | None = None
        if config.per_participant:
            url = config.per_participant_url or config.url
            if url == config.url:
                participants = mixed
            else:
                self.participant_outbox = Outbox(config.replay_ms, live_ms)
                plink = Link(
                    config,
                    self.participant_outbox,
                    self.dialect,
                    self._participant_incoming,
                    log_sink,
                    url=url,
                    redactor=self.redactor,
                )
                self.links.append(plink)
                participants = Route(self.participant_outbox, plink.notify)
        self.uplink = Uplink(config, mixed, participants, log_sink, gate=self.gate)
        self._stopping = False
        self._links_running = len(self.links)
        self._links_done = trio.Event()

    async def _incoming(self, incoming: base.Incoming) -> None:
        if self.recall is not None:
            if isinstance(incoming, base.ClearPlayout):
                self._clearing()
            self.recall.incoming(incoming)
        await self.downlink.on_incoming(incoming)

    def _bot_clear(self) -> None:
        self._clearing()
        self.downlink.clear(by_bot=True)

    def _clearing(self) -> None:
        """What of the agent's audio the clear about to come drops, for the record."""
        if self.recall is not None:
            self.recall.clearing(self.downlink.voice.playout.buffered_ms)

    def _history(self) -> MemorySnapshot | None:
        return None if self.recall is None else self.recall.snapshot()

    def _quiet(self) -> bool:
        """Nothing a new agent session would cut: no agent audio playing or
        queued for the bot, no tool call waiting for its result."""
        return self.downlink.voice.idle and not self.control.statistics().calls.pending

    async def _participant_incoming(self, incoming: base.Incoming) -> None:
        # The agent's tool calls belong to the main connection: the end of
        # the participants' own connection must not end them.
        if not isinstance(incoming, base.SessionEnded):
            await self.downlink.on_incoming(incoming)

    def _reply(self, item: base.Control) -> None:
        if self.recall is not None:
            self.recall.outgoing(item)
        self.outbox.put_control(item)
        self.link.notify()

    async def run(
        self,
        *,
        handle_signals: bool = False,
        parent: int = 0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Run until stopped; returns the exit code. Ready once started."""
        config = self.config
        async with (
            _open_endpoint(config.audio_in, _in_backlog(config)) as audio_in,
            _open_endpoint(config.audio_out) as audio_out,
            _open_control(config.control) as control,
            trio.open_nursery() as root,
        ):
            root.start_soon(self.events.serve)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for link in self.links:
                    nursery.start_soon(self._serve_link, link)
                nursery.start_soon(self.downlink.serve_clock)
                nursery.start_soon(self.uplink.serve_fill)
                nursery.start_soon(
                    self._serve_endpoint,
                    audio_in,
                    self.uplink.serve_listener,
                    self.uplink.serve_connection,
                )
                nursery.start_soon(
                    self._serve_endpoint,
                    audio_out,
                    self.downlink.serve_listener,
                    self.downlink.serve_connection,
                )
                nursery.start_soon(self._serve_stats)
                nursery.start_soon(self.control.serve_timer)
                if control is not None:
                    nursery.start_soon(
                        self._serve_endpoint,
                        control,
                        self.control.serve_listener,
                        self.control.serve_connection,
                    )
                if handle_signals:
                    nursery.start_soon(serve_signals, self)
                if config.control_stdin:
                    on_eof = self._stdin_closed if config.exit_on_stdin_eof else None
                    nursery.start_soon(self.control.serve_stdin, on_eof)
                elif config.exit_on_stdin_eof:
                    nursery.start_soon(serve_stdin_eof, self)
                if parent:
                    nursery.start_soon(serve_parent_watch, self, parent)
                for warning in config.warnings:
                    self.events.emit(events.WarningEvent(message=warning, code="config"))
                self.events.emit(
                    events.Ready(
                        audio_in=config.audio_in.describe(),
                        audio_out=config.audio_out.describe(),
                        url=redact_url(config.url),
                        bot_id=config.bot_id,
                        sample_rate=config.sample_rate,
                        pid=os.getpid(),
                        version=__version__,
                        contract=messages.PROTOCOL_VERSION,
                        dialect=self.dialect.name,
                        control=None if config.control is None else config.control.describe(),
                    )
                )
                task_status.started()
            for box in self._outboxes():
                # Stopped while disconnected (or before the server took it all).
                box.discard("stopped")
            self.events.emit(self._stats_event())
            self.events.emit(
                events.Stopped(reason=self.outcome.reason, exit_code=self.outcome.code)
            )
            with trio.move_on_after(EVENTS_DRAIN_S):
                await self.events.drain()
            root.cancel_scope.cancel()
        return self.outcome.code

    async def _serve_endpoint(
        self,
        endpoint: trio.SocketListener | trio.SocketStream,
        serve_listener: Callable[[trio.SocketListener], Awaitable[None]],
        serve_connection: Callable[[trio.abc.Stream], Awaitable[None]],
    ) -> None:
        if isinstance(endpoint, trio.SocketListener):
            await serve_listener(endpoint)
        else:
            await serve_connection(endpoint)
            await trio.sleep_forever()

    async def _serve_link(self, link: Link) -> None:
        try:
            await link.serve()
            self._link_done()
        except LinkEnded as exc:
            # The call is over: a graceful stop, as for SIGTERM (exit 0).
            self._link_done()
            self.stop(str(exc))
        except LinkGaveUp as exc:
            self._finish(EXIT_GAVE_UP, str(exc))
        except LinkRejected as exc:
            self._finish(EXIT_REJECTED, str(exc))
        except LinkUnusable as exc:
            self._finish(EXIT_USAGE, str(exc))

    def _link_done(self) -> None:
        self._links_running -= 1
        if not self._links_running:
            self._links_done.set()

    def _stdin_closed(self) -> None:
        self.stop(STDIN_CLOSED)

    def _finish(self, code: int, reason: str) -> None:
        if self.outcome.code == EXIT_OK:
            self.outcome = _Outcome(code, reason)
        log.error("%s", reason) if code else log.info("%s", reason)
        self._nursery.cancel_scope.cancel()

    def stop(self, reason: str) -> None:
        """Graceful stop: flush held audio, drain, close with 1000, then cancel."""
        if self._stopping:
            return
        self._stopping = True
        self.outcome = _Outcome(EXIT_OK, reason)
        log.info("stopping: %s", reason)
        self.uplink.flush()
        self._nursery.start_soon(self._stop)

    async def _stop(self) -> None:
        for link in self.links:
            link.stop()
        with trio.move_on_after(STOP_GRACE_S):
            await self._links_done.wait()
        self._nursery.cancel_scope.cancel()

    async def _serve_stats(self) -> None:
        while True:
            await trio.sleep(self.config.stats_interval)
            self.events.emit(self._stats_event())

    def _outboxes(self) -> list[Outbox]:
        if hasattr(self, "participant_outbox"):
            return [self.outbox, self.participant_outbox]
        return [self.outbox]

    def _stats_event(self) -> events.Stats:
        return stats.stats_event(
            links=[link.statistics() for link in self.links],
            uplink=self.uplink.statistics(),
            downlink=self.downlink.statistics(),
            voice=self.downlink.voice.statistics(),
            outboxes=[box.statistics() for box in self._outboxes()],
            gate=None if self.gate is None else self.gate.statistics(),
            events_dropped=self.events.dropped,
            control=self.control.statistics(),
            dialect_commands_dropped=self.dialect.commands_dropped,
        )


def _in_backlog(config: Config) -> int:
    """Room in the kernel's queue for every participant a bot connects at once.

    Past the backlog a non-blocking connect() fails with EAGAIN, and a bot that
    opens all its participant streams at meeting start would lose some of them
    while the sidecar is between accepts.
    """
    return config.max_participants + 2 if config.per_participant else 4


@contextlib.asynccontextmanager
async def _open_endpoint(
    endpoint: Endpoint, backlog: int = 4
) -> AsyncIterator[trio.SocketListener | trio.SocketStream]:
    if endpoint.fd is not None:
        stream = adopt_fd(endpoint.fd)
        try:
            yield stream
        finally:
            stream.socket.close()
        return
    assert endpoint.path is not None
    async with open_unix_listener(endpoint.path, backlog) as listener:
        yield listener


@contextlib.asynccontextmanager
async def _open_control(
    endpoint: Endpoint | None,
) -> AsyncIterator[trio.SocketListener | trio.SocketStream | None]:
    if endpoint is None:
        yield None
        return
    async with _open_endpoint(endpoint, backlog=1) as opened:
        yield opened


async def serve_signals(sidecar: Sidecar) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            sidecar.stop(f"received {signal.Signals(signum).name}")


async def serve_stdin_eof(sidecar: Sidecar) -> None:
    """Portable parent-death detection: the parent holds our stdin's other end."""
    fd = sys.stdin.fileno()
    while await trio.to_thread.run_sync(os.read, fd, 4096, abandon_on_cancel=True):
        pass
    sidecar.stop(STDIN_CLOSED)


async def serve_parent_watch(sidecar: Sidecar, parent: int) -> None:
    """Stop when the parent process exits.

    PR_SET_PDEATHSIG is not used on purpose: it fires when the parent *thread*
    that spawned us exits, and thread-pool spawners (trio's own open_process
    among them) retire such threads while the parent lives on. A pidfd becomes
    readable only when the parent process itself is gone.
    """
    if parent <= 1:
        return  # started by init or as a container's entrypoint: nothing to watch
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        sidecar.stop("parent process exited")
        return
    except (OSError, AttributeError):
        await _poll_parent(sidecar, parent)
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    sidecar.stop("parent process exited")


async def _poll_parent(sidecar: Sidecar, parent: int) -> None:
    # No pidfd (old kernel, other OS): reparenting changes our ppid.
    while os.getppid() == parent:  # noqa: ASYNC110 - no event exists to wait on
        await trio.sleep(PARENT_POLL_S)
    sidecar.stop("parent process exited")


async def main(config: Config, sink: events.EventLog | None = None, parent: int = 0) -> int:
    sidecar = Sidecar(config, sink or events.EventLog())
    return await sidecar.run(handle_signals=True, parent=parent)
