"""The real sidecar process with the silence fill on, in every dialect.

The bot speaks for a second, goes quiet for two (it writes nothing), and
speaks again. Against a real server of each dialect: the line keeps its
clock through the gap (Attendee's `timestamp_ms`, Twilio's `sequenceNumber`,
`chunk` and `timestamp`, Vonage's 20 ms frames), and the accounting holds:
what the server received = what the bot wrote, resampled, + `samples_filled`
- the uplink's drops. Agents with server-side VAD hear the turn end; Deepgram
gets silence instead of KeepAlive, and KeepAlive again with the fill off.
"""

from __future__ import annotations

import base64
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from accounting import uplink_dropped
from agent_servers import AgentConfig, AgentServer, RealtimeConfig, RealtimeServer
from dialect_servers import TwilioServer, VonageServer
from support import (
    SidecarProcess,
    WsServer,
    frame_stream,
    level_db,
    open_bot_loop,
    sidecar_args,
    tone,
)
from test_e2e_agents import audible_ms, deepgram_args, openai_args, tone_frames

from sidecar.dialects.g711 import pcm16_from_ulaw
from sidecar.fill import HOLD_MS

IN_RATE = 48000
FRAME_S = 0.02
SPEAK_S = 1.0
QUIET_S = 2.0
FILL_ON = ("--fill-silence", "on")

Json = dict[str, Any]


async def speak(bot: trio.SocketStream, seconds: float, freq: float = 1000) -> None:
    """Real-time 20 ms frames of a tone (loud enough for the fakes' VAD)."""
    start = trio.current_time()
    for n, frame in enumerate(frame_stream(tone(freq, seconds, level=0.3))):
        await trio.sleep_until(start + n * FRAME_S)
        await bot.send_all(frame)


async def speak_quiet_speak(bot: trio.SocketStream, marks: dict[str, float]) -> None:
    """Speak, write nothing for QUIET_S, speak again; `marks` gets time.monotonic()s."""
    marks["start"] = time.monotonic()
    await speak(bot, SPEAK_S)
    marks["quiet"] = time.monotonic()
    await trio.sleep(QUIET_S)
    marks["resume"] = time.monotonic()
    await speak(bot, SPEAK_S)
    marks["end"] = time.monotonic()


async def run_gap(url: str, tmp: Path, *extra: str) -> tuple[Json, dict[str, float]]:
    """One call with a quiet bot in the middle; the sidecar's final stats."""
    marks: dict[str, float] = {}
    async with open_bot_loop(url, tmp, *FILL_ON, *extra) as loop:
        await speak_quiet_speak(loop.bot, marks)
        await trio.sleep(0.3)
        sidecar = loop.sidecar
    final = sidecar.named("stats")[-1]
    return final, marks


def assert_accounted(final: Json, rate: int, tail_s: float = 0.3) -> None:
    """Received by the server (samples_out) = the bot's audio, resampled, + fill - drops."""
    assert final["samples_in"] == round(2 * SPEAK_S / FRAME_S) * IN_RATE // 50
    filled = final["samples_filled"]
    # The gap, all of it (the hold is made up for), and the quiet after the
    # second turn until the stop (`tail_s` and the stop's own time).
    assert filled >= (QUIET_S - FRAME_S) * rate, filled
    assert filled <= (QUIET_S + tail_s + 0.5) * rate, filled
    resampled = final["samples_in"] * rate // IN_RATE
    assert final["samples_out"] == resampled + filled - uplink_dropped(final)


# -- attendee ------------------------------------------------------------------------------


async def test_attendee_timestamps_run_on_through_a_quiet_bot(tmp_path: Path) -> None:
    with trio.fail_after(40), WsServer() as server:
        final, _ = await run_gap(server.url, tmp_path)
        messages = server.messages("realtime_audio.mixed")
    rate = 16000
    assert_accounted(final, rate)
    pcm = [base64.b64decode(m["data"]["chunk"]) for m in messages]
    assert sum(len(p) // 2 for p in pcm) == final["samples_out"]
    # timestamp_ms advances with the audio, through the gap: no jump, no repeat.
    t0, done = messages[0]["data"]["timestamp_ms"], 0
    for message, chunk in zip(messages, pcm, strict=True):
        assert abs(message["data"]["timestamp_ms"] - (t0 + done * 1000 / rate)) < 1
        done += len(chunk) // 2
    # The silence is silence, and the bot's voice is on both sides of it.
    loud = "".join("x" if any(chunk) else "." for chunk in pcm)
    turns = [run for run in loud.split(".") if run]
    assert [len(run) >= 0.9 * SPEAK_S / FRAME_S for run in turns] == [True, True], loud
    assert "." * round(0.95 * QUIET_S / FRAME_S) in loud.strip(".")


# -- twilio --------------------------------------------------------------------------------


async def test_twilio_counters_run_on_through_a_quiet_bot(tmp_path: Path) -> None:
    with trio.fail_after(40), TwilioServer() as server:
        final, marks = await run_gap(server.url, tmp_path, "--protocol", "twilio")
        media = server.events("media")
        violations = server.violations()
    assert violations == []
    assert_accounted(final, 8000)
    # Every 20 ms of the call is a media message: sequenceNumber, chunk and
    # timestamp count on through the gap as if the line had never paused.
    chunks = [int(m["media"]["chunk"]) for m in media]
    assert chunks == list(range(1, len(media) + 1))
    assert [int(m["media"]["timestamp"]) for m in media] == [20 * i for i in range(len(media))]
    sequence = [int(m["sequenceNumber"]) for m in media]
    assert sequence == list(range(sequence[0], sequence[0] + len(media)))
    call_ms = (marks["end"] - marks["start"]) * 1000
    assert len(media) * 20 >= 0.95 * call_ms
    assert len(server.inbound_mulaw()) >= final["samples_out"]


async def test_twilio_nothing_is_filled_for_a_bot_that_writes_silent_frames(
    tmp_path: Path,
) -> None:
    with trio.fail_after(40), TwilioServer() as server:
        async with open_bot_loop(server.url, tmp_path, *FILL_ON, "--protocol", "twilio") as loop:
            start = time.monotonic()
            await speak(loop.bot, SPEAK_S)
            await speak(loop.bot, QUIET_S, freq=0)  # a tone of 0 Hz: zeros
            await speak(loop.bot, SPEAK_S)
            call_ms = (time.monotonic() - start) * 1000
            sidecar = loop.sidecar
        media = server.events("media")
    final = sidecar.named("stats")[-1]
    # The bot kept the line's clock itself: nothing filled (but perhaps a moment at the stop).
    assert final["samples_filled"] <= 0.3 * 8000
    assert final["samples_out"] == final["samples_in"] // 6 + final["samples_filled"]
    assert len(media) * 20 >= 0.95 * call_ms


def loud_media_index(media: list[Json], after: int) -> int:
    """The first `media` from `after` on that carries the bot's voice."""
    for i in range(after, len(media)):
        mulaw = base64.b64decode(media[i]["media"]["payload"])
        if level_db(pcm16_from_ulaw(mulaw)) > -30:
            return i
    raise AssertionError("no loud media after the reply started")


@pytest.mark.parametrize("fill", ["on", "off"])
async def test_twilio_media_timestamps_time_a_reply_as_the_bot_heard_it(
    tmp_path: Path, fill: str
) -> None:
    """Twilio samples time what the caller heard of a reply by `media.timestamp`
    (the sample's truncate: the latest timestamp at the barge-in minus the one
    when the reply began). A bot quiet while the reply plays stops that clock
    unless the line keeps it."""
    with trio.fail_after(40), TwilioServer() as server:
        flags = ("--fill-silence", fill, "--protocol", "twilio")
        async with open_bot_loop(server.url, tmp_path, *flags) as loop:
            await speak(loop.bot, 0.5)
            await trio.sleep(0.5)
            # The agent answers: 3 s sent at once, as agents stream faster than real time.
            begun = int(server.events("media")[-1]["media"]["timestamp"])
            began_at = len(server.events("media"))
            server.send_pcm(tone(440, 3.0, rate=8000, level=0.3))
            await trio.sleep(1.2)
            barge = trio.current_time()
            await speak(loop.bot, 0.3)  # the caller speaks over it
            await trio.sleep(0.2)
            heard = audible_ms([(t, f) for t, f in tone_frames(loop.speaker, 440) if t <= barge])
        media = server.events("media")
    elapsed = int(media[loud_media_index(media, began_at)]["media"]["timestamp"]) - begun
    assert heard >= 900
    if fill == "on":
        assert abs(elapsed - heard) <= 200, (elapsed, heard)
    else:
        # Without the fill the clock stood still while the bot was quiet.
        assert elapsed < 100, (elapsed, heard)


# -- vonage --------------------------------------------------------------------------------


async def test_vonage_frames_every_20_ms_through_a_quiet_bot(tmp_path: Path) -> None:
    with trio.fail_after(40), VonageServer() as server:
        final, marks = await run_gap(server.url, tmp_path, "--protocol", "vonage")
        conn = server.current
        frames_at = [
            (at, m) for at, m in zip(conn.arrivals, conn.raw, strict=True) if isinstance(m, bytes)
        ]
        violations = server.violations()
    assert violations == []
    assert_accounted(final, 16000)
    assert all(len(m) == 640 for _, m in frames_at)
    # Through the gap (from the hold on): one frame per 20 ms, on average and
    # without holes; only the hold itself, once, is longer.
    gap = [at for at, _ in frames_at if marks["quiet"] + 0.2 <= at <= marks["resume"]]
    spacing = [b - a for a, b in itertools.pairwise(gap)]
    assert len(gap) >= 0.9 * (QUIET_S - 0.2) / FRAME_S
    assert abs(statistics.mean(spacing) - FRAME_S) < 0.002
    # (Bounds with room for a machine busy with other work: a late wake-up is
    # made up for at once, so the average above holds regardless.)
    assert max(spacing) < 0.15
    arrivals = [at for at, _ in frames_at]
    assert max(b - a for a, b in itertools.pairwise(arrivals)) < HOLD_MS / 1000 + 0.15
    assert len(frames_at) * 20 >= 0.95 * (marks["end"] - marks["start"]) * 1000


# -- OpenAI Realtime -----------------------------------------------------------------------


async def test_openai_server_vad_ends_the_turn_of_a_bot_that_goes_quiet(tmp_path: Path) -> None:
    # A VAD that needs 500 ms of silence to end a turn, as the API's server VAD does.
    config = RealtimeConfig(reply_ms=800, silence_ms=500)
    with trio.fail_after(40), RealtimeServer(config) as server:
        args = openai_args(server, tmp_path)
        async with open_bot_loop(server.url, tmp_path, *FILL_ON, *args) as loop:
            marks: dict[str, float] = {}
            await speak_quiet_speak(loop.bot, marks)
            # Quiet again after its second turn: that one is answered too.
            await trio.sleep(1.5)
            heard = tone_frames(loop.speaker, config.tone_hz)
            sidecar = loop.sidecar
        conn = server.current
        state = server.state(conn)
    assert conn.violations == []
    # Both of the bot's turns ended, both were answered, and the bot heard the answers.
    assert len(conn.sent_json("input_audio_buffer.speech_stopped")) == 2
    assert state.replies == 2
    assert len(heard) >= 2 * 0.5 / FRAME_S
    final = sidecar.named("stats")[-1]
    assert_accounted(final, 24000, tail_s=1.5)
    assert len(conn.audio) // 2 == final["samples_out"]


async def test_openai_without_fill_a_quiet_bot_never_ends_its_turn(tmp_path: Path) -> None:
    """The failure this fixes, shown on the same fake."""
    config = RealtimeConfig(reply_ms=800, silence_ms=500)
    with trio.fail_after(40), RealtimeServer(config) as server:
        args = openai_args(server, tmp_path)
        async with open_bot_loop(server.url, tmp_path, *args) as loop:
            await speak(loop.bot, SPEAK_S)
            await trio.sleep(QUIET_S)
        conn = server.current
        state = server.state(conn)
    assert conn.sent_json("input_audio_buffer.speech_stopped") == []
    assert state.replies == 0


# -- Deepgram Voice Agent ------------------------------------------------------------------


async def test_deepgram_hears_silence_not_keepalive_from_a_quiet_bot(tmp_path: Path) -> None:
    # Quiet past KeepAlive's 8 s: silence flows all along and no KeepAlive is sent.
    with trio.fail_after(60), AgentServer(AgentConfig(idle_timeout_s=10.0)) as server:
        args = deepgram_args(server)
        async with open_bot_loop(server.url, tmp_path, *FILL_ON, *args) as loop:
            await speak(loop.bot, SPEAK_S)
            conn = server.connections[0]
            before = len(conn.audio)
            await trio.sleep(9.0)
            flowed = len(conn.audio) - before
            await speak(loop.bot, SPEAK_S)
            await trio.sleep(0.3)
            sidecar = loop.sidecar
        state = server.state(conn)
    assert conn.violations == []
    assert state.keepalives == 0
    # 16 kHz linear16: nearly all of the 9 s arrived, as silence.
    assert flowed >= 2 * 16000 * 8.5
    assert len(server.connections) == 1
    final = sidecar.named("stats")[-1]
    assert final["samples_in"] == 2 * round(SPEAK_S / FRAME_S) * IN_RATE // 50
    resampled = final["samples_in"] // 3
    assert final["samples_out"] == resampled + final["samples_filled"] - uplink_dropped(final)
    assert len(conn.audio) // 2 == final["samples_out"]
    # The user's turn ended on the silence and the agent answered.
    assert state.replies >= 1


async def test_deepgram_keepalive_returns_with_the_fill_off(tmp_path: Path) -> None:
    with trio.fail_after(40), AgentServer(AgentConfig(idle_timeout_s=10.0)) as server:
        args = deepgram_args(server)
        async with open_bot_loop(server.url, tmp_path, *args) as loop:
            await speak(loop.bot, SPEAK_S)
            quiet_at = trio.current_time()
            conn = server.connections[0]
            state = server.state(conn)
            with trio.fail_after(10.0):
                while not state.keepalives:
                    await trio.sleep(0.05)
            waited = trio.current_time() - quiet_at
            assert loop.sidecar.named("stats")[-1]["samples_filled"] == 0
    # KeepAlive comes 8 s after the last audio sent (the sidecar's own timer).
    assert 7.5 <= waited <= 9.5
    assert conn.violations == []


async def test_mixed_stream_is_not_filled_before_the_bot_speaks(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path, *FILL_ON)).start(
                nursery
            )
            await sidecar.wait_event("connected")
            await trio.sleep(1.0)
            assert await sidecar.stop() == 0
    assert server.messages("realtime_audio.mixed") == []
    assert sidecar.named("stats")[-1]["samples_filled"] == 0
