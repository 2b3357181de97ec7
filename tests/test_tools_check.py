"""`check URL` against compliant, broken, silent, refusing and TLS servers, in every dialect."""

from __future__ import annotations

import argparse
import json
import ssl
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from agent_servers import AgentServer, RealtimeServer
from dialect_servers import TwilioServer, VonageServer
from support import Connection, Json, WsServer, bot_output, tone, wait_until
from test_tools_harness import run_tool
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from sidecar.tools import synth
from sidecar.tools.check import (
    CheckOptions,
    CheckReport,
    add_parser,
    options_from_args,
    render,
    run_check,
)
from sidecar.tools.report import Report
from sidecar.tools.serve import ServeOptions, Server
from sidecar.tools.wavio import to_s16le, write_wav


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
    assert out.startswith(f"audio-sidecar check {url} --protocol attendee\n")
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
    # Not one message back is a failure even without --require-output.
    assert not lenient.ok
    assert findings(lenient)["bot_output"][0] == "warn"
    assert findings(lenient)["contract"] == (
        "fail",
        "nothing came back at all: not one message in reply to the 0.30 s of audio "
        "(is the server speaking --protocol attendee?)",
    )
    assert render(lenient).endswith("FAIL: 1 problem(s) found")


async def test_check_fails_a_twilio_check_of_a_server_that_answers_nothing() -> None:
    with WsServer() as server:
        url = server.url
        result = await run_tool(
            "check", url, "--protocol", "twilio", "--seconds", "0.3", "--quiet-after", "0.2"
        )
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert out.startswith(f"audio-sidecar check {url} --protocol twilio\n")
    assert "FAIL  contract: nothing came back at all" in out


async def test_check_and_run_say_the_same_of_a_rejection_without_content_length(
    tmp_path: Path,
) -> None:
    """A 401 whose body has no length and no end (the connection stays open):
    both name it from its head, at once, in the same words."""

    async def refuse(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\n\r\nmissing token")
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
            url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
            # Each well within its 30 s connect timeout, which check used to wait out.
            with trio.fail_after(10):
                check = await run_tool("check", url, "--connect-timeout", "30")
            with trio.fail_after(10):
                run = await run_tool(
                    "run", "--url", url, "--connect-timeout", "30",
                    "--audio-in", str(tmp_path / "in"), "--audio-out", str(tmp_path / "out"),
                )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert (check.returncode, run.returncode) == (1, 4)
    gave_up = next(
        json.loads(line) for line in run.stdout.decode().splitlines() if '"gave_up"' in line
    )
    assert gave_up["reason"] == "handshake rejected with HTTP 401: missing token"
    assert f"FAIL  handshake: {gave_up['reason']} (the server wants credentials" in (
        check.stdout.decode()
    )


async def test_check_explains_refused_and_rejected_connections() -> None:
    with WsServer(process_request=wants_token) as server, trio.fail_after(20):
        rejected = await run_check(CheckOptions(server.url, seconds=0.2))
        with trio.socket.socket() as probe:
            await probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        refused = await run_check(CheckOptions(f"ws://127.0.0.1:{free_port}/", seconds=0.2))
    status, text = findings(rejected)["handshake"]
    assert status == "fail"
    assert "handshake rejected with HTTP 401: missing or wrong token" in text
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


# -- other dialects --------------------------------------------------------------------------


def speech_wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    write_wav(path, to_s16le(synth.speech_like(seconds, rate)), rate)
    return path


@pytest.mark.parametrize("mode", ["echo", "play"])
@pytest.mark.parametrize("protocol", ["attendee", "twilio", "vonage"])
async def test_check_passes_serve_in_every_dialect(
    protocol: str, mode: str, tmp_path: Path
) -> None:
    options = ServeOptions(protocol=protocol, port=0, stats_interval=0, play_after=0.1)
    if mode == "echo":
        options = replace(options, echo=True)
    else:
        options = replace(options, play=speech_wav(tmp_path / "answer.wav"), mark="answer-done")
    server = Server(options, Report.silent())
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.run)
            report = await run_check(
                CheckOptions(url, protocol=protocol, seconds=0.6, quiet_after=0.3)
            )
            server.finished.set()
    assert report.ok, render(report)
    assert report.protocol == protocol
    assert server.violations == 0
    (client,) = server.clients
    rate = 8000 if protocol == "twilio" else 16000
    assert report.bot_output_rates == [rate]
    if mode == "echo":
        assert report.bot_output_seconds == pytest.approx(0.6, abs=0.021)
        assert client.echoed == 30
    else:
        assert report.bot_output_seconds == pytest.approx(0.5, abs=0.021)
        # Vonage's mark is a notify: the sidecar sees its payload, a JSON string.
        seen = '"answer-done"' if protocol == "vonage" else "answer-done"
        assert report.marks == [{"name": seen, "status": "played"}]
        played = "played" if protocol == "attendee" else "answered"
        assert client.marks == [("answer-done", played)]
    sent = {"attendee": "realtime_audio.mixed", "twilio": "media", "vonage": "binary"}[protocol]
    wire = "8000 Hz mu-law" if protocol == "twilio" else "16000 Hz"
    assert findings(report)["audio"] == (
        "ok",
        f"sent 0.60 s of speech-like audio as 30 {sent} messages at {wire}",
    )


async def test_check_speaks_twilio_to_a_server_written_from_twilios_docs() -> None:
    with TwilioServer(echo=True) as server, trio.fail_after(20):

        async def barge_in() -> None:
            await wait_until(lambda: bool(server.events("media")))
            await trio.to_thread.run_sync(server.send_pcm, tone(300, 1.0, rate=8000))
            await trio.to_thread.run_sync(server.send_mark, "reply-1")
            await trio.to_thread.run_sync(server.send_clear)
            await trio.to_thread.run_sync(server.send_mark, "after-clear")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(barge_in)
            report = await run_check(
                CheckOptions(server.url, protocol="twilio", seconds=0.6, quiet_after=0.3)
            )
        await wait_until(lambda: server.current.closed.is_set())
    assert report.ok, render(report)
    # Everything check sent was Twilio to the letter: counters, ids, marks in order, stop last.
    assert server.violations() == []
    assert server.marks_pending() == []
    assert len(server.events("stop")) == 1
    assert report.clears == 1
    assert report.marks == [
        {"name": "reply-1", "status": "cleared"},
        {"name": "after-clear", "status": "played"},
    ]
    assert report.bot_output_messages == 31  # 30 echoes and the 1 s reply
    assert report.error_replies == 0  # Twilio has no error reply


async def test_check_speaks_vonage_to_a_server_written_from_vonages_docs() -> None:
    with VonageServer(echo=True) as server, trio.fail_after(20):

        async def barge_in() -> None:
            await wait_until(lambda: bool(server.connections) and len(server.inbound_pcm()) > 1000)
            await trio.to_thread.run_sync(server.send_audio, tone(300, 1.0, rate=8000))
            await trio.to_thread.run_sync(server.send_notify, {"reply": 1})
            await trio.to_thread.run_sync(server.send_clear)
            await trio.to_thread.run_sync(server.send_notify, "after-clear")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(barge_in)
            report = await run_check(
                CheckOptions(
                    server.url, protocol="vonage", sample_rate=8000, seconds=0.6, quiet_after=0.3
                )
            )
    assert report.ok, render(report)
    assert server.violations() == []
    assert server.notifies_pending() == []
    assert len(server.events("websocket:cleared")) == 1
    assert server.rate() == 8000
    assert report.marks == [
        {"name": '{"reply": 1}', "status": "cleared"},
        {"name": '"after-clear"', "status": "played"},
    ]


async def test_check_names_what_breaks_twilios_rules() -> None:
    def broken(server: WsServer, conn: Connection, message: Json) -> None:
        sid = message.get("streamSid")
        if message.get("event") == "start":
            server.send({"event": "playAudio", "streamSid": sid, "text": "hello"})
        elif message.get("event") == "media":
            server.send({"event": "media", "streamSid": sid, "media": {"payload": "no base64!"}})

    with WsServer(on_message=broken) as server, trio.fail_after(20):
        result = await run_tool(
            "check", "--protocol", "twilio", server.url, "--seconds", "0.4", "--quiet-after", "0.3"
        )
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert (
        "ok    audio: sent 0.40 s of speech-like audio as 20 media messages at 8000 Hz mu-law"
        in out
    )
    assert "WARN  bot_output: no media came back: the bot would stay silent" in out
    assert "FAIL  contract: 21 of 21 messages from the server break the contract (0 valid):" in out
    assert "message #1: unknown event 'playAudio'" in out
    assert (
        "message #2 (media) (and 19 more like it): `media.payload` is not valid base64 "
        "[invalid_base64]"
    ) in out
    # Twilio has no error reply: nothing went back but what Twilio sends.
    events = [m["event"] for m in server.messages()]
    assert set(events) == {"connected", "start", "media", "stop"}


async def test_check_usage_errors_per_dialect() -> None:
    rate = await run_tool(
        "check", "--protocol", "twilio", "ws://127.0.0.1:9/", "--sample-rate", "16000"
    )
    assert rate.returncode == 2
    assert "--protocol twilio sends audio at 8000 Hz; --sample-rate 16000 does not apply" in (
        rate.stderr.decode()
    )
    vonage = await run_tool(
        "check", "--protocol", "vonage", "ws://127.0.0.1:9/", "--sample-rate", "24000"
    )
    assert vonage.returncode == 2
    assert "--sample-rate must be 8000 or 16000 for --protocol vonage" in vonage.stderr.decode()
    bad = await run_tool("check", "ws://127.0.0.1:9/", "--session", '{"a": 1}')
    assert bad.returncode == 2
    assert "--session means nothing to --protocol attendee" in bad.stderr.decode()
    nourl = await run_tool("check", "--protocol", "twilio")
    assert nourl.returncode == 2
    assert "give the server's URL (--protocol twilio has no default)" in nourl.stderr.decode()


def check_options(*argv: str) -> CheckOptions:
    """`audio-sidecar check ARGV` as the command line turns it into options."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return options_from_args(parser.parse_args(["check", *argv]))


DEEPGRAM_AGENT = {
    "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
    "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
    "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
}


@pytest.mark.parametrize("protocol", ["openai-realtime", "deepgram-agent"])
async def test_check_drives_any_dialect_session_even_an_agent_services(
    protocol: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing in check knows these dialects: their sessions say what to send and
    when (Deepgram's go-ahead, its keepalive), their keys come from the environment,
    --session reaches them."""
    server: RealtimeServer | AgentServer
    session: dict[str, object]
    if protocol == "openai-realtime":
        server, variable, key = RealtimeServer(), "OPENAI_API_KEY", "sk-test"
        session = {"instructions": "Be brief."}
    else:
        server, variable, key = AgentServer(), "DEEPGRAM_API_KEY", "dg-test"
        session = {"agent": DEEPGRAM_AGENT}
    monkeypatch.setenv(variable, key)
    (tmp_path / "session.json").write_text(json.dumps(session))
    with server, trio.fail_after(30):
        options = check_options(
            "--protocol", protocol, server.url, "--seconds", "2",
            "--session", f"@{tmp_path / 'session.json'}",
        )  # fmt: skip
        assert options.session == session
        report = await run_check(replace(options, quiet_after=0.5))
    assert report.ok, render(report)
    assert findings(report)["handshake"][1].endswith("(sent headers: Authorization)")
    assert [v for conn in server.connections for v in conn.violations] == []
    assert report.bot_output_messages > 0
    assert report.notices


def echoes_the_token(ws: ServerConnection, request: Request) -> Response:
    return ws.respond(401, f"bad token: {request.headers.get('Authorization')}\n")


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
async def test_check_prints_no_secret_a_server_echoes(json_flag: tuple[str, ...]) -> None:
    """A rejection's body quoting the credential back: check prints it through
    the redactor `run` uses, so the token never reaches the terminal or a CI log."""
    # Quotes: JSON escapes them, so a secret redacted after encoding would slip by.
    token = 'Digest username="bot", response="tok-4f9a2c7e1b3d5f60"'
    with WsServer(process_request=echoes_the_token) as server:
        done = await run_tool(
            "check", server.url, "--header", f"Authorization: {token}", *json_flag
        )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 1
    assert "HTTP 401: bad token: " in out
    assert "4f9a2c7e1b3d5f60" not in out and "tok-4f9a" not in out


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
async def test_check_prints_no_secret_a_close_reason_echoes(json_flag: tuple[str, ...]) -> None:
    """After the handshake, server text (here a close reason) is redacted too,
    before the report is encoded: JSON escapes the secret's quotes."""
    token = 'k="4f9a2c7e1b3d5f60"'

    def close_echoing(server: WsServer, conn: Connection, message: Json) -> None:
        conn.ws.close(1008, f"bad key {conn.request_headers.get('X-Key')}")

    with WsServer(on_message=close_echoing) as server:
        done = await run_tool("check", server.url, "--header", f"X-Key: {token}", *json_flag)
    out = done.stdout.decode() + done.stderr.decode()
    assert "bad key" in out
    assert "4f9a2c7e1b3d5f60" not in out
