"""The way down, end to end: bot_output at the server -> paced 48 kHz frames at the bot.

Real sidecar process, real `websockets` server, real Unix sockets. Timing
assertions are ratios with slack: other tests share the machine.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from e2e_peers import open_speaker, until_connected
from recording import RecordedLog
from support import (
    Json,
    SidecarProcess,
    Speaker,
    WsServer,
    bot_output,
    dominant_frequency,
    level_db,
    open_sidecar,
    play,
    samples,
    sidecar_args,
    tone,
    wait_until,
)

from sidecar import events, messages
from sidecar.config import Config, Endpoint
from sidecar.dialects.attendee import AttendeeSession
from sidecar.dialects.base import Control
from sidecar.dialects.openai_realtime import OpenAIRealtimeSession
from sidecar.downlink import SLICE_MS, WRITE_QUEUE_FRAMES, Downlink
from sidecar.gate import HOLD_S, PauseGate
from sidecar.link import LinkStatistics
from sidecar.playout import MAX_PENDING_MARKS, Tick
from sidecar.stats import stats_event
from sidecar.uplink import UplinkStatistics
from sidecar.voice import Voice

OUT_RATE = 48000
FRAME = OUT_RATE * 20 // 1000  # samples per 20 ms frame at the bot
PERIOD = 0.020


def send_tone(
    server: WsServer, rate: int, seconds: float, piece_ms: int = 100, freq: float = 1000
) -> int:
    """Send a tone as bot_output pieces, all at once; returns its sample count at 48 kHz."""
    pcm = tone(freq, seconds, rate)
    step = rate * piece_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        server.send(bot_output(pcm[i : i + step], rate))
    return len(pcm) // 2 * OUT_RATE // rate


def mark(name: str) -> Json:
    return {"trigger": "realtime_audio.mark", "data": {"name": name}}


CLEAR: Json = {"trigger": "realtime_audio.clear"}


def echoes(server: WsServer) -> list[tuple[str, str]]:
    return [
        (m["data"]["name"], m["data"]["status"]) for m in server.messages("realtime_audio.mark")
    ]


def assert_paced(speaker: Speaker, n_frames: int) -> None:
    """Frames came one per period: never a burst ahead of the real-time schedule."""
    arrivals = speaker.arrivals[:n_frames]
    assert len(arrivals) == n_frames
    span = arrivals[-1] - arrivals[0]
    assert span >= (n_frames - 1) * PERIOD * 0.9, f"{n_frames} frames in {span:.3f} s"
    # A reader that wakes late sees several frames at once; a sender that bursts
    # gets ahead of the schedule. Only the second is a failure.
    for i, at in enumerate(arrivals):
        assert at - arrivals[0] >= (i - 5) * PERIOD, f"frame {i} arrived ahead of real time"


async def connected_speaker(
    sidecar: SidecarProcess, nursery: trio.Nursery, tmp_path: Path
) -> Speaker:
    speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
    await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
    return speaker


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_bot_output_reaches_the_bot_at_48k_complete_and_paced(
    tmp_path: Path, rate: int
) -> None:
    seconds = 0.61  # not a whole number of frames: the last one is padded
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            expected = send_tone(server, rate, seconds)
            n_frames = math.ceil(expected / FRAME)
            await wait_until(lambda: len(speaker.audio_frames) >= n_frames, timeout=10)
            stats = await sidecar.stats(lambda e: e["samples_played"] >= n_frames * FRAME)
            # Nothing more trickles out afterwards.
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    assert expected == round(seconds * OUT_RATE)
    audio = speaker.audio_frames
    assert len(audio) == n_frames
    assert all(f.rate == OUT_RATE and f.samples == FRAME for f in audio)
    pcm = speaker.pcm
    # Only the padding of the final partial frame is silence.
    assert not samples(pcm[expected * 2 :]).any()
    body = pcm[: expected * 2]
    assert abs(dominant_frequency(body, OUT_RATE) - 1000) < 10
    # The resampler's held-back tail was flushed: the tone runs to the last sample.
    assert level_db(body[-FRAME:]) > -12
    assert level_db(body) == pytest.approx(level_db(tone(1000, seconds)), abs=0.5)
    assert_paced(speaker, n_frames)
    assert stats["frames_out"] == n_frames
    assert not {k for k in stats["dropped"] if k.startswith("downlink")}


async def test_server_faster_than_real_time_is_played_in_full_and_paced(tmp_path: Path) -> None:
    seconds = 3.0
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            expected = send_tone(server, 16000, seconds)
            # The server says where the utterance ends, so running dry there
            # is no underrun.
            server.send(mark("end"))
            stats = await sidecar.stats(
                lambda e: e["playout_depth_ms"] > 2000, timeout=5
            )  # it all queued: the cap is far away
            n_frames = expected // FRAME
            await wait_until(lambda: len(speaker.audio_frames) >= n_frames, timeout=10)
            stats = await sidecar.stats(lambda e: e["samples_played"] >= expected)
            nursery.cancel_scope.cancel()

    assert len(speaker.pcm) == expected * 2
    assert_paced(speaker, n_frames)
    assert stats["underruns"] == 0
    assert not stats["dropped"]


async def test_excess_beyond_max_playout_is_dropped_and_counted(tmp_path: Path) -> None:
    args = sidecar_args("", tmp_path, "--max-playout-ms", "400")
    with trio.fail_after(30), WsServer() as server:
        args[1] = server.url
        async with open_sidecar(args) as sidecar, trio.open_nursery() as nursery:
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            expected = send_tone(server, 16000, 2.0)
            # The playout can stand empty for a tick while the resampler still
            # holds the utterance's last samples (they are flushed on the next
            # one): a stats line from that moment is not the end yet.
            stats = await sidecar.stats(
                lambda e: (
                    e["playout_depth_ms"] == 0
                    and e["samples_played"] > 0
                    and e["bot_output_resampled"] >= expected
                )
            )
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    overflow = stats["dropped"]["downlink_overflow"]
    played = stats["samples_played"]
    assert stats["bot_output_resampled"] == expected
    # The cap keeps the start of the utterance; what played plus what was refused
    # is everything the server sent (the played side may include one padded frame).
    assert expected <= played + overflow < expected + FRAME
    assert 0.4 * OUT_RATE <= played <= 0.6 * OUT_RATE
    assert len(speaker.pcm) // 2 == played


async def test_rate_change_mid_stream_keeps_every_sample(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            first = send_tone(server, 16000, 0.5, freq=500)
            second = send_tone(server, 24000, 0.5, freq=1500)
            server.send(mark("end"))
            await wait_until(lambda: ("end", "played") in echoes(server), timeout=10)
            nursery.cancel_scope.cancel()

    pcm = speaker.pcm
    assert first + second == OUT_RATE
    assert len(pcm) // 2 == OUT_RATE  # 50 whole frames: no sample lost or padded at the seam
    assert abs(dominant_frequency(pcm[: 20000 * 2], OUT_RATE) - 500) < 10
    assert abs(dominant_frequency(pcm[28000 * 2 :], OUT_RATE) - 1500) < 10


async def test_no_bot_on_audio_out_counts_output_as_dropped(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            expected = send_tone(server, 16000, 0.51)
            warning = await sidecar.wait_event("warning", lambda e: "audio-out" in e["message"])
            stats = await sidecar.stats(
                lambda e: e["dropped"].get("downlink_no_bot", 0) >= expected
            )
            assert stats["samples_played"] == 0
            # The audio, not the silence that padded its last frame.
            assert stats["dropped"]["downlink_no_bot"] == expected
            assert stats["bot_output_resampled"] == expected
            # Once, not once per frame.
            assert len([e for e in sidecar.named("warning") if e == warning]) == 1


async def test_mark_is_echoed_only_after_its_audio_reached_the_bot(tmp_path: Path) -> None:
    received: dict[str, float] = {}

    def on_message(server: WsServer, conn: Any, message: Json) -> None:
        if message["trigger"] == "realtime_audio.mark":
            received.setdefault(message["data"]["name"], time.perf_counter())

    with trio.fail_after(30), WsServer(on_message=on_message) as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            # trio's clock is perf_counter plus a fixed offset.
            offset = trio.current_time() - time.perf_counter()
            expected = send_tone(server, 16000, 1.0)
            server.send(mark("one_second"))
            event = await sidecar.wait_event("mark", lambda e: e["name"] == "one_second")
            await wait_until(lambda: "one_second" in received)
            nursery.cancel_scope.cancel()

    assert event["status"] == "played"
    assert echoes(server) == [("one_second", "played")]
    n_frames = expected // FRAME
    assert len(speaker.audio_frames) == n_frames
    last_frame_at = speaker.arrivals[n_frames - 1]
    echoed_at = received["one_second"] + offset
    assert echoed_at >= last_frame_at - 0.005, "mark echoed before its audio was written"
    # ... and not much later either: playing and echoing go together.
    assert echoed_at - last_frame_at < 0.5
    assert echoed_at - speaker.arrivals[0] >= (n_frames - 1) * PERIOD * 0.9


async def test_clear_stops_playback_and_answers_pending_marks(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            # A mark on an empty queue has nothing to wait for.
            server.send(mark("before"))
            await sidecar.wait_event("mark", lambda e: e["name"] == "before")
            send_tone(server, 16000, 2.0)
            server.send(mark("pending_1"))
            send_tone(server, 16000, 0.5)
            server.send(mark("pending_2"))
            await wait_until(lambda: len(speaker.audio_frames) >= 15)
            server.send(CLEAR)
            at_clear = len(speaker.audio_frames)
            await sidecar.wait_event("mark", lambda e: e["name"] == "pending_2")
            server.send(mark("after"))
            await sidecar.wait_event("mark", lambda e: e["name"] == "after")
            await trio.sleep(0.3)
            after_clear = len(speaker.audio_frames) - at_clear
            stats = await sidecar.stats(lambda e: e["playout_depth_ms"] == 0)
            nursery.cancel_scope.cancel()

    assert after_clear <= 3, f"{after_clear} frames played after the clear"
    assert echoes(server) == [
        ("before", "played"),
        ("pending_1", "cleared"),
        ("pending_2", "cleared"),
        ("after", "played"),
    ]
    statuses = {e["name"]: e["status"] for e in sidecar.named("mark")}
    assert statuses == {
        "before": "played",
        "pending_1": "cleared",
        "pending_2": "cleared",
        "after": "played",
    }
    assert stats["dropped"]["downlink_cleared"] >= OUT_RATE


async def test_audio_after_clear_plays_again(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            send_tone(server, 16000, 1.0, freq=500)
            await wait_until(lambda: len(speaker.audio_frames) >= 5)
            server.send(CLEAR)
            await trio.sleep(0.2)
            before = len(speaker.audio_frames)
            expected = send_tone(server, 16000, 0.4, freq=2000)
            server.send(mark("again"))
            await sidecar.wait_event("mark", lambda e: e["name"] == "again")
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    after = speaker.audio_frames[before:]
    assert len(after) == expected // FRAME
    pcm = b"".join(f.pcm for f in after)
    assert abs(dominant_frequency(pcm, OUT_RATE) - 2000) < 10


async def test_a_loud_meeting_pauses_bot_output_which_then_plays_in_full(
    tmp_path: Path,
) -> None:
    spoken_s, seconds = 0.4, 0.5
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--pause-threshold", "2000")
        async with open_sidecar(args) as sidecar, trio.open_nursery() as nursery:
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            # A quiet room (RMS ~1160) pauses nothing; then somebody speaks (RMS ~11600).
            await play(bot, tone(300, 0.2, level=0.05))
            await play(bot, tone(300, spoken_s, level=0.5))
            stopped_speaking = trio.current_time()
            expected = send_tone(server, 16000, seconds)
            n_frames = math.ceil(expected / FRAME)
            await wait_until(lambda: len(speaker.audio_frames) >= n_frames, timeout=10)
            stats = await sidecar.stats(lambda e: e["samples_played"] >= n_frames * FRAME)
            await bot.aclose()
            nursery.cancel_scope.cancel()
    # Nothing was played until the room had been quiet for the hold (0.8 s).
    assert speaker.arrivals[0] - stopped_speaking >= HOLD_S - 0.05
    # Then all of it, paced, nothing dropped.
    audio = speaker.audio_frames
    assert len(audio) == n_frames
    assert level_db(speaker.pcm[: expected * 2]) == pytest.approx(
        level_db(tone(1000, seconds)), abs=0.5
    )
    assert_paced(speaker, n_frames)
    assert not {k for k in stats["dropped"] if k.startswith("downlink")}
    assert stats["pauses"] == 1
    assert stats["paused_ms"] == pytest.approx((spoken_s + HOLD_S) * 1000, abs=60)


async def test_audio_out_on_an_inherited_fd(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs, trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path)
        at = args.index("--audio-out")
        args[at : at + 2] = ["--audio-out-fd", str(theirs.fileno())]
        async with (
            open_sidecar(args, pass_fds=(theirs.fileno(),)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            theirs.close()
            assert sidecar.named("ready")[0]["audio_out"] == f"fd:{args[at + 1]}"
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            ours.setblocking(False)
            speaker = Speaker(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
            nursery.start_soon(speaker.serve)
            await until_connected(sidecar, server)
            expected = send_tone(server, 24000, 0.4)
            await wait_until(lambda: len(speaker.audio_frames) >= expected // FRAME)
            assert await sidecar.stop() == 0
            await wait_until(lambda: speaker.eof)
            nursery.cancel_scope.cancel()

    assert len(speaker.pcm) // 2 == expected
    assert abs(dominant_frequency(speaker.pcm, OUT_RATE) - 1000) < 10


# -- the Downlink in-process: deterministic clock, a bot that stops reading -------------


def in_process_downlink(
    gate: PauseGate | None = None, log: events.EventLog | None = None
) -> tuple[Downlink, list[messages.SidecarMessage], io.BytesIO]:
    """A Downlink speaking Attendee's dialect; its replies decoded back into messages."""
    config = Config(
        url="ws://127.0.0.1:9/a",
        audio_in=Endpoint(path=Path("in.sock")),
        audio_out=Endpoint(path=Path("out.sock")),
        bot_id="bot_test",
    )
    replies: list[messages.SidecarMessage] = []

    def reply(item: Control) -> None:
        for wire in ATTENDEE.wire(item):
            decoded = messages.decode_sidecar_message(wire)
            assert not isinstance(decoded, messages.MessageError)
            replies.append(decoded)

    out = io.BytesIO()
    downlink = Downlink(config, log or events.EventLog(out), reply, gate)
    return downlink, replies, out


# Attendee's sessions hold no state beyond these two settings: one serves every test.
ATTENDEE = AttendeeSession("bot_test", messages.MAX_MESSAGE_BYTES)


async def server_says(downlink: Downlink, message: Json) -> None:
    for incoming in ATTENDEE.receive(json.dumps(message)):
        await downlink.on_incoming(incoming)


def mark_echoes(replies: list[messages.SidecarMessage]) -> list[tuple[str, str]]:
    return [(r.data.name, r.data.status) for r in replies if isinstance(r, messages.MarkEcho)]


async def test_the_clock_sleeps_while_there_is_nothing_to_play(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, _, _ = in_process_downlink()
    ticks = 0
    tick = downlink.voice.tick

    def counting_tick() -> Tick:
        nonlocal ticks
        ticks += 1
        return tick()

    downlink.voice.tick = counting_tick  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        await trio.sleep(10)
        assert ticks == 0
        await server_says(downlink, bot_output(tone(1000, 0.2, 16000), 16000))
        await trio.sleep(10)
        # Ten frames, the jitter wait before them, one tick to see the end and
        # the 100 ms (5 ticks) in which resumed audio would count as a gap.
        assert 15 <= ticks <= 20
        settled = ticks
        await trio.sleep(10)
        assert ticks == settled
        nursery.cancel_scope.cancel()
    assert downlink.statistics().dropped_frames["no_bot"] == 10


async def test_the_clock_holds_playback_while_the_gate_is_shut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate(1000)
    downlink, replies, _ = in_process_downlink(gate)

    def played() -> int:  # no bot: what played counts as no_bot
        return downlink.statistics().dropped_frames["no_bot"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        loud = tone(300, 0.02, level=0.5)
        assert gate.observe(loud, trio.current_time())
        await server_says(downlink, bot_output(tone(1000, 0.2, 16000), 16000))
        await server_says(downlink, mark("end"))
        await trio.sleep(HOLD_S - 0.01)
        assert played() == 0
        assert mark_echoes(replies) == []
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    # All of it, after the pause, and the mark once its audio had played.
    assert played() == 10
    assert downlink.statistics().dropped_samples["no_bot"] == round(0.2 * OUT_RATE)
    assert mark_echoes(replies) == [("end", "played")]


async def test_a_stalled_clock_restarts_its_grid_and_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, _, _ = in_process_downlink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        await server_says(downlink, bot_output(tone(1000, 2.0, 16000), 16000))
        await trio.sleep(0.5)
        # Jitter of up to three frames is caught up on the same grid.
        autojump_clock.jump(0.05)
        await trio.sleep(0.5)
        assert downlink.statistics().clock_restarts == 0
        # A stall of the whole process (time passes, nobody runs) is not.
        autojump_clock.jump(0.2)
        await trio.sleep(0.5)
        assert downlink.statistics().clock_restarts == 1
        frames_before = downlink.statistics().dropped_frames["no_bot"]
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    # Nothing was skipped: every frame of the 2 s still played (to nobody), late.
    assert downlink.statistics().dropped_frames["no_bot"] > frames_before
    assert downlink.statistics().dropped_samples["no_bot"] == 2 * 48000


async def test_a_long_message_is_resampled_in_slices_the_clock_can_run_between() -> None:
    downlink, _, _ = in_process_downlink()
    sliced: list[int] = []
    audio = downlink.voice.audio

    def recording(pcm: bytes, rate: int) -> int:
        sliced.append(len(pcm) // 2)
        return audio(pcm, rate)

    downlink.voice.audio = recording  # type: ignore[method-assign]
    seen: list[int] = []

    async def clock_stand_in() -> None:
        while True:
            seen.append(len(sliced))
            await trio.lowlevel.checkpoint()

    pcm_message = bot_output(tone(440, 1.0, 16000), 16000)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(clock_stand_in)
            await server_says(downlink, pcm_message)
            nursery.cancel_scope.cancel()
    step = 16000 * SLICE_MS // 1000
    assert sliced == [step] * (16000 // step)
    # Another task ran between slices: at most two went by unseen (the order
    # of tasks within one scheduler batch is trio's choice).
    marks = [0, *seen, len(sliced)]
    assert max(b - a for a, b in itertools.pairwise(marks)) <= 2
    # Slicing changes nothing in what is heard.
    whole = Voice()
    whole.audio(tone(440, 1.0, 16000), 16000)
    assert downlink.voice.playout.statistics() == whole.playout.statistics()


async def test_audio_of_a_reply_already_cut_is_counted_as_cleared() -> None:
    # An OpenAI reply's deltas still in flight at a barge-in are never played:
    # they must still add up in stats, with every other dialect's audio.
    downlink, _, _ = in_process_downlink()
    agent = OpenAIRealtimeSession({})
    piece = base64.b64encode(tone(440, 0.1, 24000)).decode()
    delta = {"type": "response.output_audio.delta", "item_id": "item_a", "content_index": 0}
    wires = [
        json.dumps({**delta, "delta": piece}),
        json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1}),
        json.dumps({**delta, "delta": piece}),
    ]
    for wire in wires:
        for incoming in agent.receive(wire):
            await downlink.on_incoming(incoming)
    down = downlink.statistics()
    stats = stats_event(
        [LinkStatistics()], UplinkStatistics(), down, downlink.voice.statistics(), [], None, 0
    )
    assert stats.bot_output_samples == 2 * 2400
    assert down.cut_samples == 2400 and down.cut_resampled == 4800
    # Nothing played yet (no clock ran): all of it was dropped by the clear.
    assert stats.samples_played == 0 and stats.playout_depth_ms == 0
    downlink_drops = sum(n for k, n in stats.dropped.items() if k.startswith("downlink_"))
    assert stats.bot_output_resampled == downlink_drops == stats.dropped["downlink_cleared"]
    assert 2 * 4800 - stats.bot_output_resampled < 48000 * 0.01  # the filter's hold-back


async def test_a_mark_beyond_the_pending_limit_is_refused_answered_and_counted() -> None:
    downlink, replies, _ = in_process_downlink()
    await server_says(downlink, bot_output(tone(440, 0.1, 16000), 16000))
    for n in range(MAX_PENDING_MARKS + 1):
        await server_says(downlink, mark(f"m{n}"))
    # Held: none answered yet, but the one beyond the limit, at once.
    assert mark_echoes(replies) == [(f"m{MAX_PENDING_MARKS}", "cleared")]
    errors = [r.data for r in replies if isinstance(r, messages.Error)]
    assert [e.code for e in errors] == [messages.ErrorCode.TOO_MANY_MARKS]
    assert "8192 marks" in errors[0].message
    stats = stats_event(
        [LinkStatistics()],
        UplinkStatistics(),
        downlink.statistics(),
        downlink.voice.statistics(),
        [],
        None,
        0,
    )
    assert stats.marks_refused == 1 and stats.invalid_messages == 1


async def test_clear_also_drops_frames_queued_for_a_slow_bot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, replies, _ = in_process_downlink()
    ours, theirs = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, ours)
        await trio.sleep(0.1)
        await server_says(downlink, bot_output(tone(1000, 1.0, 24000), 24000))
        await server_says(downlink, mark("end"))
        # The bot reads three frames and then nothing: frames pile up in the
        # writer's queue (and beyond it they are dropped).
        for _ in range(3):
            await theirs.receive_some(FRAME * 2 + 3)
        await trio.sleep(0.3)
        stats = downlink.statistics()
        assert stats.dropped_frames["bot_not_reading"] > 0
        assert len(downlink._queue) == WRITE_QUEUE_FRAMES
        await server_says(downlink, CLEAR)
        assert not downlink._queue
        assert downlink.statistics().dropped_frames["cleared"] == WRITE_QUEUE_FRAMES
        assert mark_echoes(replies) == [("end", "cleared")]
        # What the bot gets now is at most the frame that was being written.
        received = b""
        with trio.move_on_after(0.5):
            while True:
                received += await theirs.receive_some(65536)
        assert len(received) <= FRAME * 2 + 3
        nursery.cancel_scope.cancel()


async def test_a_mark_is_echoed_after_its_frame_was_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, replies, _ = in_process_downlink()
    ours, theirs = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, ours)
        await trio.sleep(0.1)
        await server_says(downlink, bot_output(tone(1000, 0.1, 24000), 24000))
        await server_says(downlink, mark("m"))
        got = 0
        while got < 5 * (FRAME * 2 + 3):
            # A slow bot: the frames wait in the writer's queue meanwhile, and
            # the echo waits until the bot has taken every frame before it.
            await trio.sleep(0.1)
            assert mark_echoes(replies) == []
            got += len(await theirs.receive_some(65536))
        await trio.sleep(0.01)
        assert mark_echoes(replies) == [("m", "played")]
        nursery.cancel_scope.cancel()


def recorded_downlink() -> tuple[Downlink, list[messages.SidecarMessage], RecordedLog]:
    log = RecordedLog()
    downlink, replies, _ = in_process_downlink(log=log)
    return downlink, replies, log


def bot_socketpair(sndbuf: int | None = None) -> tuple[trio.SocketStream, trio.socket.SocketType]:
    """(the sidecar's end as a stream, the bot's end). A small send buffer fills
    after a couple of frames, so a bot that stops reading needs no real time."""
    ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return trio.SocketStream(ours), theirs


def out_disconnects(log: RecordedLog) -> list[str]:
    return [e.reason for e in log.named(events.BotDisconnected) if e.socket == "out"]


async def test_a_bot_that_stops_reading_and_then_leaves_is_counted_not_fatal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, replies, log = recorded_downlink()
    stream, bot = bot_socketpair(sndbuf=4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        ended = trio.Event()

        async def serve_one() -> None:
            await downlink.serve_connection(stream)
            ended.set()

        nursery.start_soon(serve_one)
        await trio.sleep(0.1)
        await server_says(downlink, bot_output(tone(1000, 2.0, 24000), 24000))
        await server_says(downlink, mark("end"))
        # The bot never reads: the socket fills, then the writer's queue.
        await trio.sleep(0.5)
        assert downlink.statistics().dropped_frames["bot_not_reading"] > 0
        assert len(downlink._queue) == WRITE_QUEUE_FRAMES
        bot.close()
        with trio.fail_after(5):
            await ended.wait()
        # What was queued for it is counted; the frame being written too.
        stats = downlink.statistics()
        assert stats.dropped_frames["bot_disconnected"] == WRITE_QUEUE_FRAMES + 1
        assert out_disconnects(log) == ["bot closed the connection"]
        # The clock goes on without it, and every sample is accounted for.
        await trio.sleep(3)
        assert mark_echoes(replies) == [("end", "played")]
        stats = downlink.statistics()
        accounted = stats.samples_written + sum(stats.dropped_samples.values())
        assert accounted == round(2.0 * OUT_RATE)
        # The next bot is served.
        second, bot2 = bot_socketpair()
        nursery.start_soon(downlink.serve_connection, second)
        await trio.sleep(0.1)
        await server_says(downlink, bot_output(tone(1000, 0.2, 24000), 24000))
        got = b""
        with trio.fail_after(5):
            while len(got) < 10 * (FRAME * 2 + 3):
                got += await bot2.recv(65536)
        nursery.cancel_scope.cancel()
    bot2.close()


async def test_a_bot_that_stops_reading_and_leaves_does_not_stop_the_sidecar(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "out.sock")
    with trio.fail_after(60), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            with trio.fail_after(5):
                stuck = await trio.open_unix_socket(path)
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            # Far more than the socket holds (a few seconds of 48 kHz frames).
            expected = send_tone(server, 16000, 8.0)
            server.send(mark("end"))
            await sidecar.stats(
                lambda e: e["dropped"].get("downlink_bot_not_reading", 0) > 0, timeout=20
            )
            await stuck.aclose()
            gone = await sidecar.wait_event("bot_disconnected", lambda e: e["socket"] == "out")
            assert gone["reason"] == "bot closed the connection"
            # The frames that were waiting for it are counted (and the process lives on).
            await sidecar.stats(lambda e: e["dropped"].get("downlink_bot_disconnected", 0) > 0)
            await all_accounted_and_the_next_bot_served(sidecar, server, path, expected)
            assert await sidecar.stop() == 0


async def test_a_bot_that_shuts_its_reading_side_mid_stream_is_let_go(tmp_path: Path) -> None:
    path = str(tmp_path / "out.sock")
    with trio.fail_after(60), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            async with trio.open_nursery() as nursery:
                speaker = await open_speaker(nursery, path)
                await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
                expected = send_tone(server, 16000, 2.0)
                server.send(mark("end"))
                await wait_until(lambda: len(speaker.audio_frames) >= 10)
                # The next frame the sidecar writes fails (EPIPE) while its
                # reader still sees an open connection.
                assert isinstance(speaker.stream, trio.SocketStream)
                speaker.stream.socket.shutdown(socket.SHUT_RD)
                gone = await sidecar.wait_event("bot_disconnected", lambda e: e["socket"] == "out")
                assert gone["reason"].startswith("connection broken")
                nursery.cancel_scope.cancel()
            await all_accounted_and_the_next_bot_served(sidecar, server, path, expected)
            assert await sidecar.stop() == 0


async def all_accounted_and_the_next_bot_served(
    sidecar: SidecarProcess, server: WsServer, path: str, expected: int
) -> None:
    """After a bot left: its mark answered, every sample played or counted, and
    the next bot served as if nothing had happened."""
    await wait_until(lambda: ("end", "played") in echoes(server), timeout=15)
    stats = await sidecar.stats(lambda e: e["playout_depth_ms"] == 0)
    downlink_drops = sum(n for k, n in stats["dropped"].items() if k.startswith("downlink"))
    assert stats["samples_played"] + downlink_drops == expected
    async with trio.open_nursery() as nursery:
        speaker = await open_speaker(nursery, path)
        await nth_out_connected(sidecar, 2)
        again = send_tone(server, 16000, 0.4)
        await wait_until(lambda: len(speaker.audio_frames) >= again // FRAME)
        nursery.cancel_scope.cancel()


async def nth_out_connected(sidecar: SidecarProcess, n: int) -> None:
    await wait_until(
        lambda: len([e for e in sidecar.named("bot_connected") if e["socket"] == "out"]) >= n
    )


async def test_stopping_says_so_to_the_bot_on_audio_out(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await connected_speaker(sidecar, nursery, tmp_path)
            assert await sidecar.stop() == 0
            await wait_until(lambda: speaker.eof)
            nursery.cancel_scope.cancel()
    gone = [e for e in sidecar.named("bot_disconnected") if e["socket"] == "out"]
    assert [e["reason"] for e in gone] == ["sidecar stopping"]


async def test_cancelling_the_downlink_says_sidecar_stopping() -> None:
    downlink, _, log = recorded_downlink()
    stream, bot = bot_socketpair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(downlink.serve_connection, stream)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    bot.close()
    assert out_disconnects(log) == ["sidecar stopping"]
