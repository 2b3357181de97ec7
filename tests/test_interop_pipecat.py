"""Interop with a real Pipecat server, through the Twilio and Vonage dialects.

tests/interop/pipecat_server.py runs Pipecat 1.14's FastAPIWebsocketTransport
with its own TwilioFrameSerializer or VonageFrameSerializer. A websockets
client speaking through our dialect sessions sends it exactly what the
sidecar will (opening first, capture-sized chunks at real-time pace, marks,
the closing) and checks what comes back: the echo, and a self-interrupting
reply's `clear`.

Needs the `interop` extra (pipecat-ai[websocket], uvicorn). Without it these
tests skip, unless SIDECAR_REQUIRE_INTEROP=1 (CI) makes that a failure.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from support import (
    REPO,
    Speaker,
    dominant_frequency,
    level_db,
    open_bot_loop,
    play,
    tone,
    wait_until,
)
from test_dialect_twilio import DialectClient, open_client

from sidecar import frames
from sidecar.dialects.base import (
    AudioOut,
    ClearedOut,
    ClearPlayout,
    Invalid,
    MarkOut,
    Options,
    PlayAudio,
)
from sidecar.dialects.g711 import pcm16_from_ulaw, ulaw_from_pcm16
from sidecar.dialects.twilio import Twilio
from sidecar.dialects.vonage import Vonage
from sidecar.resample import Resampler

if not os.environ.get("SIDECAR_REQUIRE_INTEROP"):
    pytest.importorskip("pipecat", reason="needs the interop extra: pip install -e '.[interop]'")

SERVER = REPO / "tests" / "interop" / "pipecat_server.py"
OUT_RATE = 48000
Json = dict[str, Any]

pytestmark = pytest.mark.slow


@dataclass
class PipecatServer:
    url: str
    process: trio.Process
    stderr: Path
    events: list[Json] = field(default_factory=list)

    def named(self, name: str) -> list[Json]:
        return [e for e in self.events if e["event"] == name]

    async def wait_event(self, name: str, timeout: float = 10.0) -> Json:
        try:
            await wait_until(lambda: bool(self.named(name)), timeout)
        except trio.TooSlowError:
            log = self.stderr.read_text(errors="replace")[-3000:]
            raise AssertionError(f"no {name!r} event from Pipecat; its stderr:\n{log}") from None
        return self.named(name)[0]


async def _read_lines(stream: trio.abc.ReceiveStream, lines: trio.MemorySendChannel[str]) -> None:
    buf = b""
    async with lines:
        async for data in stream:
            buf += data
            *complete, buf = buf.split(b"\n")
            for line in complete:
                await lines.send(line.decode())


@asynccontextmanager
async def open_pipecat(serializer: str, mode: str, *extra: str) -> AsyncIterator[PipecatServer]:
    """The Pipecat server subprocess, always killed and reaped."""
    args = [sys.executable, str(SERVER), "--serializer", serializer, "--mode", mode, "--port", "0"]
    # Its log goes to a file, read only when a test fails: a pipe nobody
    # drains would block the server once full.
    with tempfile.NamedTemporaryFile(prefix="pipecat-", suffix=".log", delete=False) as err:
        stderr = Path(err.name)
        process = await trio.lowlevel.open_process(
            [*args, *extra], stdout=subprocess.PIPE, stderr=err, cwd=REPO
        )
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            send, receive = trio.open_memory_channel[str](100)
            nursery.start_soon(_read_lines, process.stdout, send)
            with trio.fail_after(60):  # importing Pipecat takes seconds on a loaded machine
                url = await receive.receive()
            server = PipecatServer(url, process, stderr)

            async def collect() -> None:
                async for line in receive:
                    server.events.append(json.loads(line))

            nursery.start_soon(collect)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await process.wait()
        stderr.unlink(missing_ok=True)


def first_short(rate: int) -> int:
    """Samples the capture's first chunk lacks at `rate`: the resampler's hold-back,
    which the dialects' packet cutters lead with silence."""
    return round(Resampler(48000, rate).delay_ms * rate / 1000)


async def stream_audio(client: DialectClient, pcm: bytes, rate: int, frame_ms: int = 20) -> None:
    """Like the capture: chunks of frame_ms of input, the first short by
    `first_short(rate)` (the resampler's hold-back), later ones off by a sample
    now and then, at real-time pace on an absolute schedule."""
    start = trio.current_time()
    nominal = rate * frame_ms // 1000
    at, n = 0, 0
    while at < len(pcm):
        jitter = (0, 1, -1, 0)[n % 4] if n else -first_short(rate)
        size = (nominal + jitter) * 2
        await trio.sleep_until(start + n * frame_ms / 1000)
        await client.send(AudioOut(pcm[at : at + size], rate, 0))
        at, n = at + size, n + 1


def assert_all_understood(client: DialectClient) -> None:
    assert client.of(Invalid) == [], client.of(Invalid)


def split_at_clear(client: DialectClient) -> tuple[bytes, bytes]:
    kinds = [type(item) for item in client.incoming]
    assert kinds.count(ClearPlayout) == 1, kinds
    cut = kinds.index(ClearPlayout)
    before = b"".join(i.pcm for i in client.incoming[:cut] if isinstance(i, PlayAudio))
    after = b"".join(i.pcm for i in client.incoming[cut:] if isinstance(i, PlayAudio))
    return before, after


# -- Twilio ---------------------------------------------------------------------------------


async def test_pipecat_twilio_echo() -> None:
    with trio.fail_after(60):
        async with open_pipecat("twilio", "echo") as server:
            dialect = Twilio(Options(stream_params=(("botId", "bot_1"), ("lang", "fr"))))
            session = dialect.session()
            async with open_client(server.url, session) as client:
                call = await server.wait_event("call")
                # Pipecat's runner recognised Twilio from connected + start.
                assert call["stream_sid"] == session.stream_sid
                assert call["call_sid"] == dialect.call_sid
                assert call["custom_parameters"] == {"botId": "bot_1", "lang": "fr"}
                sent = tone(440, 1.0, rate=8000)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_audio, client, sent, 8000)
                    await trio.sleep(0.5)
                    # Pipecat ignores mark echoes; the stream must go on regardless.
                    await client.send(MarkOut("not-asked-for", True))
                await wait_until(lambda: len(client.played()) >= len(sent) - 2 * 320)
                await client.close()
            # stop alone ends nothing (Pipecat ignores it); the close does.
            await server.wait_event("hangup", timeout=5)
            assert_all_understood(client)
            played = client.played()
            # The very first media message was not swallowed by the handshake, and
            # nothing was resampled: the echo is the lead, then the mu-law round
            # trip of the input.
            lead = 2 * first_short(8000)
            assert played[:lead] == bytes(lead)
            assert played[lead : lead + 3200] == pcm16_from_ulaw(ulaw_from_pcm16(sent[:3200]))
            assert abs(dominant_frequency(played, 8000) - 440) < 10
            # Pipecat sends 40 ms (320-byte) pieces at 8 kHz.
            sizes = {len(i.pcm) for i in client.of(PlayAudio)}
            assert sizes == {640}, sizes


async def test_pipecat_twilio_interrupt_sends_clear() -> None:
    with trio.fail_after(60):
        async with open_pipecat("twilio", "interrupt") as server:
            async with open_client(server.url, Twilio(Options()).session()) as client:
                await server.wait_event("call")
                async with trio.open_nursery() as nursery:
                    # The caller keeps the line busy, as a phone does.
                    nursery.start_soon(stream_audio, client, tone(200, 2.5, rate=8000), 8000)
                    await server.wait_event("interrupted")
                    await wait_until(lambda: bool(client.of(ClearPlayout)), 5)
                    await wait_until(lambda: len(split_at_clear(client)[1]) >= 2 * 2400, 5)
                await client.send(ClearedOut())  # nothing on Twilio's wire
                await client.close()
            assert_all_understood(client)
            before, after = split_at_clear(client)
            # ~1 s of the 4 s reply came before the clear, at 1x real time.
            assert 0.6 <= len(before) / 16000 <= 1.6, len(before) / 16000
            assert abs(dominant_frequency(before, 8000) - 440) < 10
            assert abs(dominant_frequency(after, 8000) - 880) < 10


# -- Vonage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 8000])
async def test_pipecat_vonage_echo(rate: int) -> None:
    with trio.fail_after(60):
        async with open_pipecat("vonage", "echo") as server:
            dialect = Vonage(Options(sample_rate=rate, stream_params=(("caller", "+15550100"),)))
            async with open_client(server.url, dialect.session()) as client:
                call = await server.wait_event("call")
                assert call["rate"] == rate
                assert call["headers"] == {"caller": "+15550100"}
                sent = tone(440, 1.0, rate=rate)
                await stream_audio(client, sent, rate)
                frame = rate // 50 * 2
                await wait_until(lambda: len(client.played()) >= len(sent) - 2 * frame)
                await client.close()
            await server.wait_event("hangup", timeout=5)
            assert_all_understood(client)
            played = client.played()
            lead = 2 * first_short(rate)
            assert played[:lead] == bytes(lead)
            assert played[lead : 5 * frame] == sent[: 5 * frame - lead]  # nothing lost or changed
            assert abs(dominant_frequency(played, rate) - 440) < 10
            assert {len(i.pcm) for i in client.of(PlayAudio)} == {frame}


async def test_pipecat_vonage_interrupt_sends_clear() -> None:
    rate = 16000
    with trio.fail_after(60):
        async with open_pipecat("vonage", "interrupt") as server:
            async with open_client(server.url, Vonage(Options()).session()) as client:
                await server.wait_event("call")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_audio, client, tone(200, 2.5, rate=rate), rate)
                    await server.wait_event("interrupted")
                    await wait_until(lambda: bool(client.of(ClearPlayout)), 5)
                    # Our answer to the clear; Pipecat only logs it.
                    await client.send(ClearedOut())
                    await wait_until(lambda: len(split_at_clear(client)[1]) >= 2 * 4800, 5)
                await client.close()
            assert_all_understood(client)
            before, after = split_at_clear(client)
            assert 0.6 <= len(before) / (2 * rate) <= 1.6, len(before) / (2 * rate)
            assert abs(dominant_frequency(before, rate) - 440) < 10
            assert abs(dominant_frequency(after, rate) - 880) < 10


# -- the sidecar process itself, between a bot and Pipecat -----------------------------------


def frame_tones(speaker: Speaker) -> list[tuple[int, float]]:
    """(where it ends in the audio-out byte stream, dominant frequency) of each
    audible frame the bot heard."""
    out: list[tuple[int, float]] = []
    end = 0
    for frame in speaker.frames:
        assert isinstance(frame, frames.Audio), frame
        end += len(frames.encode_frame(frame))
        if level_db(frame.pcm) > -40:
            out.append((end, dominant_frequency(frame.pcm, OUT_RATE)))
    return out


def stream_position(speaker: Speaker) -> int:
    """Bytes the sidecar has written to the bot so far: decoded, half decoded,
    or still waiting in the bot's socket.

    A position in the stream, not a time: whatever the sidecar wrote before it
    printed an event is counted, however far behind the speaker task is.
    """
    stream = speaker.stream
    assert isinstance(stream, trio.SocketStream)
    raw = fcntl.ioctl(stream.socket.fileno(), termios.FIONREAD, b"\0" * 4)
    waiting: int = struct.unpack("i", raw)[0]
    decoded = [f for f in speaker.frames if not isinstance(f, frames.FrameError)]
    return sum(len(frames.encode_frame(f)) for f in decoded) + speaker.decoder.buffered + waiting


@pytest.mark.parametrize("protocol", ["twilio", "vonage"])
async def test_the_bot_hears_itself_through_pipecat(tmp_path: Path, protocol: str) -> None:
    with trio.fail_after(90):
        async with (
            open_pipecat(protocol, "echo") as server,
            open_bot_loop(server.url, tmp_path, "--protocol", protocol) as loop,
        ):
            await server.wait_event("call")
            await play(loop.bot, tone(1000, 1.5))
            await loop.sidecar.stats(lambda e: e["samples_played"] >= 1.2 * OUT_RATE, 20)
    heard = loop.speaker.pcm
    # Through 8 or 16 kHz and back: the tone, at 48 kHz, paced.
    assert abs(dominant_frequency(heard, OUT_RATE) - 1000) < 10
    assert level_db(heard) > -12
    assert {f.rate for f in loop.speaker.audio_frames} == {OUT_RATE}
    assert not [e for e in loop.sidecar.named("invalid_message")]


@pytest.mark.parametrize("protocol", ["twilio", "vonage"])
async def test_pipecats_clear_stops_what_the_bot_hears_within_a_frame(
    tmp_path: Path, protocol: str
) -> None:
    with trio.fail_after(90):
        async with open_pipecat(protocol, "interrupt") as server:
            async with open_bot_loop(server.url, tmp_path, "--protocol", protocol) as loop:
                await server.wait_event("call")
                async with trio.open_nursery() as nursery:
                    # The meeting keeps talking, as a caller's line would.
                    nursery.start_soon(play, loop.bot, tone(200, 3.0))
                    await loop.sidecar.wait_event("playout_cleared", timeout=20)
                    # The sidecar prints the event after it emptied the queue, so
                    # every frame written before the clear lies before this point.
                    clear_at = stream_position(loop.speaker)
                    await loop.sidecar.stats(lambda e: e["samples_played"] >= 1.3 * OUT_RATE, 20)
            # Every line Pipecat printed while the call lasted is read by then.
            await server.wait_event("hangup", timeout=10)
    assert not loop.sidecar.named("invalid_message")
    tones = frame_tones(loop.speaker)
    reply = [end for end, f in tones if abs(f - 440) < 30]
    after = [end for end, f in tones if abs(f - 880) < 30]
    # Part of the first reply (Pipecat cuts it after about a second), then the
    # one after the interruption, in that order.
    assert len(reply) >= 20 and len(after) >= 10, (len(reply), len(after))
    assert max(reply) < min(after)
    # What was queued of the first reply when the clear came was dropped, not
    # played: at most the frame being written still reached the bot, besides
    # what Pipecat itself sent of the reply after its clear (its output task
    # races its interruption: under load a piece or two goes out late), which
    # is rightly played, over as many frames as it spans plus one it straddles.
    # Judged by position in the stream, so a slow process cannot misjudge it.
    late_sent = sum(e["samples"] * OUT_RATE / e["rate"] for e in server.named("reply_after_clear"))
    frame_samples = OUT_RATE // 50
    allowed = 1 + (math.ceil(late_sent / frame_samples) + 1 if late_sent else 0)
    late = [end - clear_at for end in reply if end > clear_at]
    assert len(late) <= allowed, (late, late_sent)
