"""The way up, end to end: a bot on audio-in -> the sidecar process -> a real
websocket server (the `websockets` package, not our client library)."""

from __future__ import annotations

import random
import socket
import threading
import uuid
from pathlib import Path

import pytest
import trio
from e2e_bots import (
    MIXED,
    audio_of,
    check_audio_messages,
    error_codes,
    near,
    nth_event,
    open_bot,
    play_tone,
    read_until_closed,
    stats_where,
    until_closed,
    wall_ms,
)
from support import (
    Connection,
    Json,
    WsServer,
    frame_stream,
    open_sidecar,
    play,
    sidecar_args,
    tone,
    wait_until,
)

from sidecar import frames

SECONDS = 0.6


@pytest.mark.parametrize("ending", ["sigterm", "terminate"])
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_tone_reaches_the_server_complete_and_in_order(
    tmp_path: Path, rate: int, ending: str
) -> None:
    with trio.fail_after(40), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--sample-rate", str(rate))
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            bot = await open_bot(tmp_path / "in.sock")
            started = wall_ms()
            await play_tone(bot, 1000, SECONDS)
            if ending == "terminate":
                await bot.send_all(frames.encode_terminate())
                # The sidecar flushes the stream and hangs up, with no error.
                assert await read_until_closed(bot) == []
                event = await sidecar.wait_event("bot_disconnected")
                assert event["reason"] == "bot sent terminate"
                # Everything arrives without stopping the sidecar.
                await wait_until(lambda: len(server.audio()) >= 2 * round(SECONDS * rate))
            else:
                await sidecar.stats(lambda e: e["samples_in"] >= round(SECONDS * 48000))
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert len(server.connections) == 1
    assert server.connections[0].close_code == 1000
    pcm = check_audio_messages(server.messages(MIXED), rate=rate, start_ms=started)
    assert len(pcm) == 2 * round(SECONDS * rate)
    assert near(1000, pcm, rate)
    assert server.messages() == server.messages(MIXED)


async def test_32khz_bot(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            bot = await open_bot(tmp_path / "in.sock")
            await play(bot, tone(1000, SECONDS, 32000), 32000)
            await sidecar.stats(lambda e: e["samples_in"] >= round(SECONDS * 32000))
            assert await sidecar.stop() == 0
            await until_closed(server)
    pcm = check_audio_messages(server.messages(MIXED), rate=16000)
    assert len(pcm) == 2 * round(SECONDS * 16000)
    assert near(1000, pcm, 16000)


async def test_rate_change_mid_stream(tmp_path: Path) -> None:
    rate = 24000
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--sample-rate", str(rate))
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            bot = await open_bot(tmp_path / "in.sock")
            await play(bot, tone(1000, 0.5, 48000), 48000)
            await play(bot, tone(1500, 0.5, 32000), 32000)
            await bot.send_all(frames.encode_terminate())
            await wait_until(lambda: len(server.audio()) >= 2 * rate)
            assert await sidecar.stop() == 0
            await until_closed(server)
    # One continuous timeline across the switch, and each rate's run complete.
    pcm = check_audio_messages(server.messages(MIXED), rate=rate)
    assert len(pcm) == 2 * rate
    half = rate // 2
    # Skip the few ms around the switch, where the two tones meet.
    assert near(1000, pcm[: 2 * (half - 480)], rate)
    assert near(1500, pcm[2 * (half + 480) :], rate)


async def test_bot_reconnects_and_the_stream_continues(tmp_path: Path) -> None:
    rate = 16000
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            first = await open_bot(tmp_path / "in.sock")
            # Half a chunk more than 0.5 s: the last 10 ms wait in the chunker.
            await play_tone(first, 1000, 0.51)
            await first.aclose()
            await sidecar.wait_event("bot_disconnected")
            # What the first connection said arrives before the bot returns:
            # all of it but the resampler's few ms of look-ahead.
            await wait_until(lambda: len(server.audio()) >= 2 * (8160 - 64))
            second = await open_bot(tmp_path / "in.sock")
            await play_tone(second, 1500, 0.5)
            await sidecar.stats(lambda e: e["samples_in"] >= 48480)
            assert len(sidecar.named("bot_connected")) == 2
            assert await sidecar.stop() == 0
            await until_closed(server)
    messages = server.messages(MIXED)
    # One stream: the pause while the bot was away is the only jump.
    pcm = check_audio_messages(messages, rate=rate, max_gaps=1)
    assert len(pcm) == 2 * 16160
    assert near(1000, pcm[: 2 * 7600], rate)
    assert near(1500, pcm[2 * 8600 :], rate)


async def test_second_mixed_connection_is_busy(tmp_path: Path) -> None:
    rate = 16000
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            first = await open_bot(tmp_path / "in.sock")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(play_tone, first, 1000, 1.0)
                await sidecar.wait_event("bot_connected")
                second = await open_bot(tmp_path / "in.sock")
                await second.send_all(frames.encode_audio(tone(300, 0.02), 48000))
                replies = await read_until_closed(second)
                assert error_codes(replies) == [frames.ErrorCode.BUSY]
                event = await sidecar.wait_event("invalid_frame")
                assert event["code"] == frames.ErrorCode.BUSY
                assert event["socket"] == "in"
            await first.send_all(frames.encode_terminate())
            await wait_until(lambda: len(server.audio()) >= 2 * rate)
            assert len(sidecar.named("bot_connected")) == 1
            assert await sidecar.stop() == 0
            await until_closed(server)
    pcm = check_audio_messages(server.messages(MIXED), rate=rate)
    assert len(pcm) == 2 * rate
    assert near(1000, pcm, rate)


def _odd_audio() -> bytes:
    return bytes([frames.Kind.AUDIO_48K, 0, 3, 1, 2, 3])


INVALID = [
    ("odd audio length", _odd_audio(), False, frames.ErrorCode.BAD_LENGTH),
    ("unknown kind", bytes([0x42, 0, 0]), False, frames.ErrorCode.UNKNOWN_KIND),
    ("uuid not first", frames.encode_uuid(uuid.uuid4()), False, frames.ErrorCode.UNEXPECTED_FRAME),
    ("bad dtmf", bytes([frames.Kind.DTMF, 0, 1]) + b"x", False, frames.ErrorCode.BAD_PAYLOAD),
    (
        "truncated at eof",
        frames.encode_audio(bytes(960), 48000)[:500],
        True,
        frames.ErrorCode.TRUNCATED,
    ),
]


async def test_invalid_frames_close_the_connection_not_the_process(tmp_path: Path) -> None:
    rate = 16000
    with trio.fail_after(40), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            for n, (what, data, half_close, code) in enumerate(INVALID, start=1):
                bot = await open_bot(tmp_path / "in.sock")
                # Good audio first: the error must not cost what came before it.
                await bot.send_all(frames.encode_audio(tone(1000, 0.1), 48000) + data)
                if half_close:
                    await bot.send_eof()
                replies = await read_until_closed(bot)
                assert error_codes(replies) == [code], what
                errors = [e for e in replies if isinstance(e, frames.ErrorFrame)]
                assert errors[0].text, f"{what}: the error frame explains itself"
                event = await nth_event(sidecar, "invalid_frame", n)
                assert event["code"] == code, what
                assert event["socket"] == "in"
                assert event["message"] == errors[0].text
                await stats_where(sidecar, "invalid_frames", n)
                gone = await nth_event(sidecar, "bot_disconnected", n)
                assert gone["reason"] == event["message"]
                await bot.aclose()
            assert sidecar.process is not None and sidecar.process.returncode is None
            # A new connection works as if nothing had happened.
            bot = await open_bot(tmp_path / "in.sock")
            await play_tone(bot, 1000, 0.3)
            await bot.send_all(frames.encode_terminate())
            expected = len(INVALID) * rate // 10 + 3 * rate // 10
            await wait_until(lambda: len(server.audio()) >= 2 * expected)
            stats = await sidecar.stats(lambda e: e["samples_in"] >= 48000 * 8 // 10)
            assert stats["invalid_frames"] == len(INVALID)
            assert await sidecar.stop() == 0
            await until_closed(server)
    # The good audio before each bad frame was kept (the stream is one timeline
    # with a pause after each broken connection).
    pcm = check_audio_messages(server.messages(MIXED), rate=rate, max_gaps=len(INVALID))
    assert len(pcm) == 2 * expected
    assert near(1000, pcm, rate, tolerance=8)


@pytest.mark.parametrize(("in_rate", "rate"), [(16000, 24000), (44100, 8000)])
async def test_raw_input(tmp_path: Path, in_rate: int, rate: int) -> None:
    seconds = 0.8
    pcm_in = tone(1000, seconds, in_rate)
    rng = random.Random(in_rate)
    with trio.fail_after(40), WsServer() as server:
        args = sidecar_args(
            server.url,
            tmp_path,
            "--input-format",
            "raw",
            "--input-rate",
            str(in_rate),
            "--sample-rate",
            str(rate),
        )
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            bot = await open_bot(tmp_path / "in.sock")
            start = trio.current_time()
            sent = 0
            while sent < len(pcm_in):
                # Odd sizes split samples across writes; up to ~90 ms per write.
                size = rng.choice([1, 3, 7, 333, 1001, 2 * rng.randint(1, 4000) + 1])
                piece = pcm_in[sent : sent + size]
                await trio.sleep_until(start + sent / 2 / in_rate)
                await bot.send_all(piece)
                sent += len(piece)
            await sidecar.stats(lambda e: e["bytes_in"] >= len(pcm_in))
            assert await sidecar.stop() == 0
            await until_closed(server)
    messages = server.messages(MIXED)
    pcm = check_audio_messages(messages, rate=rate)
    assert len(pcm) == 2 * round(seconds * rate)
    assert near(1000, pcm, rate)
    # However big the writes, messages stay about --chunk-ms (20 ms) long.
    sizes = [len(audio_of([m])) // 2 for m in messages]
    assert max(sizes[:-1]) <= rate * 21 // 1000, sizes


async def test_raw_input_ending_in_half_a_sample(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--input-format", "raw")
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            bot = await open_bot(tmp_path / "in.sock")
            await bot.send_all(tone(1000, 0.2) + b"\x01")
            await bot.send_eof()
            replies = await read_until_closed(bot)
            assert error_codes(replies) == [frames.ErrorCode.BAD_LENGTH]
            event = await sidecar.wait_event("invalid_frame")
            assert event["code"] == frames.ErrorCode.BAD_LENGTH
            await sidecar.stats(lambda e: e["invalid_frames"] == 1)
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert len(server.audio()) == 2 * 3200


async def test_fd_mode(tmp_path: Path) -> None:
    rate = 16000
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with trio.fail_after(30), WsServer() as server, ours:
        args = [
            "--url",
            server.url,
            "--audio-in-fd",
            str(theirs.fileno()),
            "--audio-out",
            str(tmp_path / "out.sock"),
            "--bot-id",
            "bot_fd",
            "--stats-interval",
            "0.2",
            "--fill-silence",
            "off",
        ]
        async with open_sidecar(args, pass_fds=(theirs.fileno(),)) as sidecar:
            theirs.close()
            assert sidecar.named("ready")[0]["audio_in"].startswith("fd:")
            await sidecar.wait_event("connected")
            bot = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            await play_tone(bot, 1000, SECONDS)
            await sidecar.stats(lambda e: e["samples_in"] >= round(SECONDS * 48000))
            # The bot hanging up its end is no reason for the sidecar to exit.
            await bot.send_eof()
            await sidecar.wait_event("bot_disconnected")
            await trio.sleep(0.3)
            assert sidecar.process is not None and sidecar.process.returncode is None
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert not (tmp_path / "in.sock").exists()
    pcm = check_audio_messages(server.messages(MIXED), rate=rate, bot_id="bot_fd")
    assert len(pcm) == 2 * round(SECONDS * rate)
    assert near(1000, pcm, rate)


class _Stall:
    """A server that stops reading until released: `websockets` stops draining
    the TCP socket once its small queue is full, so the sidecar's sends block."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, server: WsServer, conn: Connection, message: Json) -> None:
        self.release.wait(timeout=30)


async def test_slow_server_never_stalls_the_bot(tmp_path: Path) -> None:
    rate = 24000
    seconds = 8
    speed = 4  # the bot writes 4x faster than real time: a server that keeps up never drops
    stall = _Stall()
    try:
        with trio.fail_after(40), WsServer(on_message=stall) as server:
            args = sidecar_args(server.url, tmp_path, "--sample-rate", str(rate))
            async with open_sidecar(args) as sidecar:
                await sidecar.wait_event("connected")
                bot = await open_bot(tmp_path / "in.sock")
                start = trio.current_time()
                for n, frame in enumerate(frame_stream(tone(440, seconds))):
                    await trio.sleep_until(start + n * 0.020 / speed)
                    await bot.send_all(frame)
                stats = await sidecar.stats(lambda e: e["samples_in"] >= seconds * 48000)
                took = trio.current_time() - start
                # Every frame was read while the server sat on its socket: the
                # bot's writes never waited for the network.
                assert took < seconds / speed * 2 + 1.0, took
                dropped = stats["dropped"].get("uplink_backpressure", 0)
                assert dropped > 0, stats
                assert len(server.current.raw) < seconds * 50 // 2
                stall.release.set()
                assert await sidecar.stop() == 0
                await until_closed(server)
                final = sidecar.named("stats")[-1]
    finally:
        stall.release.set()
    # Drop-oldest: what arrived is in order, and every sample is accounted for.
    messages = server.messages(MIXED)
    stamps = [m["data"]["timestamp_ms"] for m in messages]
    assert stamps == sorted(stamps)
    uplink_drops = sum(n for reason, n in final["dropped"].items() if reason.startswith("uplink_"))
    assert uplink_drops >= dropped
    assert len(server.audio()) // 2 + uplink_drops == seconds * rate


async def test_a_bot_that_reconnects_at_once_is_never_refused(tmp_path: Path) -> None:
    cycles = 1000
    frame = frames.encode_audio(tone(1000, 0.02), 48000)
    with trio.fail_after(120), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")

            def bot() -> None:
                # Close, connect, one frame, close, ... with no pause: the next
                # connection's first frame may be read before the last one's EOF.
                # (A blocking connect waits for room in the listen queue.)
                for _ in range(cycles):
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                        sock.connect(str(tmp_path / "in.sock"))
                        sock.sendall(frame)

            await trio.to_thread.run_sync(bot)

            def judged() -> int:
                connected = [e for e in sidecar.named("bot_connected") if e["socket"] == "in"]
                return len(connected) + len(sidecar.named("invalid_frame"))

            await wait_until(lambda: judged() >= cycles, timeout=30)
            busy = sidecar.named("invalid_frame")
            assert len(busy) == 0, f"{len(busy)} of {cycles} connections refused: {busy[:1]}"
            stats = await sidecar.stats(lambda e: e["samples_in"] >= cycles * 960)
            assert stats["events_dropped"] == 0
            assert stats["samples_in"] == cycles * 960
            assert await sidecar.stop() == 0
            await until_closed(server)
    final = sidecar.named("stats")[-1]
    # One stream across every connection: all of it reached the server or is counted.
    uplink_drops = sum(n for k, n in final["dropped"].items() if k.startswith("uplink_"))
    assert len(server.audio()) // 2 + uplink_drops == cycles * 320
