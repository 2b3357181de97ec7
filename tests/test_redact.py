"""No secret printed: the one redactor, and the real process against servers that echo them."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from e2e_peers import ScriptedServer, drain, server_frame, upgrade_answer
from support import SidecarProcess, sidecar_args

from sidecar import events
from sidecar.config import request_secrets
from sidecar.handshake import UpgradeCheck, excerpt
from sidecar.redact import FRAGMENT_CHARS, Redactor

KEY = "sk-proj-Abcdefghij0123456789klmnopqrstuvwxyz"
TWILIO_TOKEN = "f3a9c2d1e8b74a6590c1d2e3f4a5b6c7"


def fragments(secret: str, text: str) -> list[str]:
    """Every piece of `secret` of FRAGMENT_CHARS or more found in `text`."""
    n = FRAGMENT_CHARS
    return [secret[i : i + n] for i in range(len(secret) - n + 1) if secret[i : i + n] in text]


def test_the_words_of_a_secret_are_secrets_too() -> None:
    redact = Redactor([f"Bearer {KEY}", "short"])
    assert redact(f"token {KEY} expired") == "token *** expired"
    assert redact(f"Authorization: Bearer {KEY}") == "Authorization: ***"


def test_every_dialects_credential_variable_is_a_secret_whatever_the_protocol() -> None:
    environ = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "OPENAI_API_KEY": KEY, "DEEPGRAM_API_KEY": "dg"}
    redact = Redactor.for_run((), environ)
    assert redact(f"a {TWILIO_TOKEN} b {KEY}") == "a *** b ***"
    # Too short to be a secret (and to hide it would garble ordinary text).
    assert redact("dg") == "dg"


def test_a_fragment_of_a_secret_at_a_cut_edge_is_hidden() -> None:
    redact = Redactor([KEY])
    assert redact.edges("expired: " + KEY[:12]) == "expired: ***"
    assert redact.edges(KEY[-9:] + " expired") == "*** expired"
    # Shorter than FRAGMENT_CHARS: nothing to hide.
    assert redact.edges("x " + KEY[:7]) == "x " + KEY[:7]


def test_a_secret_across_the_cut_is_redacted_before_the_cut() -> None:
    redact = Redactor([KEY])
    for start in range(150, 200):
        text = "x" * start + KEY + " expired"
        shown = redact.cut(text, 200)
        assert len(shown) <= 200
        assert fragments(KEY, shown) == [], (start, shown)


def test_a_rejection_body_cut_inside_a_secret_shows_none_of_it() -> None:
    redact = Redactor([KEY])
    check = UpgradeCheck(redact=redact)
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    check.sent(request)
    body = ("y" * 180 + " token " + KEY + " expired").encode()
    check.received(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    reason = check.rejection().reason
    assert reason.startswith("handshake rejected with HTTP 401: yyy")
    assert fragments(KEY, reason) == []
    assert fragments(KEY, excerpt(body, redact=redact)) == []


def test_every_text_field_of_an_event_is_redacted() -> None:
    redact = Redactor([KEY])
    event = events.AgentError(message=f"Incorrect API key provided: {KEY}", code="invalid_api_key")
    clean = redact.event(event)
    assert isinstance(clean, events.AgentError)
    assert clean.message == "Incorrect API key provided: ***"
    assert clean.code == "invalid_api_key"
    stats_free = events.Connected(url="ws://x/a", attempt=1)
    assert redact.event(stats_free) is stats_free


def _close(code: int, reason: str) -> bytes:
    return server_frame(0x8, code.to_bytes(2, "big") + reason.encode())


async def test_a_server_echoing_every_secret_gets_none_printed(tmp_path: Path) -> None:
    """An agent's error, a close reason and (at --log-level debug) the websocket
    library's own log line, each echoing the OpenAI key bare and the Twilio
    token, which the protocol in use does not even need."""
    error = {"type": "error", "error": {"message": f"bad key {KEY} / {TWILIO_TOKEN}"}}

    async def script(stream: trio.SocketStream, key: bytes) -> None:
        frame = server_frame(0x1, json.dumps(error).encode())
        reason = f"{KEY} {TWILIO_TOKEN}"
        await stream.send_all(upgrade_answer(key) + frame + _close(1011, reason))
        await drain(stream)

    server = ScriptedServer(script)
    env = {"OPENAI_API_KEY": KEY, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            args = [
                *sidecar_args(server.url, tmp_path),
                *("--protocol", "openai-realtime", "--log-level", "debug"),
                *("--max-retries", "1", "--retry-delay", "0.05"),
            ]
            sidecar = SidecarProcess(args, env=env)
            await sidecar.start(nursery)
            try:
                code = await sidecar.wait(20)
                assert code == 3, sidecar.stderr.decode(errors="replace")[-3000:]
                await trio.sleep(0.1)
            finally:
                sidecar.kill()
            nursery.cancel_scope.cancel()
    assert sidecar.named("agent_error")
    assert sidecar.named("disconnected")
    output = (sidecar.stdout + sidecar.stderr).decode(errors="replace")
    assert b"close" in sidecar.stderr.lower()  # the library's debug lines are there
    assert fragments(KEY, output) == []
    assert fragments(TWILIO_TOKEN, output) == []


def test_the_vendors_public_query_values_are_no_secret() -> None:
    """The default OpenAI URL names its model in the query: masking it would
    hide the model's name in every event that mentions it."""
    url = "wss://api.openai.com/v1/realtime?model=gpt-realtime&key=sk-4f9a2c7e1b3d"
    redact = Redactor(request_secrets([], [url]))
    assert redact("model gpt-realtime refused key sk-4f9a2c7e1b3d") == (
        "model gpt-realtime refused key ***"
    )
