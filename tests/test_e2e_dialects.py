"""The real sidecar process in the twilio and vonage dialects.

Against servers written from Twilio's and Vonage's public docs
(tests/dialect_servers.py, which use nothing from `sidecar`): the bot's 48 kHz
audio reaches the server in the dialect's exact framing, the server's audio
reaches the bot paced at 48 kHz, and marks, notifies, clears and DTMF mean
what those docs say.
"""

from __future__ import annotations

from pathlib import Path

import trio
from dialect_servers import TwilioServer, VonageServer
from support import (
    SidecarProcess,
    Speaker,
    dominant_frequency,
    level_db,
    open_bot_loop,
    play,
    sidecar_args,
    tone,
    wait_until,
)

from sidecar import frames

OUT_RATE = 48000
FRAME_S = 0.02


def audible_arrivals(speaker: Speaker, after: float) -> int:
    """Frames with sound in them that reached the bot after `after` (trio time)."""
    return sum(
        1
        for frame, at in zip(speaker.frames, speaker.arrivals, strict=True)
        if at > after and isinstance(frame, frames.Audio) and any(frame.pcm)
    )


# -- twilio --------------------------------------------------------------------------------


async def test_twilio_echo_reaches_the_bot_and_the_stream_follows_the_docs(
    tmp_path: Path,
) -> None:
    call_sid = "CA" + "1" * 32
    with trio.fail_after(40), TwilioServer(echo=True) as server:
        async with open_bot_loop(
            server.url,
            tmp_path,
            "--protocol",
            "twilio",
            "--stream-param",
            "agent=support",
            "--call-sid",
            call_sid,
        ) as loop:
            await play(loop.bot, tone(1000, 1.0))
            await loop.sidecar.stats(lambda e: e["samples_played"] >= 0.9 * OUT_RATE)
        await wait_until(lambda: bool(server.events("stop")), what="stop")
    assert server.violations() == []
    start = server.events("start")[0]["start"]
    assert start["callSid"] == call_sid
    assert start["customParameters"] == {"agent": "support"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    # One second in, in exact 20 ms pieces (the tail padded at the stop): 8000 samples and a bit.
    assert 8000 <= len(server.inbound_mulaw()) <= 8000 + 2 * 160
    heard = loop.speaker.pcm
    assert abs(dominant_frequency(heard, OUT_RATE) - 1000) < 10
    assert level_db(heard) > -12


async def test_twilio_marks_are_echoed_when_heard_and_a_clear_stops_the_bot_at_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(40), TwilioServer() as server:
        async with open_bot_loop(server.url, tmp_path, "--protocol", "twilio") as loop:
            await wait_until(lambda: bool(server.events("start")), what="start")
            # A short answer, then its mark: echoed once the bot has heard it all.
            server.send_pcm(tone(440, 0.3, rate=8000))
            server.send_mark("short")
            await wait_until(lambda: bool(server.events("mark")), what="the first mark echo")
            assert len(loop.speaker.pcm) >= 0.3 * OUT_RATE * 2 - 2 * 960
            # A long one, cut short: the clear drops it and answers its mark at once.
            server.send_pcm(tone(440, 5.0, rate=8000))
            server.send_mark("long")
            await loop.sidecar.stats(lambda e: e["samples_played"] >= 0.8 * OUT_RATE)
            server.send_clear()
            await wait_until(lambda: len(server.events("mark")) == 2, what="the second mark echo")
            echoed = trio.current_time()
            stats = await loop.sidecar.stats(lambda e: e["dropped"].get("downlink_cleared", 0) > 0)
            await trio.sleep(0.2)
            # The frame being written when the clear came may still arrive; nothing after it.
            assert audible_arrivals(loop.speaker, echoed) <= 2
            assert stats["dropped"]["downlink_cleared"] > 3 * OUT_RATE
    assert [m["mark"]["name"] for m in server.events("mark")] == ["short", "long"]
    assert server.violations() == []
    played = [e for e in loop.sidecar.named("mark")]
    assert [(e["name"], e["status"]) for e in played] == [("short", "played"), ("long", "cleared")]


async def test_twilio_dtmf_and_a_reconnect_as_a_new_stream_of_the_same_call(
    tmp_path: Path,
) -> None:
    with trio.fail_after(40), TwilioServer() as server:
        async with open_bot_loop(
            server.url, tmp_path, "--protocol", "twilio", "--retry-delay", "0.1"
        ) as loop:
            await wait_until(lambda: bool(server.events("start")), what="start")
            first = server.current
            await loop.bot.send_all(frames.encode_dtmf("7"))
            await wait_until(lambda: bool(server.events("dtmf", first)), what="dtmf")
            await loop.sidecar.stats(lambda e: e["dtmf_in"] == 1)
            # A server going away (1001), not the call ending (1000: exit 0).
            first.ws.close(1001, "server restarting")
            await wait_until(lambda: len(server.connections) == 2, what="a second connection")
            await wait_until(lambda: bool(server.events("start")), what="the second start")
            await play(loop.bot, tone(1000, 0.2))
            await wait_until(lambda: bool(server.events("media")), what="media on the new stream")
    second = server.connections[1]
    assert server.events("dtmf", first)[0]["dtmf"] == {"track": "inbound_track", "digit": "7"}
    one, two = (server.events("start", c)[0] for c in (first, second))
    assert one["streamSid"] != two["streamSid"]
    assert one["start"]["callSid"] == two["start"]["callSid"]
    assert server.events("media", second)[0]["sequenceNumber"] == "2"
    assert server.violations() == []


async def test_twilio_signs_its_upgrade_as_twilio_does(tmp_path: Path) -> None:
    token = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
    with trio.fail_after(40), TwilioServer(auth_token=token) as server:
        env = {"TWILIO_AUTH_TOKEN": token}
        async with open_bot_loop(server.url, tmp_path, "--protocol", "twilio", env=env) as loop:
            await play(loop.bot, tone(1000, 0.2))
            await wait_until(lambda: bool(server.events("media")), what="media")
        assert (server.refused, server.violations()) == (0, [])
        assert token not in (loop.sidecar.stdout + loop.sidecar.stderr).decode()


async def test_twilio_with_the_wrong_token_is_refused_and_fatal(tmp_path: Path) -> None:
    with trio.fail_after(40), TwilioServer(auth_token="a" * 32) as server:
        args = [*sidecar_args(server.url, tmp_path), "--protocol", "twilio"]
        async with trio.open_nursery() as nursery:
            env = {"TWILIO_AUTH_TOKEN": "b" * 32}
            sidecar = await SidecarProcess(args, env=env).start(nursery)
            assert await sidecar.wait(timeout=20) == 4
    gave_up = sidecar.named("gave_up")[0]
    assert gave_up["status"] == 403
    assert "X-Twilio-Signature does not match" in gave_up["reason"]
    assert server.refused == 1 and server.connections == []


async def test_twilio_refuses_a_sample_rate_it_cannot_send(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            args = sidecar_args("ws://127.0.0.1:9/x", tmp_path, "--protocol", "twilio")
            sidecar = await SidecarProcess([*args, "--sample-rate", "16000"]).start(
                nursery, wait_ready=False
            )
            assert await sidecar.wait() == 2
    assert b"sends audio at 8000 Hz" in sidecar.stderr


# -- vonage --------------------------------------------------------------------------------


async def test_vonage_echo_in_exact_frames_with_the_call_headers(tmp_path: Path) -> None:
    with trio.fail_after(40), VonageServer(echo=True) as server:
        async with open_bot_loop(
            server.url,
            tmp_path,
            "--protocol",
            "vonage",
            "--stream-param",
            "X-Call=abc",
        ) as loop:
            await play(loop.bot, tone(1000, 1.0))
            await loop.sidecar.stats(lambda e: e["samples_played"] >= 0.9 * OUT_RATE)
    assert server.violations() == []
    assert server.rate() == 16000
    assert server.headers() == {"X-Call": "abc"}
    assert 32000 <= len(server.inbound_pcm()) <= 32000 + 2 * 640
    assert abs(dominant_frequency(loop.speaker.pcm, OUT_RATE) - 1000) < 10


async def test_vonage_notify_is_answered_when_heard_and_a_clear_with_cleared(
    tmp_path: Path,
) -> None:
    with trio.fail_after(40), VonageServer() as server:
        async with open_bot_loop(
            server.url, tmp_path, "--protocol", "vonage", "--sample-rate", "8000"
        ) as loop:
            await wait_until(lambda: bool(server.connections), what="a connection")
            await wait_until(lambda: bool(server.current.texts), what="websocket:connected")
            pcm = tone(440, 0.3, rate=8000)
            for start in range(0, len(pcm), 320):
                server.send_audio(pcm[start : start + 320])
            server.send_notify({"utterance": 1, "text": "héllo"})
            await wait_until(lambda: not server.notifies_pending(), what="the notify answer")
            assert len(loop.speaker.pcm) >= 0.3 * OUT_RATE * 2 - 2 * 960
            server.send_audio(tone(440, 5.0, rate=8000))
            await loop.sidecar.stats(lambda e: e["samples_played"] >= 0.8 * OUT_RATE)
            server.send_clear()
            await wait_until(
                lambda: bool(server.events("websocket:cleared")), what="websocket:cleared"
            )
            cleared = trio.current_time()
            await trio.sleep(0.2)
            assert audible_arrivals(loop.speaker, cleared) <= 2
    assert server.violations() == []
    notify = server.events("websocket:notify")[0]
    assert notify["payload"] == {"utterance": 1, "text": "héllo"}
