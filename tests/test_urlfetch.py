"""The per-connection URL request (a signed URL fetched before each
connection): urlfetch against a real local HTTP server, and the link using it."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from pathlib import Path

import h11
import pytest
import trio
from support import WsServer, sidecar_args, wait_until
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from sidecar import cli, dialects, events, urlfetch
from sidecar.config import Config, dialect_options
from sidecar.dialects.attendee import Attendee
from sidecar.dialects.base import Incoming, UrlAnswerError, UrlRequest
from sidecar.link import Link, LinkRejected
from sidecar.link import tls_context as system_tls
from sidecar.outbox import Outbox
from sidecar.tools import check

KEY = "sk-url-request-secret-0123456789"


@dataclasses.dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    cut: bool = False
    """Close after half the body (a malformed answer)."""


class HttpServer:
    """A real HTTP/1.1 server on 127.0.0.1, port 0 (trio and h11): answers
    each request with the next of `answers` (the last one repeated)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(4096))
                    continue
                if isinstance(event, h11.Request):
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    self.requests.append((event.target.decode(), headers))
                if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
            length = str(len(answer.body)).encode()
            head = h11.Response(
                status_code=answer.status,
                headers=[(b"Content-Type", b"application/json"), (b"Content-Length", length)],
            )
            body = answer.body[: len(answer.body) // 2] if answer.cut else answer.body
            await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)))
            if not answer.cut:
                await stream.send_all(conn.send(h11.EndOfMessage()))


def signed(url: str) -> bytes:
    return json.dumps({"signed_url": url}).encode()


async def _fetch(server: HttpServer, path: str = "/v1/signed?agent_id=a1") -> tuple[int, bytes]:
    request = UrlRequest(server.base + path, (("xi-api-key", KEY),))
    return await urlfetch.fetch(request, system_tls(None))


async def test_a_2xx_answer_is_returned_and_the_request_carries_the_dialects_headers() -> None:
    server = HttpServer([Answer(200, signed("wss://example.test/ws?token=t1"))])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            status, body = await _fetch(server)
            nursery.cancel_scope.cancel()
    assert status == 200 and json.loads(body) == {"signed_url": "wss://example.test/ws?token=t1"}
    ((target, headers),) = server.requests
    assert target == "/v1/signed?agent_id=a1"
    assert headers["xi-api-key"] == KEY and headers["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("answer", "why", "status"),
    [
        (Answer(403, b'{"detail": "bad key ' + KEY.encode() + b'"}'), "HTTP 403", 403),
        (Answer(503), "HTTP 503", 503),
        (Answer(200, b"x" * (urlfetch.MAX_ANSWER_BYTES + 10)), "exceeds", None),
        (Answer(200, signed("wss://a.test/" + "x" * 100), cut=True), "malformed HTTP answer", None),
    ],
)
async def test_what_is_no_usable_answer_fails_without_quoting_the_body(
    answer: Answer, why: str, status: int | None
) -> None:
    server = HttpServer([answer])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            with pytest.raises(urlfetch.UrlFetchFailed, match=why) as info:
                await _fetch(server)
            nursery.cancel_scope.cancel()
    assert info.value.status == status
    assert KEY not in info.value.reason and "detail" not in info.value.reason


async def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(urlfetch.UrlFetchFailed, match="no http:// or https:// URL"):
        await urlfetch.fetch(UrlRequest("ftp://127.0.0.1/x?k=secret1234"), system_tls(None))


# -- the link --------------------------------------------------------------------------


class SignedUrlAttendee(Attendee):
    """Attendee, with a signed URL fetched before each connection, the way
    ElevenLabs' is (a GET with the key in a header, JSON {"signed_url"})."""

    base = ""

    def url_request(self, url: str, environ: Mapping[str, str]) -> UrlRequest | None:
        return UrlRequest(f"{self.base}/v1/signed?agent_id=a1", (("xi-api-key", KEY),))

    def url_from_answer(self, url: str, status: int, body: bytes) -> str:
        try:
            found = json.loads(body)["signed_url"]
        except (ValueError, KeyError, TypeError):
            raise UrlAnswerError("the answer holds no signed_url") from None
        if not isinstance(found, str):
            raise UrlAnswerError("signed_url is not a string")
        return found


def _config(url: str, tmp: Path) -> Config:
    args = ["run", *sidecar_args(url, tmp), "--retry-delay", "0", "--max-retries", "3"]
    return cli.build_config(cli.parser().parse_args(args))


def _lines(out: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


async def _ignore(incoming: Incoming) -> None:
    pass


async def test_each_connection_fetches_a_new_url_and_connects_to_it(tmp_path: Path) -> None:
    """The first signed URL's handshake fails (expired): the retry fetches a
    new one and connects there; neither token is ever printed."""
    paths: list[str] = []

    def expire_first(ws: ServerConnection, request: Request) -> Response | None:
        paths.append(request.path)
        return ws.respond(503, "expired\n") if len(paths) == 1 else None

    with trio.fail_after(20), WsServer(process_request=expire_first) as ws_server:
        base = ws_server.url.replace("/audio", "/convai")
        http = HttpServer(
            [
                Answer(200, signed(base + "?token=first-token-abcdef")),
                Answer(200, signed(base + "?token=second-token-abcdef")),
            ]
        )
        out = io.BytesIO()
        log = events.EventLog(out)
        async with trio.open_nursery() as nursery:
            await nursery.start(http.run)
            config = _config("ws://127.0.0.1:9/unused", tmp_path)
            dialect = SignedUrlAttendee(dialect_options(config))
            dialect.base = http.base
            link = Link(config, Outbox(0, 2000.0), dialect, _ignore, log)
            nursery.start_soon(log.serve)
            nursery.start_soon(link.serve)
            await wait_until(lambda: link.accepting_audio, 10, "connected")
            await log.drain()
            nursery.cancel_scope.cancel()
    assert paths == ["/convai?token=first-token-abcdef", "/convai?token=second-token-abcdef"]
    assert len(http.requests) == 2
    text = out.getvalue().decode()
    assert "first-token-abcdef" not in text and KEY not in text
    kinds = [e["event"] for e in _lines(out)]
    assert "retrying" in kinds and "connected" in kinds


@pytest.mark.parametrize(
    ("answer", "rejected"),
    [(Answer(401, b'{"detail":"invalid key"}'), True), (Answer(200, b"{}"), False)],
)
async def test_a_4xx_answer_is_a_rejection_anything_else_a_failure_retried(
    tmp_path: Path, answer: Answer, rejected: bool
) -> None:
    http = HttpServer([answer])
    out = io.BytesIO()
    log = events.EventLog(out)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(http.run)
            config = _config("ws://127.0.0.1:9/unused", tmp_path)
            config = dataclasses.replace(
                config, retry=dataclasses.replace(config.retry, max_retries=1)
            )
            dialect = SignedUrlAttendee(dialect_options(config))
            dialect.base = http.base
            link = Link(config, Outbox(0, 2000.0), dialect, _ignore, log)
            nursery.start_soon(log.serve)
            with pytest.raises(Exception) as info:
                await link.serve()
            await log.drain()
            nursery.cancel_scope.cancel()
    lines = _lines(out)
    (gave_up,) = [e for e in lines if e["event"] == "gave_up"]
    if rejected:
        assert isinstance(info.value, LinkRejected)
        assert gave_up["status"] == 401 and len(http.requests) == 1
        assert "the URL request to http://127.0.0.1" in str(gave_up["reason"])
    else:
        assert not isinstance(info.value, LinkRejected)
        assert "holds no signed_url" in str(gave_up["reason"]) and len(http.requests) == 2
    assert KEY not in out.getvalue().decode()


# -- check ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 401])
async def test_check_fetches_the_url_as_run_does(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    paths: list[str] = []

    def record(ws: ServerConnection, request: Request) -> Response | None:
        paths.append(request.path)
        return None

    monkeypatch.setitem(dialects.DIALECTS, "signed-test", SignedUrlAttendee)
    with trio.fail_after(30), WsServer(process_request=record) as ws_server:
        url = ws_server.url + "?token=check-token-abcdef"
        http = HttpServer([Answer(status, signed(url))])
        async with trio.open_nursery() as nursery:
            await nursery.start(http.run)
            monkeypatch.setattr(SignedUrlAttendee, "base", http.base)
            options = check.CheckOptions(
                url="ws://127.0.0.1:9/unused", protocol="signed-test", seconds=0.2, quiet_after=0.2
            )
            report = await check.run_check(options)
            nursery.cancel_scope.cancel()
    (finding,) = [f for f in report.findings if f.step == "url_request"]
    if status == 200:
        assert finding.status == "ok" and paths == ["/audio?token=check-token-abcdef"]
        assert "check-token-abcdef" not in finding.text
    else:
        assert finding.status == "fail" and "HTTP 401" in finding.text and paths == []
