"""The websocket supervisor: connect, keep alive, replace dead links, retry.

One connection at a time. Inside a connection three tasks run: a reader that
always drains `get_message()` (trio-websocket stops answering pings when its
queue is full), a sender that drains the Outbox with a bounded send, and a
pinger whose pong wait is bounded. The first of them to finish ends the
connection; the retry policy decides what happens next.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio
import trio_websocket as tw

from sidecar import events
from sidecar.config import Config, redact_url
from sidecar.outbox import Outbox
from sidecar.retry import RetryPolicy


class LinkGaveUp(Exception):
    """The last retry failed."""


class LinkRejected(Exception):
    """The server refused us in a way retrying cannot fix (4xx, bad certificate)."""


@dataclass(slots=True)
class LinkStatistics:
    connected: bool = False
    connects: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    samples_out: int = 0
    messages_in: int = 0
    bytes_in: int = 0


class _Ended(Exception):
    """Internal: a connection task ended the connection, with a reason."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if config.ca_file is not None:
        context.load_verify_locations(cafile=str(config.ca_file))
    return context


class Link:
    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        on_message: Callable[[str | bytes], None],
        log: events.EventLog,
        *,
        url: str | None = None,
    ) -> None:
        self._config = config
        self._url = url or config.url
        self._outbox = outbox
        self._on_message = on_message
        self._log = log
        self._policy = RetryPolicy(config.retry)
        self._ssl = ssl_context(config) if self._url == config.url else None
        if self._url.startswith("wss://") and self._ssl is None:
            self._ssl = ssl.create_default_context()
            if config.ca_file is not None:
                self._ssl.load_verify_locations(cafile=str(config.ca_file))
        self._headers = [(k.encode(), v.encode()) for k, v in config.headers]
        self._wake = trio.Event()
        self._stopping = trio.Event()
        self._stats = LinkStatistics()

    @property
    def connected(self) -> bool:
        return self._stats.connected

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(**{f: getattr(self._stats, f) for f in LinkStatistics.__slots__})

    def notify(self) -> None:
        """Something was put in the outbox."""
        self._wake.set()

    def stop(self) -> None:
        """Close the current connection with 1000 and stop retrying."""
        self._stopping.set()
        self._wake.set()

    async def serve(self) -> None:
        """Run until stopped or cancelled; raise LinkGaveUp or LinkRejected."""
        redacted = redact_url(self._url)
        while not self._stopping.is_set():
            reason, code, was_connected = await self._attempt(redacted)
            self._stats.connected = False
            self._outbox.disconnected()
            if was_connected:
                self._log.emit(events.Disconnected(reason=reason, code=code))
            if self._stopping.is_set():
                return
            delay = self._policy.failed(trio.current_time())
            if delay is None:
                attempts = self._policy.attempt
                self._log.emit(events.GaveUp(reason=reason, attempts=attempts))
                raise LinkGaveUp(f"gave up after {attempts} retries: {reason}")
            self._log.emit(
                events.Retrying(
                    attempt=self._policy.attempt,
                    of=self._policy.max_retries,
                    delay=round(delay, 3),
                    reason=reason,
                )
            )
            with trio.move_on_after(delay):
                await self._stopping.wait()

    async def _attempt(self, redacted: str) -> tuple[str, int | None, bool]:
        config = self._config
        connected = False
        try:
            async with tw.open_websocket_url(
                self._url,
                ssl_context=self._ssl,
                extra_headers=self._headers,
                message_queue_size=16,
                # Our own limit (config.max_message_bytes) answers with an error
                # reply; this hard cap only stops a hostile server's memory attack.
                max_message_size=4 * config.max_message_bytes,
                connect_timeout=config.connect_timeout,
                disconnect_timeout=config.close_timeout,
            ) as ws:
                connected = True
                self._policy.connected(trio.current_time())
                self._stats.connected = True
                self._stats.connects += 1
                self._log.emit(events.Connected(url=redacted, attempt=self._stats.connects))
                reason, code = await self._run(ws)
                return reason, code, True
        except tw.ConnectionRejected as exc:
            status = exc.status_code
            if 400 <= status < 500:
                reason = f"handshake rejected with HTTP {status}"
                self._log.emit(events.GaveUp(reason=reason, attempts=0, status=status))
                raise LinkRejected(reason) from None
            return f"handshake rejected with HTTP {status}", None, connected
        except tw.ConnectionTimeout:
            return f"no handshake within {config.connect_timeout:g} s", None, connected
        except tw.DisconnectionTimeout:
            return "close handshake timed out", None, connected
        except tw.HandshakeError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason = f"TLS certificate rejected: {cause.verify_message}"
                self._log.emit(events.GaveUp(reason=reason, attempts=0))
                raise LinkRejected(reason + " (use --ca-file for a private CA)") from None
            return f"cannot connect: {_describe(cause or exc)}", None, connected
        except tw.ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else None
            return _close_text(exc.reason), code, connected
        except _Ended as exc:
            return exc.reason, exc.code, connected
        except OSError as exc:
            return f"connection failed: {_describe(exc)}", None, connected

    async def _run(self, ws: tw.WebSocketConnection) -> tuple[str, int | None]:
        ended: list[_Ended] = []

        async def guard(fn: Callable[[tw.WebSocketConnection], object]) -> None:
            try:
                await fn(ws)  # type: ignore[misc]
            except _Ended as exc:
                ended.append(exc)
            except tw.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason else None
                ended.append(_Ended(_close_text(exc.reason), code))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard, self._read)
            nursery.start_soon(guard, self._send)
            nursery.start_soon(guard, self._ping)
        first = ended[0] if ended else _Ended("connection ended")
        if self._stopping.is_set():
            with trio.move_on_after(self._config.close_timeout) as scope:
                scope.shield = True
                await ws.aclose(code=1000, reason="sidecar stopping")
            return "sidecar stopping", 1000
        return first.reason, first.code

    async def _read(self, ws: tw.WebSocketConnection) -> None:
        while True:
            message = await ws.get_message()
            self._stats.messages_in += 1
            self._stats.bytes_in += len(message)
            self._on_message(message)

    async def _send(self, ws: tw.WebSocketConnection) -> None:
        outbox = self._outbox
        while True:
            item = outbox.get()
            if item is None:
                if self._stopping.is_set():
                    raise _Ended("sidecar stopping", 1000)
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            try:
                with trio.fail_after(self._config.send_timeout):
                    await ws.send_message(item.text)
            except trio.TooSlowError:
                outbox.count_lost(item, "in_flight")
                raise _Ended(
                    f"server did not accept a message within {self._config.send_timeout:g} s"
                ) from None
            except (tw.ConnectionClosed, OSError, trio.BrokenResourceError):
                outbox.count_lost(item, "in_flight")
                raise
            self._stats.messages_out += 1
            self._stats.bytes_out += len(item.text)
            self._stats.samples_out += item.samples

    async def _ping(self, ws: tw.WebSocketConnection) -> None:
        interval, timeout = self._config.ping_interval, self._config.ping_timeout
        while True:
            await trio.sleep(interval)
            try:
                with trio.fail_after(timeout):
                    await ws.ping()
            except trio.TooSlowError:
                raise _Ended(f"no pong within {timeout:g} s: peer is dead") from None


def _close_text(reason: tw.CloseReason | None) -> str:
    if reason is None:
        return "connection closed"
    text = f"closed by server with code {reason.code} ({reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


__all__ = ["Link", "LinkGaveUp", "LinkRejected", "LinkStatistics", "math"]
