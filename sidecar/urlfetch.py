"""The per-connection URL request's I/O: one HTTP GET with h11 over trio.

A dialect may need a URL made fresh for each connection (ElevenLabs' signed
URL, which expires): it builds the request and reads the answer, sans-I/O
(`Dialect.url_request`, `Dialect.url_from_answer`); this module only carries
the bytes. Bounded in time by the caller (`trio.fail_after`) and here in
bytes; errors never quote the answer's body (it may carry a token back) nor
the request's query or headers.
"""

from __future__ import annotations

import ssl
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

from sidecar.config import redact_url, request_target
from sidecar.dialects.base import UrlRequest

MAX_ANSWER_BYTES: Final = 64 * 1024
"""Of an answer's head and body together: a signed URL's JSON is a few hundred bytes."""
READ_BYTES: Final = 16 * 1024


class UrlFetchFailed(Exception):
    """No usable answer; `status` is set when the server answered non-2xx."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


async def fetch(
    request: UrlRequest, context: ssl.SSLContext, max_bytes: int = MAX_ANSWER_BYTES
) -> tuple[int, bytes]:
    """GET `request.url`; returns (status, body) of a 2xx answer. Raises
    UrlFetchFailed for any other answer or a malformed one; network and TLS
    errors (OSError, trio.BrokenResourceError from ssl.SSLError) as they come,
    so the caller judges them as it does a websocket's."""
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlFetchFailed(f"{redact_url(request.url)} is no http:// or https:// URL")
    tls = parts.scheme == "https"
    host, target = request_target(request.url)
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port or (443 if tls else 80))
    stream: trio.abc.Stream = tcp
    try:
        if tls:
            stream = trio.SSLStream(tcp, context, server_hostname=parts.hostname)
            await stream.do_handshake()
        return await _exchange(stream, host, target, request, max_bytes)
    finally:
        await trio.aclose_forcefully(stream)


async def _exchange(
    stream: trio.abc.Stream, host: str, target: str, request: UrlRequest, max_bytes: int
) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_bytes)
    headers = [
        ("Host", host),
        ("Accept", "application/json"),
        ("Connection", "close"),
        *request.headers,
    ]
    try:
        head = h11.Request(method="GET", target=target, headers=headers)
    except h11.LocalProtocolError as exc:
        # Names the problem, never a header's value.
        raise UrlFetchFailed(f"the request cannot be sent: {exc}") from None
    await stream.send_all(conn.send(head) + conn.send(h11.EndOfMessage()))
    status: int | None = None
    body = bytearray()
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise UrlFetchFailed(f"malformed HTTP answer: {exc}") from None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_BYTES)
            received += len(data)
            if received > max_bytes:
                raise UrlFetchFailed(f"the answer exceeds {max_bytes} bytes")
            conn.receive_data(bytes(data))
            continue
        match event:
            case h11.InformationalResponse():
                continue
            case h11.Response(status_code=code, reason=phrase):
                status = code
                if not 200 <= code < 300:
                    text = phrase.decode("ascii", "replace")[:80]
                    raise UrlFetchFailed(f"HTTP {code} {text}".rstrip(), code)
            case h11.Data(data=data):
                body += data
            case h11.EndOfMessage():
                assert status is not None
                return status, bytes(body)
            case h11.ConnectionClosed():
                raise UrlFetchFailed("the server closed before the answer was complete")
