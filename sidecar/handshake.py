"""The websocket upgrade answer, judged before our websocket library sees it.

When wsproto finds fault with an answer, trio-websocket sends the HTTP
rejection wsproto suggests, which a client cannot send: h11 raises
LocalProtocolError and the process dies. And trio-websocket reports a
rejection only after its whole body, however long or slow. So the stream
handed to trio-websocket is a HandshakeStream: it reads the answer's head
first, with h11 (the parser wsproto itself uses, so both read the same bytes
the same way), and

- passes a valid 101 upgrade on untouched, then steps out of the way;
- turns anything else into a HandshakeFailed raised from receive_some: a
  malformed or non-upgrading 101, bytes that are not HTTP, a head over
  HEAD_LIMIT, or a rejection, whose status is known from its head and whose
  body is read only for a reason to show (BODY_LIMIT bytes, BODY_WAIT seconds).

What a failure means for the link (retry or give up) is decided in one place,
sidecar/link.py; this module only says what is wrong.

UpgradeCheck is the sans-I/O part: it learns the key from the request bytes
we send and judges the answer bytes.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from collections.abc import Iterable

import h11
import trio

from sidecar.redact import Redactor

# An answer head larger than this is refused (h11's default bound, which
# wsproto applies too, so the bytes we pass on are ones it accepts).
HEAD_LIMIT = 16384
# Of a rejection's body, what we read for the reason, and for how long after the head.
BODY_LIMIT = 4096
BODY_WAIT = 0.5
# Of that body, what the reason shows.
SHOWN_CHARS = 200

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HANG_UP = "the server closed the connection during the handshake"
_INVALID = "invalid handshake answer: "
_SPACE = re.compile(r"[\s\x00-\x1f\x7f]+")
_NOTHING = Redactor()


class HandshakeFailed(Exception):
    """The server's answer to the upgrade request was not a usable websocket upgrade.

    `status` is set for a rejection (a final HTTP answer instead of 101), so
    the link can tell a 4xx from a 5xx; it is None for a malformed answer.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Progress(enum.Enum):
    HEAD = "reading the answer's head"
    UPGRADED = "a valid 101: the rest is websocket"
    BODY = "a rejection's head is read; reading its body for the reason"
    REJECTED = "a rejection, read as far as we will"


def accept_token(key: bytes) -> bytes:
    """RFC 6455 4.2.2: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def excerpt(
    data: bytes | bytearray, limit: int = SHOWN_CHARS, redact: Redactor | None = None
) -> str:
    """Server-supplied bytes as one short line fit for an event, redacted
    before it is cut (so no secret straddles the cut)."""
    text = _SPACE.sub(" ", bytes(data).decode("utf-8", errors="replace")).strip()
    return (redact or _NOTHING).cut(text, limit)


class UpgradeCheck:
    """Sans-I/O: feed it the request we send, then the answer we receive.

    `subprotocols` are those the websocket library was asked to offer. What it
    accepts is judged against those, not against the request's headers: a
    --header can add a Sec-WebSocket-Protocol or Sec-WebSocket-Extensions line
    that wsproto knows nothing of, and would reject a server for accepting.
    For the same reason no extension is ever acceptable: trio-websocket offers
    none.
    """

    def __init__(self, subprotocols: Iterable[str] = (), redact: Redactor | None = None) -> None:
        self._redact = redact or _NOTHING
        # Our own request is parsed as a server would, to learn the key ...
        self._request = h11.Connection(h11.SERVER)
        # ... and replayed into a client connection, which then parses the answer
        # in the state wsproto's does.
        self._answer = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        self._accept = b""
        self._subprotocols = frozenset(p.encode() for p in subprotocols)
        self.request_complete = False
        self.progress = Progress.HEAD
        self.head_bytes = 0
        self._status = 0
        self._body = bytearray()

    def sent(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes we sent; once the request is complete, we know what we offered."""
        if self.request_complete:
            return
        self._request.receive_data(bytes(data))
        event = self._request.next_event()
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):
            raise RuntimeError(f"not an upgrade request: {event!r}")
        # wsproto writes its own key before any extra header: the first is its.
        key = next((v for name, v in event.headers if name == b"sec-websocket-key"), b"")
        self._accept = accept_token(key)
        self._answer.send(event)
        self.request_complete = True

    def received(self, data: bytes | bytearray) -> Progress:
        """Bytes of the answer (b"" at EOF); raises HandshakeFailed for a bad one."""
        if not self.request_complete:
            raise RuntimeError("an answer before the request was sent")
        if self.progress is Progress.HEAD:
            self.head_bytes += len(data)
            if not data:
                partial = " in the middle of its answer" if self.head_bytes else ""
                raise HandshakeFailed(_HANG_UP + partial)
        elif self.progress is not Progress.BODY:
            return self.progress
        self._answer.receive_data(bytes(data))
        while self.progress is Progress.HEAD or self.progress is Progress.BODY:
            try:
                event = self._answer.next_event()
            except h11.RemoteProtocolError as exc:
                if self.progress is Progress.BODY:
                    # A body cut short or garbled: the status still stands.
                    self.progress = Progress.REJECTED
                    break
                raise self._malformed(exc) from None
            if not isinstance(event, h11.Event):  # NEED_DATA, or PAUSED after a 101
                break
            self._on(event)
        if self.progress is Progress.HEAD and self.head_bytes > HEAD_LIMIT:
            raise HandshakeFailed(f"{_INVALID}header section over {HEAD_LIMIT} bytes")
        return self.progress

    def rejection(self) -> HandshakeFailed:
        """The rejection, with what we read of its body as the reason."""
        assert self._status, "no rejection"
        reason = f"handshake rejected with HTTP {self._status}"
        shown = excerpt(self._body, redact=self._redact)
        return HandshakeFailed(f"{reason}: {shown}" if shown else reason, self._status)

    def _on(self, event: h11.Event) -> None:
        if isinstance(event, h11.InformationalResponse):
            problem = self._problem(event)
            if problem is not None:
                raise HandshakeFailed(_INVALID + problem)
            self.progress = Progress.UPGRADED
        elif isinstance(event, h11.Response):
            self._status = event.status_code
            self.progress = Progress.BODY
        elif isinstance(event, h11.Data):
            self._body += event.data[: BODY_LIMIT - len(self._body)]
            if len(self._body) >= BODY_LIMIT:
                self.progress = Progress.REJECTED
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            self.progress = Progress.REJECTED

    def _malformed(self, exc: h11.RemoteProtocolError) -> HandshakeFailed:
        if self.head_bytes > HEAD_LIMIT:
            return HandshakeFailed(f"{_INVALID}header section over {HEAD_LIMIT} bytes")
        shown = excerpt(str(exc).encode(), redact=self._redact)
        return HandshakeFailed(f"{_INVALID}not valid HTTP ({shown})")

    def _problem(self, answer: h11.InformationalResponse) -> str | None:
        """What is wrong with a 1xx answer, per RFC 6455 4.1, or None.

        wsproto checks the same after us and must never find fault where we
        found none, or it crashes the connection as described above: so each
        check is at least as strict as its own (which reads the last header of
        each name and decodes some as ASCII).
        """
        if answer.status_code != 101:
            return f"HTTP {answer.status_code} instead of 101 Switching Protocols"
        found: dict[bytes, list[bytes]] = {}
        for name, value in answer.headers:
            found.setdefault(name, []).append(value)
        upgrade = found.get(b"upgrade", [b""])
        if upgrade[-1].lower() != b"websocket":
            return "no 'Upgrade: websocket' header" + self._got(upgrade)
        connection = found.get(b"connection", [b""])
        if not all(v.isascii() for v in connection) or b"upgrade" not in {
            token.strip().lower() for token in connection[-1].split(b",")
        }:
            return "no 'Connection: upgrade' header" + self._got(connection)
        accepts = found.get(b"sec-websocket-accept")
        if accepts is None:
            return "no Sec-WebSocket-Accept header"
        if any(accept != self._accept for accept in accepts):
            return "wrong Sec-WebSocket-Accept (not derived from the key the sidecar sent)"
        for protocol in found.get(b"sec-websocket-protocol", []):
            if not protocol.isascii() or protocol not in self._subprotocols:
                return f"subprotocol {self._shown(protocol)!r}, which the sidecar did not offer"
        for value in found.get(b"sec-websocket-extensions", []):
            name = value.split(b",")[0].split(b";")[0].strip()
            return f"extension {self._shown(name)!r}, which the sidecar did not offer"
        return None

    def _shown(self, value: bytes) -> str:
        """A header value the server sent, short, redacted before it is cut."""
        return excerpt(value, 60, self._redact)

    def _got(self, values: list[bytes]) -> str:
        return f" (got {self._shown(values[-1])!r})" if values[-1] else ""


class HandshakeStream(trio.abc.Stream):
    """A stream that checks the upgrade answer, then is its inner stream.

    After the request is sent, send_all is the inner stream's own method; after
    a valid 101 (and the bytes read with it) is handed over, so is receive_some:
    the connection's every later read and write costs nothing extra.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        subprotocols: Iterable[str] = (),
        redact: Redactor | None = None,
    ) -> None:
        self._stream = stream
        self._check = UpgradeCheck(subprotocols, redact)
        # The validated head and whatever websocket bytes came with it.
        self._ahead = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check.sent(data)
        if self._check.request_complete:
            self.send_all = self._stream.send_all  # type: ignore[method-assign]
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        check = self._check
        while check.progress is Progress.HEAD:
            # Never more than one byte past the bound: a head is judged on at
            # most HEAD_LIMIT + 1 bytes, however much the server sends.
            want = HEAD_LIMIT + 1 - check.head_bytes
            data = await self._stream.receive_some(
                want if max_bytes is None else min(want, max_bytes)
            )
            check.received(data)
            self._ahead += data
        if check.progress is Progress.UPGRADED:
            return self._hand_over(max_bytes)
        await self._read_body()
        raise check.rejection()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def _hand_over(self, max_bytes: int | None) -> bytes:
        ahead = self._ahead
        size = len(ahead) if max_bytes is None else min(max_bytes, len(ahead))
        chunk = bytes(ahead[:size])
        del ahead[:size]
        if not ahead:
            self.receive_some = self._stream.receive_some  # type: ignore[method-assign]
        return chunk

    async def _read_body(self) -> None:
        check = self._check
        with trio.move_on_after(BODY_WAIT):
            while check.progress is Progress.BODY:
                try:
                    data = await self._stream.receive_some(BODY_LIMIT)
                except trio.BrokenResourceError:
                    return
                check.received(data)


__all__ = ["HandshakeFailed", "HandshakeStream", "UpgradeCheck", "accept_token"]
