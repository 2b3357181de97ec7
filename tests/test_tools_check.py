"""`check URL` against compliant, broken, silent, refusing and TLS servers."""

from __future__ import annotations

import json
import ssl
from functools import partial
from pathlib import Path

import trio
import trustme
from support import Connection, Json, WsServer, bot_output
from test_tools_harness import run_tool
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from sidecar.tools.check import CheckOptions, CheckReport, render, run_check


def findings(report: CheckReport) -> dict[str, tuple[str, str]]:
    return {f.step: (f.status, f.text) for f in report.findings}


def compliant(server: WsServer, conn: Connection, message: Json) -> None:
    if message["trigger"] != "realtime_audio.mixed":
        return
    data = message["data"]
    server.send(
        {
            "trigger": "realtime_audio.bot_output",
            "data": {"chunk": data["chunk"], "sample_rate": data["sample_rate"]},
        }
    )
    if len(conn.received) == 10:
        server.send({"trigger": "realtime_audio.mark", "data": {"name": "after-10"}})


def broken(server: WsServer, conn: Connection, message: Json) -> None:
    if message["trigger"] != "realtime_audio.mixed":
        return
    if len(conn.received) == 1:
        server.send({"trigger": "realtime_audio.speak", "data": {"text": "hello"}})
    out = bot_output(b"\0\0" * 320, 16000)
    out["data"]["sample_rate"] = 44100
    server.send(out)


def wants_token(ws: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Authorization") != "Bearer sesame":
        return ws.respond(401, "missing or wrong token\n")
    return None


async def test_check_passes_a_compliant_server() -> None:
    with WsServer(on_message=compliant, process_request=wants_token) as server:
        url = server.url
        result = await run_tool(
            "check", server.url, "--seconds", "1", "--quiet-after", "0.5",
            "--header", "Authorization: Bearer sesame",
        )  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert out.startswith(f"audio-sidecar check {url}\n")
    assert "ok    handshake: websocket accepted" in out
    assert "(sent headers: Authorization)" in out
    assert "ok    audio: sent 1.00 s of speech-like audio as 50 realtime_audio.mixed" in out
    assert "ok    bot_output: 50 messages, 1.00 s of audio at 16000 Hz; the first arrived" in out
    assert "ok    contract: all 51 messages from the server are valid" in out
    assert "1 mark(s) answered (1 played)" in out
    assert out.rstrip().endswith("PASS: the server works with the sidecar")
    # check behaved like the sidecar: 50 chunks, then the mark echoed once played.
    assert len(server.messages("realtime_audio.mixed")) == 50
    echoes = server.messages("realtime_audio.mark")
    assert [e["data"] for e in echoes] == [{"name": "after-10", "status": "played"}]
    assert echoes[0]["bot_id"] == "bot_check"


async def test_check_names_each_violation_of_a_broken_server() -> None:
    with WsServer(on_message=broken) as server:
        result = await run_tool("check", server.url, "--seconds", "0.5", "--quiet-after", "0.3")
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert "FAIL  contract: 26 of 26 messages from the server break the contract (0 valid):" in out
    assert "message #1: unknown trigger 'realtime_audio.speak' [unknown_trigger]" in out
    assert (
        "message #2 (realtime_audio.bot_output) (and 24 more like it): `data.sample_rate` is "
        "44100; supported rates are 8000, 16000 and 24000 [unsupported_sample_rate]"
    ) in out
    assert "WARN  bot_output: no realtime_audio.bot_output came back" in out
    assert out.rstrip().endswith("FAIL: 1 problem(s) found")
    # Like the sidecar, check answered the invalid messages with error replies (rate-limited).
    errors = server.messages("realtime_audio.error")
    assert 1 <= len(errors) <= 10
    assert errors[0]["data"]["code"] == "unknown_trigger"


async def test_check_json_and_require_output_for_a_silent_server() -> None:
    with WsServer() as server:
        strict = await run_tool(
            "check", server.url, "--seconds", "0.3", "--quiet-after", "0.2",
            "--require-output", "--json",
        )  # fmt: skip
        with trio.fail_after(20):
            lenient = await run_check(CheckOptions(server.url, seconds=0.3, quiet_after=0.2))
    assert strict.returncode == 1
    report = json.loads(strict.stdout)
    assert report["ok"] is False
    assert report["sent_messages"] == 15
    assert report["server_messages"] == 0
    silent = "no realtime_audio.bot_output came back: the bot would stay silent"
    assert {"step": "bot_output", "status": "fail", "text": silent} in report["findings"]
    assert lenient.ok
    assert findings(lenient)["bot_output"][0] == "warn"
    assert "PASS: the server works with the sidecar (1 warning(s))" in render(lenient)


async def test_check_explains_refused_and_rejected_connections() -> None:
    with WsServer(process_request=wants_token) as server, trio.fail_after(20):
        rejected = await run_check(CheckOptions(server.url, seconds=0.2))
        with trio.socket.socket() as probe:
            await probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        refused = await run_check(CheckOptions(f"ws://127.0.0.1:{free_port}/", seconds=0.2))
    status, text = findings(rejected)["handshake"]
    assert status == "fail"
    assert "refused the websocket handshake with HTTP 401: missing or wrong token" in text
    assert "--header 'Authorization: ...'" in text
    assert not rejected.ok
    status, text = findings(refused)["connect"]
    assert (status, text) == (
        "fail",
        f"cannot connect to 127.0.0.1:{free_port}: connection refused "
        "(nothing is listening on that port)",
    )


async def test_check_reports_a_server_that_closes_early() -> None:
    def hang_up(server: WsServer, conn: Connection, message: Json) -> None:
        if len(conn.received) == 5:
            conn.ws.close(1011, "model crashed")

    with WsServer(on_message=hang_up) as server, trio.fail_after(20):
        report = await run_check(CheckOptions(server.url, seconds=1.0, quiet_after=0.2))
    assert not report.ok
    assert findings(report)["close"] == (
        "fail",
        "the server closed the connection early: code 1011 (model crashed)",
    )
    assert findings(report)["audio"][0] == "fail"
    assert report.closed_by == "server"


async def test_check_times_out_on_an_endpoint_that_never_answers() -> None:
    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            report = await run_check(
                CheckOptions(f"ws://127.0.0.1:{port}/", seconds=0.2, connect_timeout=0.5)
            )
            nursery.cancel_scope.cancel()
    assert findings(report)["connect"][0] == "ok"
    assert findings(report)["handshake"] == (
        "fail",
        "no websocket handshake within 0.5 s: is this a websocket endpoint?",
    )


async def test_check_tls_with_and_without_the_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with WsServer(on_message=compliant, ssl_context=context) as server, trio.fail_after(20):
        untrusted = await run_check(CheckOptions(server.url, seconds=0.2))
        trusted = await run_check(
            CheckOptions(server.url, seconds=0.4, quiet_after=0.2, ca_file=ca_file)
        )
    status, text = findings(untrusted)["tls"]
    assert status == "fail"
    assert text.startswith("certificate rejected: unable to get local issuer certificate")
    assert "--ca-file" in text
    assert "handshake" not in findings(untrusted)
    assert trusted.ok, render(trusted)
    status, text = findings(trusted)["tls"]
    assert status == "ok"
    assert trusted.tls is not None and trusted.tls["version"].startswith("TLSv1.")
    assert "certificate for localhost" in text
    assert trusted.bot_output_messages == 20


async def test_check_answers_marks_like_the_sidecar_including_after_a_clear() -> None:
    def barge_in(server: WsServer, conn: Connection, message: Json) -> None:
        if len(conn.received) == 1:
            server.send(bot_output(b"\0\1" * 16000, 16000))  # 1 s to "play"
            server.send({"trigger": "realtime_audio.mark", "data": {"name": "interrupted"}})
            server.send({"trigger": "realtime_audio.clear"})
            server.send(bot_output(b"\0\1" * 1600, 16000))
            server.send({"trigger": "realtime_audio.mark", "data": {"name": "short"}})

    with WsServer(on_message=barge_in) as server, trio.fail_after(20):
        report = await run_check(CheckOptions(server.url, seconds=0.6, quiet_after=0.3))
        echoes = [m["data"] for m in server.messages("realtime_audio.mark")]
    assert report.ok, render(report)
    assert report.clears == 1
    # The clear answers the pending mark at once; the next one waits for its 100 ms of audio.
    assert echoes == [
        {"name": "interrupted", "status": "cleared"},
        {"name": "short", "status": "played"},
    ]
    assert findings(report)["marks"] == ("info", "2 mark(s) answered (1 played), 1 clear(s)")
