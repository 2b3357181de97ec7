"""The upgrade-answer check (sidecar/handshake.py), sans-I/O and as a stream.

The end-to-end tests in test_e2e_link.py run each bad answer against the real
sidecar; these pin the reasons, the bounds and the pass-through exactly, and
check against wsproto itself that nothing we let through can crash it.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import cast

import h11
import pytest
import trio
import trio.testing
import trio_websocket as tw
import wsproto
from e2e_peers import accept_key, read_upgrade_request, server_frame, upgrade_answer
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from sidecar import connection
from sidecar.dialects.base import Utf8Text
from sidecar.handshake import (
    BODY_LIMIT,
    BODY_WAIT,
    HEAD_LIMIT,
    HandshakeFailed,
    HandshakeStream,
    Progress,
    UpgradeCheck,
)
from sidecar.redact import Redactor


def client(
    subprotocols: list[str] | None = None, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[wsproto.WSConnection, bytes, bytes]:
    """A wsproto client (what trio-websocket runs), its request, and its key."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = ws.send(
        Request(
            host="127.0.0.1:1",
            target="/audio",
            subprotocols=subprotocols or [],
            extra_headers=extra_headers or [],
        )
    )
    head = h11.Connection(h11.SERVER)
    head.receive_data(request)
    event = head.next_event()
    assert isinstance(event, h11.Request)
    # The first: any extra header comes after wsproto's own.
    key = next(v for name, v in event.headers if name == b"sec-websocket-key")
    return ws, request, key


def checked(answer: bytes) -> UpgradeCheck:
    _, request, _ = client()
    check = UpgradeCheck()
    check.sent(request)
    check.received(answer)
    return check


def failure(answer: bytes) -> HandshakeFailed:
    _, request, _ = client()
    check = UpgradeCheck()
    check.sent(request)
    with pytest.raises(HandshakeFailed) as caught:
        check.received(answer)
    return caught.value


# -- the 101 answer ------------------------------------------------------------------


def test_a_valid_upgrade_passes() -> None:
    _, request, key = client()
    check = UpgradeCheck()
    check.sent(request)
    assert check.received(upgrade_answer(key)) is Progress.UPGRADED


def test_a_valid_upgrade_split_anywhere_passes() -> None:
    _, request, key = client()
    check = UpgradeCheck()
    check.sent(request[:7])
    halfway = check.request_complete
    check.sent(request[7:])
    assert not halfway and check.request_complete
    answer = upgrade_answer(key, extra=b"X-Anything: at all\r\n") + server_frame(1, b"hi")
    progress = [check.received(answer[i : i + 1]) for i in range(len(answer))]
    assert progress[-1] is Progress.UPGRADED
    assert progress.index(Progress.UPGRADED) == answer.index(b"\r\n\r\n") + 3


def test_an_offered_subprotocol_may_be_chosen() -> None:
    ws, request, key = client(["audio.v1", "audio.v2"])
    check = UpgradeCheck(["audio.v1", "audio.v2"])
    check.sent(request)
    answer = upgrade_answer(key, extra=b"Sec-WebSocket-Protocol: audio.v2\r\n")
    assert check.received(answer) is Progress.UPGRADED
    ws.receive_data(answer)
    assert [type(e) for e in ws.events()] == [AcceptConnection]


USER_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        (b"Sec-WebSocket-Protocol", b"audio", "subprotocol 'audio', which the sidecar did not"),
        (
            b"Sec-WebSocket-Extensions",
            b"permessage-deflate",
            "extension 'permessage-deflate', which the sidecar did not",
        ),
        (b"Sec-WebSocket-Key", USER_KEY, "wrong Sec-WebSocket-Accept"),
    ],
)
def test_what_a_header_flag_offers_behind_wsprotos_back_is_refused(
    header: bytes, value: bytes, reason: str
) -> None:
    """A --header can put these on the wire, but wsproto did not offer them and
    rejects (crashes on) a server that takes them up: so must we."""
    ws, request, key = client(extra_headers=[(header, value)])
    check = UpgradeCheck()
    check.sent(request)
    if header == b"Sec-WebSocket-Key":
        answer = upgrade_answer(USER_KEY)
    else:
        answer = upgrade_answer(key, extra=header + b": " + value + b"\r\n")
    with pytest.raises(HandshakeFailed, match=reason):
        check.received(answer)
    with pytest.raises(RemoteProtocolError):
        ws.receive_data(answer)


def bad_101(key: bytes) -> Iterator[tuple[str, bytes, str]]:
    """(case, answer, reason) for each way a 101 can be wrong."""
    accept = b"Sec-WebSocket-Accept: "
    yield (
        "wrong_accept",
        upgrade_answer(
            key, omit=b"Sec-WebSocket-Accept", extra=accept + accept_key(b"x") + b"\r\n"
        ),
        "wrong Sec-WebSocket-Accept (not derived from the key the sidecar sent)",
    )
    yield (
        "second_accept_wrong",
        upgrade_answer(key, extra=accept + b"bm9uZQ==\r\n"),
        "wrong Sec-WebSocket-Accept (not derived from the key the sidecar sent)",
    )
    yield (
        "no_accept",
        upgrade_answer(key, omit=b"Sec-WebSocket-Accept"),
        "no Sec-WebSocket-Accept header",
    )
    yield ("no_upgrade", upgrade_answer(key, omit=b"Upgrade"), "no 'Upgrade: websocket' header")
    yield (
        "upgrade_h2c",
        upgrade_answer(key, omit=b"Upgrade", extra=b"Upgrade: h2c\r\n"),
        "no 'Upgrade: websocket' header (got 'h2c')",
    )
    yield (
        "no_connection",
        upgrade_answer(key, omit=b"Connection"),
        "no 'Connection: upgrade' header",
    )
    yield (
        "connection_keep_alive_last",
        upgrade_answer(key, extra=b"Connection: keep-alive\r\n"),
        "no 'Connection: upgrade' header (got 'keep-alive')",
    )
    yield (
        "connection_not_ascii",
        upgrade_answer(key, omit=b"Connection", extra=b"Connection: upgrade, \xff\r\n"),
        "no 'Connection: upgrade' header (got 'upgrade, \ufffd')",
    )
    yield (
        "subprotocol",
        upgrade_answer(key, extra=b"Sec-WebSocket-Protocol: chat\r\n"),
        "subprotocol 'chat', which the sidecar did not offer",
    )
    yield (
        "empty_subprotocol",
        upgrade_answer(key, extra=b"Sec-WebSocket-Protocol: \r\n"),
        "subprotocol '', which the sidecar did not offer",
    )
    yield (
        "extension",
        upgrade_answer(key, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        "extension 'permessage-deflate', which the sidecar did not offer",
    )
    yield (
        "extension_with_parameters",
        upgrade_answer(
            key,
            extra=b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
        ),
        "extension 'permessage-deflate', which the sidecar did not offer",
    )
    yield (
        "empty_extensions",
        upgrade_answer(key, extra=b"Sec-WebSocket-Extensions: \r\n"),
        "extension '', which the sidecar did not offer",
    )
    yield (
        "interim_100",
        b"HTTP/1.1 100 Continue\r\n\r\n" + upgrade_answer(key),
        "HTTP 100 instead of 101 Switching Protocols",
    )


KEY = client()[2]


@pytest.mark.parametrize("case", [case for case, _, _ in bad_101(KEY)])
def test_each_bad_101_is_named(case: str) -> None:
    _, request, key = client()
    answer, reason = next((a, r) for c, a, r in bad_101(key) if c == case)
    check = UpgradeCheck()
    check.sent(request)
    with pytest.raises(HandshakeFailed) as caught:
        check.received(answer)
    assert caught.value.reason == "invalid handshake answer: " + reason
    assert caught.value.status is None


def test_bytes_that_are_not_http_are_named() -> None:
    exc = failure(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    assert exc.reason.startswith("invalid handshake answer: not valid HTTP (illegal status line")
    assert exc.status is None


def test_a_head_over_the_bound_is_refused_on_one_byte_past_it() -> None:
    _, request, _ = client()
    check = UpgradeCheck()
    check.sent(request)
    head = b"HTTP/1.1 101 Switching Protocols\r\nX-Big: "
    assert check.received(head + b"a" * (HEAD_LIMIT - len(head))) is Progress.HEAD
    with pytest.raises(HandshakeFailed) as caught:
        check.received(b"a")
    assert (
        caught.value.reason == f"invalid handshake answer: header section over {HEAD_LIMIT} bytes"
    )


def test_a_hang_up_is_named_with_or_without_part_of_an_answer() -> None:
    for sent, reason in [
        (b"", "the server closed the connection during the handshake"),
        (
            b"HTTP/1.1 10",
            "the server closed the connection during the handshake in the middle of its answer",
        ),
    ]:
        _, request, _ = client()
        check = UpgradeCheck()
        check.sent(request)
        if sent:
            check.received(sent)
        with pytest.raises(HandshakeFailed) as caught:
            check.received(b"")
        assert caught.value.reason == reason


# -- what we let through, wsproto accepts -------------------------------------------------

NAMES = [
    b"Upgrade",
    b"Connection",
    b"Sec-WebSocket-Accept",
    b"Sec-WebSocket-Protocol",
    b"Sec-WebSocket-Extensions",
    b"X-Other",
]
VALUES = [
    b"websocket",
    b"WebSocket",
    b"upgrade",
    b"Upgrade, keep-alive",
    b"keep-alive",
    b"",
    b"\xff",
    b"upgrade, \xe9",
    b"chat",
    b"permessage-deflate",
    b"a, b",
    b"ACCEPT",
]


Edit = tuple[int, bytes, bytes, bool]  # where, header name, value, replace (or insert)


def edited_answer(key: bytes, edits: list[Edit]) -> bytes:
    """The canonical 101 to `key` with headers inserted or replaced."""
    lines = upgrade_answer(key).split(b"\r\n")[1:-2]
    for where, name, value, replace in edits:
        line = name + b": " + (accept_key(key) if value == b"ACCEPT" else value)
        at = where % (len(lines) + 1)
        if replace and at < len(lines):
            lines[at] = line
        else:
            lines.insert(at, line)
    head = b"HTTP/1.1 101 Switching Protocols\r\n"
    return head + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def wsproto_opens_if_we_pass(edits: list[Edit]) -> bool:
    """Whether our check let it through; if so, wsproto must open on it too:
    were it to raise instead, it would answer with a rejection a client cannot
    send, and crash."""
    ws, request, key = client()
    answer = edited_answer(key, edits)
    check = UpgradeCheck()
    check.sent(request)
    try:
        check.received(answer)
    except HandshakeFailed:
        return False
    ws.receive_data(answer)
    assert [type(e) for e in ws.events()] == [AcceptConnection], answer
    return True


def test_wsproto_opens_on_every_single_edit_of_a_101_we_let_through() -> None:
    passed = [
        wsproto_opens_if_we_pass([(where, name, value, replace)])
        for where in range(5)
        for name in NAMES
        for value in VALUES
        for replace in (False, True)
    ]
    assert 0 < sum(passed) < len(passed)  # both outcomes were exercised


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8), st.sampled_from(NAMES), st.sampled_from(VALUES), st.booleans()
        ),
        max_size=4,
    )
)
def test_wsproto_opens_on_every_101_we_let_through(edits: list[Edit]) -> None:
    wsproto_opens_if_we_pass(edits)


def test_wsproto_rejects_what_we_refuse_for_its_reasons() -> None:
    """The other direction, for the cases the issue named: our check is not
    inventing faults wsproto would let pass (only being first to see them)."""
    for case, answer, _ in bad_101(KEY):
        if case == "interim_100":
            continue  # not a 101: wsproto reports it as a rejection with no body
        ws, _, key = client()
        answer = next(a for c, a, _ in bad_101(key) if c == case)
        with pytest.raises((RemoteProtocolError, UnicodeDecodeError)):
            ws.receive_data(answer)


# -- rejections ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nmissing token\n",
            "missing token",
        ),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", ""),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 15\r\n\r\n  try\r\n\tlater  ", "try later"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n\xff\x00ab", "\ufffd ab"),
    ],
)
def test_a_rejection_gives_its_status_and_its_body_as_the_reason(
    answer: bytes, reason: str
) -> None:
    check = checked(answer)
    assert check.progress is Progress.REJECTED
    status = int(answer.split()[1])
    exc = check.rejection()
    assert exc.status == status
    shown = f": {reason}" if reason else ""
    assert exc.reason == f"handshake rejected with HTTP {status}{shown}"


def test_a_rejection_is_known_from_its_head() -> None:
    check = checked(b"HTTP/1.0 403 Forbidden\r\n\r\nno such")
    # The body has no end (it runs to EOF), yet the status is known.
    assert check.progress is Progress.BODY
    assert check.rejection().status == 403
    assert check.received(b" bot") is Progress.BODY
    assert check.received(b"") is Progress.REJECTED
    assert check.rejection().reason == "handshake rejected with HTTP 403: no such bot"


def test_a_rejection_body_is_read_up_to_the_bound_and_shown_shorter() -> None:
    check = checked(b"HTTP/1.1 401 No\r\nContent-Length: 30000000\r\n\r\n")
    assert check.received(b"x" * (BODY_LIMIT - 1)) is Progress.BODY
    assert check.received(b"x" * 65536) is Progress.REJECTED
    reason = check.rejection().reason
    assert reason.startswith("handshake rejected with HTTP 401: xxx") and reason.endswith("…")
    assert len(reason) < 250


def test_a_rejection_body_cut_short_still_rejects() -> None:
    check = checked(b"HTTP/1.1 401 No\r\nContent-Length: 1000\r\n\r\npartial")
    assert check.received(b"") is Progress.REJECTED
    assert check.rejection().reason == "handshake rejected with HTTP 401: partial"


# -- the stream ----------------------------------------------------------------------------


class FakeServer(trio.abc.Stream):
    """Answers with `chunks`, then `then`: "eof", "stall", or "endless" x bytes.
    Counts what the client pulled, and keeps what it sent."""

    def __init__(self, chunks: list[bytes], then: str = "stall") -> None:
        self.chunks = list(chunks)
        self.then = then
        self.sent = bytearray()
        self.pulled = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.chunks:
            chunk = self.chunks[0][: max_bytes or None]
            self.chunks[0] = self.chunks[0][len(chunk) :]
            if not self.chunks[0]:
                self.chunks.pop(0)
        elif self.then == "eof":
            chunk = b""
        elif self.then == "endless":
            chunk = b"x" * (max_bytes or 65536)
        else:
            await trio.sleep_forever()
        self.pulled += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def send_request(stream: HandshakeStream) -> bytes:
    _, request, key = client()
    await stream.send_all(request)
    return key


async def test_after_a_valid_upgrade_the_stream_is_its_inner_stream() -> None:
    server = FakeServer([])
    stream = HandshakeStream(server)
    key = await send_request(stream)
    assert stream.send_all == server.send_all
    frames = server_frame(1, b"a" * 300) + server_frame(1, b"b")
    server.chunks = [upgrade_answer(key) + frames]
    head = len(upgrade_answer(key))
    with trio.fail_after(1):
        got = [await stream.receive_some(100) for _ in range(math.ceil((head + len(frames)) / 100))]
    assert all(len(chunk) <= 100 for chunk in got)
    assert b"".join(got) == upgrade_answer(key) + frames
    # Everything read ahead is handed over: from now on, no wrapper in the way.
    assert stream.receive_some == server.receive_some


async def test_the_head_is_read_within_its_bound_however_much_is_asked() -> None:
    server = FakeServer([b"HTTP/1.1 101 Switching Protocols\r\nX-Big: " + b"a" * 65536])
    stream = HandshakeStream(server)
    await send_request(stream)
    with trio.fail_after(1), pytest.raises(HandshakeFailed, match="header section over"):
        await stream.receive_some(65536)
    assert server.pulled == HEAD_LIMIT + 1


async def test_a_stalled_rejection_ends_after_the_body_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer(
        [b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\nmissing "], "stall"
    )
    stream = HandshakeStream(server)
    await send_request(stream)
    start = trio.current_time()
    with pytest.raises(HandshakeFailed) as caught:
        await stream.receive_some(65536)
    assert trio.current_time() - start == pytest.approx(BODY_WAIT)
    assert caught.value.status == 401
    assert caught.value.reason == "handshake rejected with HTTP 401: missing"


async def test_a_rejection_that_ends_is_not_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer([b"HTTP/1.0 403 Forbidden\r\n\r\n", b"no such bot"], "eof")
    stream = HandshakeStream(server)
    await send_request(stream)
    start = trio.current_time()
    with pytest.raises(HandshakeFailed, match="403: no such bot"):
        await stream.receive_some(65536)
    assert trio.current_time() == start


async def test_a_huge_rejection_body_is_not_pulled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 31457280\r\n\r\n"
    server = FakeServer([head], "endless")
    stream = HandshakeStream(server)
    await send_request(stream)
    with pytest.raises(HandshakeFailed, match="HTTP 401: xxxx"):
        await stream.receive_some(65536)
    assert server.pulled <= len(head) + BODY_LIMIT


async def open_client(
    nursery: trio.Nursery, frames: bytes, max_message_size: int = 1 << 20
) -> tuple[tw.WebSocketConnection, HandshakeStream, trio.abc.Stream]:
    """A trio-websocket client through a HandshakeStream, over memory, to a raw
    server that upgrades and sends `frames` along with its answer."""
    ours, theirs = trio.testing.memory_stream_pair()

    async def serve() -> None:
        key = await read_upgrade_request(theirs)
        assert key
        await theirs.send_all(upgrade_answer(key) + frames)

    nursery.start_soon(serve)
    stream = HandshakeStream(ours)
    ws = await tw.wrap_client_stream(
        nursery,
        cast(trio.SocketStream, stream),  # annotated narrower than documented
        "127.0.0.1",
        "/audio",
        max_message_size=max_message_size,
    )
    return ws, stream, ours


async def test_trio_websocket_reads_a_message_sent_with_the_upgrade() -> None:
    """Through the real library: the read-ahead reaches wsproto intact."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ws, stream, ours = await open_client(nursery, server_frame(1, b"hello"))
            assert await ws.get_message() == "hello"
            assert stream.receive_some == ours.receive_some
            nursery.cancel_scope.cancel()


# -- the trio-websocket internals connection.py leans on -------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "ours"),
    [
        (server_frame(1, b"\xc3\x28"), 1007, True),
        (server_frame(1, b"hi", rsv=0b100), 1002, True),
        (server_frame(8, (1007).to_bytes(2, "big") + b"bad data"), 1007, False),
        (server_frame(8, (4000).to_bytes(2, "big")), 4000, False),
    ],
)
async def test_who_closed_is_told_apart_by_wsprotos_state(
    frame: bytes, code: int, ours: bool
) -> None:
    """Point 3 of connection.py's list: the same ConnectionClosed either way, told
    apart by the state of the connection's wsproto."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ws, _, _ = await open_client(nursery, frame)
            with pytest.raises(tw.ConnectionClosed) as caught:
                await ws.get_message()
            assert caught.value.reason is not None and caught.value.reason.code == code
            assert connection.closed_by_us(ws) is ours
            nursery.cancel_scope.cancel()


async def test_a_message_over_the_hard_cap_is_closed_by_us() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ws, _, _ = await open_client(nursery, server_frame(2, bytes(200)), max_message_size=100)
            with pytest.raises(tw.ConnectionClosed) as caught:
                await ws.get_message()
            assert caught.value.reason is not None and caught.value.reason.code == 1009
            assert connection.closed_by_us(ws)
            nursery.cancel_scope.cancel()


def test_trio_websocket_is_the_version_link_was_checked_against() -> None:
    assert tw.__version__ == connection.CHECKED_TRIO_WEBSOCKET, (
        "trio-websocket changed: re-check each point of the comment block above "
        "CHECKED_TRIO_WEBSOCKET in sidecar/connection.py against its _impl.py, then update it"
    )


def test_wsproto_is_the_version_link_was_checked_against() -> None:
    assert importlib.metadata.version("wsproto") == connection.CHECKED_WSPROTO, (
        "wsproto changed: re-check point 6 of the comment block in "
        "sidecar/connection.py against its frame_protocol.py, then update CHECKED_WSPROTO"
    )


def upgraded() -> tw.WebSocketConnection:
    """What frame() reads of a client connection past its upgrade: its wsproto."""
    client = WSConnection(ConnectionType.CLIENT)
    client.connection = Connection(ConnectionType.CLIENT)
    return cast(tw.WebSocketConnection, SimpleNamespace(_wsproto=client))


@pytest.mark.parametrize("text", ["", '{"a":1}', "\u00e9t\u00e9 \U0001f600", "x" * 70_000])
def test_a_utf8_text_is_framed_as_its_str_would_be(text: str) -> None:
    """Utf8Text skips wsproto's str -> bytes step: the server reads the same
    text message, unmasked, as from the str (short, 16-bit and 64-bit lengths)."""
    ws = upgraded()
    for wire in (text, Utf8Text(text.encode())):
        server = Connection(ConnectionType.SERVER)
        server.receive_data(bytes(connection.frame(ws, wire)))
        (message,) = server.events()
        assert isinstance(message, TextMessage)
        assert message.data == text and message.message_finished


def test_a_utf8_text_is_refused_once_wsproto_is_closing() -> None:
    ws = upgraded()
    ws._wsproto.send(CloseConnection(code=1000))
    with pytest.raises(LocalProtocolError):
        connection.frame(ws, Utf8Text(b"{}"))


def test_a_header_value_echoing_a_secret_is_redacted_before_it_is_cut() -> None:
    """A 101 whose Upgrade header echoes a credential longer than the 60
    characters shown: redacted first, so no piece of it is left at the cut."""
    secret = "sk-" + "4f9a2c7e1b3d5f60" * 5
    _, request, _ = client()
    check = UpgradeCheck(redact=Redactor([secret]))
    check.sent(request)
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + secret.encode() + b"\r\n\r\n"
    with pytest.raises(HandshakeFailed) as caught:
        check.received(answer)
    assert (
        caught.value.reason
        == "invalid handshake answer: no 'Upgrade: websocket' header (got '***')"
    )
