"""The websocket link, end to end: connect, retry, replay, reject, dead peers, bad messages.

Real sidecar process against a real `websockets` server (or, for a dead peer
and for answers no websocket server would send, a raw TCP server).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

import pytest
import trio
from e2e_peers import (
    HangUpServer,
    Script,
    ScriptedServer,
    SilentServer,
    accept_key,
    drain,
    open_speaker,
    reserve_port,
    server_frame,
    until_connected,
    upgrade_answer,
)
from support import (
    RequestHook,
    SidecarProcess,
    WsServer,
    bot_output,
    dominant_frequency,
    open_sidecar,
    play,
    sidecar_args,
    tone,
    wait_until,
)
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection


def url_on(port: int) -> str:
    return f"ws://127.0.0.1:{port}/audio"


async def test_server_absent_at_start_then_present(tmp_path: Path) -> None:
    port = reserve_port()
    args = sidecar_args(url_on(port), tmp_path, "--retry-delay", "0.1", "--max-retries", "0")
    server = WsServer()
    try:
        with trio.fail_after(30):
            async with open_sidecar(args) as sidecar:
                first = await sidecar.wait_event("retrying")
                await sidecar.wait_event("retrying", lambda e: e["attempt"] >= 3)
                server.start(port)
                connected = await sidecar.wait_event("connected")
                await wait_until(lambda: len(server.connections) == 1)
                bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
                await play(bot, tone(1000, 0.2), realtime=False)
                await wait_until(lambda: len(server.audio()) >= 3000 * 2)
                assert await sidecar.stop() == 0
    finally:
        server.stop()
    assert first["of"] == 0 and first["delay"] == 0.1
    assert "connect" in first["reason"]
    assert connected["url"] == url_on(port)
    # It never had a connection before this one, so nothing was "disconnected".
    assert all(e["ts_ms"] > connected["ts_ms"] for e in sidecar.named("disconnected"))
    assert not sidecar.named("gave_up")


async def test_server_drop_mid_stream_replays_the_newest_audio(tmp_path: Path) -> None:
    port = reserve_port()
    args = sidecar_args(
        url_on(port), tmp_path, "--retry-delay", "0.1", "--replay-ms", "400", "--max-retries", "0"
    )
    first = WsServer().start(port)
    second = WsServer()
    try:
        with trio.fail_after(30):
            async with open_sidecar(args) as sidecar:
                async with trio.open_nursery() as nursery:
                    await until_connected(sidecar, first)
                    bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
                    nursery.start_soon(play, bot, tone(440, 3.0))
                    await wait_until(lambda: len(first.messages()) >= 10)
                    first.stop()
                    dropped = await sidecar.wait_event("disconnected")
                    await sidecar.wait_event("retrying")
                    await trio.sleep(1.0)  # more than --replay-ms goes by without a server
                    second.start(port)
                    reconnected = await sidecar.wait_event("connected", lambda e: e["attempt"] == 2)
                    await wait_until(lambda: len(second.connections) == 1)
                    stats = await sidecar.stats(lambda e: e["ts_ms"] > reconnected["ts_ms"] + 100)
                    assert stats["connected"] and stats["reconnects"] == 1
                    nursery.cancel_scope.cancel()  # the bot stops
                assert await sidecar.stop() == 0
                await sidecar.wait_event("stopped")
                # The stats written after the graceful stop's flush, before `stopped`.
                final = sidecar.named("stats")[-1]
    finally:
        first.stop()
        second.stop()

    assert dropped["code"] == 1001
    assert "1001" in dropped["reason"]
    after = second.messages("realtime_audio.mixed")
    stamps = [m["data"]["timestamp_ms"] for m in after]
    assert stamps == sorted(stamps)
    replayed = [t for t in stamps if t < reconnected["ts_ms"]]
    # The replay buffer: about --replay-ms of audio captured while disconnected,
    # sent first, with the timestamps of its capture.
    assert 300 <= len(replayed) * 20 <= 500
    assert stamps[: len(replayed)] == replayed
    assert reconnected["ts_ms"] - replayed[0] >= 300
    before = [m["data"]["timestamp_ms"] for m in first.messages("realtime_audio.mixed")]
    # What fell between the two connections beyond the replay window is lost ...
    gap_ms = replayed[0] - before[-1]
    assert gap_ms > 400
    # ... and counted: every sample captured was sent or counted as dropped.
    # (Not judged against the gap's length in ms: a stall of this test's bot,
    # under load, is a gap nobody spoke in, with nothing in it to lose.)
    lost = final["dropped"]["uplink_disconnected"]
    assert 0 < lost <= (gap_ms - 20) * 16 + 320
    captured = round(final["samples_in"] * 16000 / 48000)
    uplink_drops = sum(n for reason, n in final["dropped"].items() if reason.startswith("uplink_"))
    assert abs(final["samples_out"] + uplink_drops - captured) <= 2


async def test_server_close_is_reported_with_its_code_and_survived(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--retry-delay", "0.1")
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            server.current.ws.close(4000, "try again later")
            closed = await sidecar.wait_event("disconnected")
            retry = await sidecar.wait_event("retrying")
            await until_connected(sidecar, server, 2)
            assert await sidecar.stop() == 0
    assert closed["code"] == 4000
    assert "4000" in closed["reason"] and "try again later" in closed["reason"]
    assert retry["reason"] == closed["reason"]


async def test_retries_exhausted_gives_up_with_exit_code_3(tmp_path: Path) -> None:
    port = reserve_port()
    args = sidecar_args(url_on(port), tmp_path, "--max-retries", "2", "--retry-delay", "0.1")
    with trio.fail_after(30):
        async with open_sidecar(args) as sidecar:
            assert await sidecar.wait(10) == 3
            await trio.sleep(0.1)
    retries = sidecar.named("retrying")
    assert [(e["attempt"], e["of"]) for e in retries] == [(1, 2), (2, 2)]
    gave_up = sidecar.named("gave_up")
    assert len(gave_up) == 1 and gave_up[0]["attempts"] == 2
    stopped = sidecar.named("stopped")
    assert stopped[-1]["exit_code"] == 3
    assert not (tmp_path / "in.sock").exists()
    assert not (tmp_path / "out.sock").exists()


def reject_with(status: HTTPStatus, times: int | None = None) -> tuple[list[int], RequestHook]:
    seen: list[int] = []

    def hook(ws: ServerConnection, request: Request) -> Response | None:
        seen.append(1)
        if times is None or len(seen) <= times:
            return ws.respond(status, f"{status.phrase}\n")
        return None

    return seen, hook


async def test_4xx_rejection_is_fatal_without_retries(tmp_path: Path) -> None:
    seen, hook = reject_with(HTTPStatus.FORBIDDEN)
    with trio.fail_after(30), WsServer(process_request=hook) as server:
        async with open_sidecar(
            sidecar_args(server.url, tmp_path, "--retry-delay", "0.1")
        ) as sidecar:
            assert await sidecar.wait(10) == 4
            await trio.sleep(0.1)
    assert len(seen) == 1
    assert not sidecar.named("retrying")
    (gave_up,) = sidecar.named("gave_up")
    assert gave_up["status"] == 403
    assert sidecar.named("stopped")[-1]["exit_code"] == 4
    assert b"403" in sidecar.stderr


async def test_5xx_rejection_is_retried(tmp_path: Path) -> None:
    seen, hook = reject_with(HTTPStatus.SERVICE_UNAVAILABLE, times=2)
    with trio.fail_after(30), WsServer(process_request=hook) as server:
        args = sidecar_args(server.url, tmp_path, "--retry-delay", "0.1")
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            assert await sidecar.stop() == 0
    assert len(seen) == 3
    retries = sidecar.named("retrying")
    assert len(retries) == 2
    assert all("503" in e["reason"] for e in retries)


async def test_a_peer_that_stops_answering_pings_is_replaced(tmp_path: Path) -> None:
    silent = SilentServer()
    args = sidecar_args(
        "",
        tmp_path,
        "--ping-interval",
        "0.3",
        "--ping-timeout",
        "0.3",
        "--retry-delay",
        "0.1",
        "--max-retries",
        "0",
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(silent.serve)
            args[1] = silent.url
            async with open_sidecar(args) as sidecar:
                await sidecar.wait_event("connected")
                dead = await sidecar.wait_event("disconnected")
                again = await sidecar.wait_event("connected", lambda e: e["attempt"] == 2)
                # (A graceful stop would now wait out the close timeout: the
                # lifecycle tests cover that; here it only costs time.)
            nursery.cancel_scope.cancel()
    assert "pong" in dead["reason"]
    assert silent.handshakes >= 2
    # A dead peer gets no close handshake to wait for: the reconnect follows at
    # once (the retry delay), not after a close timeout.
    assert again["ts_ms"] - dead["ts_ms"] < 1500


async def test_a_server_that_hangs_up_in_the_handshake_is_retried_at_once(
    tmp_path: Path,
) -> None:
    hangup = HangUpServer()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(hangup.serve)
            args = sidecar_args(
                hangup.url,
                tmp_path,
                "--retry-delay",
                "0.05",
                "--max-retries",
                "3",
                "--connect-timeout",
                "20",
            )
            async with open_sidecar(args) as sidecar:
                # Without noticing the hang-up, one attempt alone would take 20 s.
                assert await sidecar.wait(10) == 3
            nursery.cancel_scope.cancel()
    reasons = {e["reason"] for e in sidecar.named("retrying")}
    assert reasons == {"the server closed the connection during the handshake"}
    assert hangup.accepted == 4


def bad_messages(max_bytes: int) -> list[tuple[str, str]]:
    good = bot_output(tone(1000, 0.01, 16000), 16000)
    odd = bot_output(b"\x01\x02\x03", 16000)
    huge = bot_output(bytes(max_bytes), 16000)

    def with_data(**data: object) -> str:
        return json.dumps({**good, "data": {**good["data"], **data}})

    return [
        ("{not json", "invalid_json"),
        ("[1, 2, 3]", "invalid_json"),
        (json.dumps({"data": good["data"]}), "missing_trigger"),
        (json.dumps({**good, "trigger": "realtime_audio.nope"}), "unknown_trigger"),
        (with_data(chunk="***not base64***"), "invalid_base64"),
        (json.dumps(odd), "odd_length"),
        (with_data(sample_rate=44100), "unsupported_sample_rate"),
        (json.dumps(huge), "message_too_large"),
        (with_data(sample_rate="16000"), "invalid_field"),
        (with_data(chunk=12), "invalid_field"),
    ]


async def test_every_invalid_message_gets_an_error_reply_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    max_bytes = 4096
    cases = bad_messages(max_bytes)
    args = sidecar_args(
        "", tmp_path, "--max-message-bytes", str(max_bytes), "--error-replies-per-s", "100"
    )
    with trio.fail_after(30), WsServer() as server:
        args[1] = server.url
        async with open_sidecar(args) as sidecar, trio.open_nursery() as nursery:
            await until_connected(sidecar, server)
            speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            for text, _ in cases:
                server.send(text)
            pcm = tone(1000, 0.2, 16000)
            for i in range(0, len(pcm), 640):
                server.send(bot_output(pcm[i : i + 640], 16000))
            await wait_until(lambda: len(server.messages("realtime_audio.error")) == len(cases))
            await wait_until(lambda: len(speaker.pcm) >= 0.2 * 48000 * 2)
            # ... and the uplink, too, is unaffected.
            await play(bot, tone(1000, 0.2), realtime=False)
            await wait_until(lambda: len(server.audio()) >= 3000 * 2)
            stats = await sidecar.stats(lambda e: e["invalid_messages"] == len(cases))
            nursery.cancel_scope.cancel()

    replies = server.messages("realtime_audio.error")
    assert [r["data"]["code"] for r in replies] == [code for _, code in cases]
    for reply in replies:
        assert reply["bot_id"] == "bot_test"
        assert reply["data"]["message"]
    assert replies[3]["data"]["trigger"] == "realtime_audio.nope"
    assert replies[4]["data"]["trigger"] == "realtime_audio.bot_output"
    assert "sample_rate" in replies[8]["data"]["message"]
    assert "chunk" in replies[9]["data"]["message"]
    events = sidecar.named("invalid_message")
    assert [e["code"] for e in events] == [code for _, code in cases]
    assert stats["error_replies_suppressed"] == 0
    assert stats["connected"] and stats["reconnects"] == 0
    assert abs(dominant_frequency(speaker.pcm[: 9600 * 2], 48000) - 1000) < 10


async def test_error_replies_are_rate_limited(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            for i in range(50):
                server.send(f"not json {i}")
            stats = await sidecar.stats(lambda e: e["invalid_messages"] == 50)
            replied = len(server.messages("realtime_audio.error"))
            # The default: 5 a second, in bursts of 5.
            assert 5 <= replied <= 8
            assert stats["error_replies_suppressed"] == 50 - replied
            assert len(sidecar.named("invalid_message")) == 50
            await trio.sleep(0.5)  # the bucket refills
            server.send("not json, later")
            await wait_until(lambda: len(server.messages("realtime_audio.error")) > replied)
            assert await sidecar.stop() == 0


async def test_headers_reach_the_server_and_secrets_stay_out_of_the_output(
    tmp_path: Path,
) -> None:
    secret = "s3cr3t-bearer-value"
    query_secret = "q5ecret-in-url"
    with trio.fail_after(30), WsServer() as server:
        url = f"{server.url}?token={query_secret}&room=1"
        args = sidecar_args(
            url,
            tmp_path,
            "--header",
            f"Authorization: Bearer {secret}",
            "--header",
            "X-Team: blue",
            "--log-level",
            "debug",
        )
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            headers = server.current.request_headers
            assert headers["Authorization"] == f"Bearer {secret}"
            assert headers["X-Team"] == "blue"
            assert server.current.ws.request is not None
            assert query_secret in server.current.ws.request.path
            server.stop()  # a disconnect and a retry also print the URL
            await sidecar.wait_event("retrying")
            assert await sidecar.stop() == 0
    output = sidecar.stdout + sidecar.stderr
    assert secret.encode() not in output
    assert query_secret.encode() not in output
    redacted = url.replace(query_secret, "***").replace("room=1", "room=***")
    assert sidecar.named("ready")[0]["url"] == redacted
    assert sidecar.named("connected")[0]["url"] == redacted
    # Which connection dropped (there may be two, --per-participant-url), redacted too.
    assert sidecar.named("disconnected")[0]["url"] == redacted
    # The contract's version; `protocol` elsewhere names a dialect.
    assert sidecar.named("ready")[0]["contract"] == 1
    assert "protocol" not in sidecar.named("ready")[0]


async def test_binary_bot_output_is_accepted(tmp_path: Path) -> None:
    """Some servers send JSON in binary frames; the message is the same."""
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            message = bot_output(tone(1000, 0.2, 8000), 8000)
            server.current.ws.send(json.dumps(message).encode())
            await wait_until(lambda: len(speaker.pcm) >= 0.2 * 48000 * 2)
            nursery.cancel_scope.cancel()
    assert not sidecar.named("invalid_message")
    assert abs(dominant_frequency(speaker.pcm[: 9600 * 2], 48000) - 1000) < 10


# -- handshake answers no websocket server would send (raw TCP peers) ---------------


async def run_against(
    script: Script, tmp_path: Path, *extra: str, timeout: float = 10
) -> tuple[SidecarProcess, ScriptedServer, int, float]:
    """The sidecar against a ScriptedServer until it exits; its exit code and
    how long that took."""
    server = ScriptedServer(script)
    with trio.fail_after(timeout + 15):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            args = sidecar_args(server.url, tmp_path, "--retry-delay", "0.05", *extra)
            async with open_sidecar(args) as sidecar:
                start = trio.current_time()
                code = await sidecar.wait(timeout)
                took = trio.current_time() - start
                await trio.sleep(0.1)  # the last lines
            nursery.cancel_scope.cancel()
    return sidecar, server, code, took


def answering(answer: Callable[[bytes], bytes]) -> Script:
    async def script(stream: trio.SocketStream, key: bytes) -> None:
        await stream.send_all(answer(key))
        await drain(stream)

    return script


BAD_UPGRADES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "wrong_accept": (
        lambda key: upgrade_answer(
            key,
            omit=b"Sec-WebSocket-Accept",
            extra=b"Sec-WebSocket-Accept: " + accept_key(b"another key") + b"\r\n",
        ),
        "wrong Sec-WebSocket-Accept",
    ),
    "no_upgrade_header": (
        lambda key: upgrade_answer(key, omit=b"Upgrade"),
        "no 'Upgrade: websocket'",
    ),
    "no_connection_header": (
        lambda key: upgrade_answer(key, omit=b"Connection"),
        "no 'Connection: upgrade'",
    ),
    "unoffered_subprotocol": (
        lambda key: upgrade_answer(key, extra=b"Sec-WebSocket-Protocol: chat\r\n"),
        "subprotocol 'chat', which the sidecar did not offer",
    ),
    "unoffered_extension": (
        lambda key: upgrade_answer(key, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        "extension 'permessage-deflate', which the sidecar did not offer",
    ),
    "non_ascii_connection_header": (
        lambda key: upgrade_answer(key, omit=b"Connection", extra=b"Connection: \xffupgrade\r\n"),
        "no 'Connection: upgrade'",
    ),
    "garbage_status_line": (
        lambda key: b"garbage\r\n\r\n",
        "not valid HTTP",
    ),
    "64_kib_header_line": (
        lambda key: b"HTTP/1.1 101 Switching Protocols\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        "header section over 16384 bytes",
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPGRADES))
async def test_a_malformed_upgrade_answer_is_a_named_failure_and_retried(
    tmp_path: Path, case: str
) -> None:
    answer, named = BAD_UPGRADES[case]
    sidecar, server, code, _ = await run_against(answering(answer), tmp_path, "--max-retries", "1")
    assert code == 3, sidecar.stderr.decode(errors="replace")
    assert b"Traceback" not in sidecar.stderr
    (retry,) = sidecar.named("retrying")
    assert retry["reason"].startswith("invalid handshake answer: ")
    assert named in retry["reason"]
    (gave_up,) = sidecar.named("gave_up")
    assert gave_up["reason"] == retry["reason"]
    assert gave_up.get("status") is None
    assert not sidecar.named("connected")
    assert server.accepted == 2


def stalling(answer: bytes) -> Script:
    """Writes `answer`, then neither sends more nor closes: only the head tells."""
    return answering(lambda _: answer)


STALLED_REJECTIONS: dict[str, tuple[bytes, int, str]] = {
    "close_delimited_401": (
        b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\nmissing token\n",
        401,
        "missing token",
    ),
    "http_1_0_403_without_length": (
        b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno such bot",
        403,
        "no such bot",
    ),
    "short_content_length": (
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 1000\r\n\r\nno such   \r\n  path",
        404,
        "no such path",
    ),
}


@pytest.mark.parametrize("case", list(STALLED_REJECTIONS))
async def test_a_4xx_is_fatal_on_its_head_whatever_its_body_does(tmp_path: Path, case: str) -> None:
    answer, status, body = STALLED_REJECTIONS[case]
    sidecar, server, code, took = await run_against(
        stalling(answer), tmp_path, "--connect-timeout", "20"
    )
    assert code == 4
    # The head and at most the body's half-second: not the connect timeout.
    assert took < 5
    assert not sidecar.named("retrying")
    (gave_up,) = sidecar.named("gave_up")
    assert gave_up["status"] == status
    assert gave_up["reason"] == f"handshake rejected with HTTP {status}: {body}"
    assert sidecar.named("stopped")[-1]["exit_code"] == 4
    assert body.encode() in sidecar.stderr
    assert server.accepted == 1


async def test_a_5xx_is_retried_on_its_head_whatever_its_body_does(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\ndraining"
    sidecar, server, code, took = await run_against(
        stalling(answer), tmp_path, "--connect-timeout", "20", "--max-retries", "2"
    )
    assert code == 3
    assert took < 8  # three attempts, each the head and half a second at most
    reasons = [e["reason"] for e in sidecar.named("retrying")]
    assert reasons == ["handshake rejected with HTTP 503: draining"] * 2
    assert sidecar.named("gave_up")[0].get("status") is None
    assert server.accepted == 3


async def test_a_huge_rejection_body_is_not_read(tmp_path: Path) -> None:
    total = 30 * 1024 * 1024
    sent = [0]

    async def script(stream: trio.SocketStream, key: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % total)
        chunk = b"x" * 65536
        while sent[0] < total:
            await stream.send_all(chunk)
            sent[0] += len(chunk)

    sidecar, server, code, took = await run_against(script, tmp_path, "--connect-timeout", "20")
    assert code == 4
    assert took < 5
    (gave_up,) = sidecar.named("gave_up")
    assert gave_up["status"] == 401
    # What is shown is a short excerpt of the 4 KiB read.
    assert gave_up["reason"].startswith("handshake rejected with HTTP 401: xxxx")
    assert len(gave_up["reason"]) < 300
    # The rest never left the server's side: the sidecar hung up long before
    # (what was sent is at most what the kernel's socket buffers hold).
    assert server.finished == 1
    assert sent[0] < total // 2


async def test_a_rejection_body_that_echoes_a_secret_is_redacted(tmp_path: Path) -> None:
    secret = "s3cr3t-bearer-value"
    answer = f"HTTP/1.1 401 Unauthorized\r\nContent-Length: 38\r\n\r\ntoken {secret} expired....."
    sidecar, _, code, _ = await run_against(
        stalling(answer.encode()),
        tmp_path,
        "--header",
        f"Authorization: Bearer {secret}",
    )
    assert code == 4
    (gave_up,) = sidecar.named("gave_up")
    assert gave_up["reason"] == "handshake rejected with HTTP 401: token *** expired....."
    assert secret.encode() not in sidecar.stdout + sidecar.stderr


# -- who closed it: the server, or the sidecar's websocket library ------------------


def upgrade_then(frame: bytes) -> Script:
    async def script(stream: trio.SocketStream, key: bytes) -> None:
        await stream.send_all(upgrade_answer(key) + frame)
        await drain(stream)

    return script


OURS = "the sidecar closed the connection with code "
CLOSES: dict[str, tuple[bytes, int, str]] = {
    "invalid_utf8_text": (
        server_frame(0x1, b"\xc3\x28"),
        1007,
        OURS + "1007 (invalid UTF-8 from the server): 'utf-8' codec can't decode byte 0xc3",
    ),
    "reserved_bit_set": (
        server_frame(0x1, b"hi", rsv=0b100),
        1002,
        OURS + "1002 (protocol error from the server): Reserved bit set unexpectedly",
    ),
    "message_beyond_the_hard_cap": (
        server_frame(0x2, bytes(5000)),
        1009,
        OURS + "1009 (a message over 4 x --max-message-bytes): "
        "Exceeded maximum message size: 4096 bytes",
    ),
    "server_close_frame_1007": (
        server_frame(0x8, (1007).to_bytes(2, "big") + b"bad data"),
        1007,
        "closed by server with code 1007 (INVALID_FRAME_PAYLOAD_DATA): bad data",
    ),
}


@pytest.mark.parametrize("case", list(CLOSES))
async def test_disconnected_says_who_closed_the_connection(tmp_path: Path, case: str) -> None:
    frame, code, reason = CLOSES[case]
    server = ScriptedServer(upgrade_then(frame))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            args = sidecar_args(
                server.url, tmp_path, "--retry-delay", "0.05", "--max-message-bytes", "1024"
            )
            async with open_sidecar(args) as sidecar:
                dropped = await sidecar.wait_event("disconnected")
                retry = await sidecar.wait_event("retrying")
                await sidecar.wait_event("connected", lambda e: e["attempt"] == 2)
                assert await sidecar.stop() == 0
            nursery.cancel_scope.cancel()
    assert dropped["code"] == code
    assert dropped["reason"].startswith(reason)
    assert retry["reason"] == dropped["reason"]
    assert b"Traceback" not in sidecar.stderr
