"""Per-participant streams (issue 7), end to end: UUID-first connections on
audio-in -> `realtime_audio.per_participant` messages at a real server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
import trio
from e2e_bots import (
    MIXED,
    PER_PARTICIPANT,
    audio_of,
    check_audio_messages,
    error_codes,
    for_participant,
    near,
    open_bot,
    play_tone,
    read_until_closed,
    until_closed,
)
from support import Json, SidecarProcess, WsServer, open_sidecar, sidecar_args, wait_until

from sidecar import frames

Ending = Literal["close", "terminate", "stay"]
SECONDS = 0.6


async def speak(
    path: Path,
    who: uuid.UUID | None,
    freq: float,
    seconds: float,
    ending: Ending = "close",
    delay: float = 0.0,
    kept: list[trio.SocketStream] | None = None,
) -> None:
    """One bot connection: a participant (UUID first) or the mixed stream."""
    await trio.sleep(delay)
    bot = await open_bot(path, who)
    await play_tone(bot, freq, seconds)
    if ending == "terminate":
        await bot.send_all(frames.encode_terminate())
        assert await read_until_closed(bot) == []
    elif ending == "close":
        await bot.aclose()
    else:
        # Left open for the sidecar's shutdown to flush.
        assert kept is not None
        kept.append(bot)


@contextlib.asynccontextmanager
async def participants_on(
    server: WsServer, tmp_path: Path, *flags: str
) -> AsyncIterator[SidecarProcess]:
    """A sidecar with per-participant audio on, connected to `server`."""
    args = sidecar_args(server.url, tmp_path, "--per-participant", *flags)
    async with open_sidecar(args) as sidecar:
        await sidecar.wait_event("connected")
        yield sidecar


def by_uuid(sidecar: SidecarProcess, name: str) -> dict[str, Json]:
    return {e["participant_uuid"]: e for e in sidecar.named(name)}


def samples_of(server: WsServer, who: uuid.UUID) -> int:
    return len(audio_of(for_participant(server, who))) // 2


@pytest.mark.parametrize("pp_rate", [8000, 16000])
async def test_participants_and_mixed_at_once(tmp_path: Path, pp_rate: int) -> None:
    tones = {uuid.uuid4(): 400.0, uuid.uuid4(): 600.0, uuid.uuid4(): 800.0}
    (left_a, left_b, stays) = list(tones)
    endings: dict[uuid.UUID, Ending] = {left_a: "close", left_b: "terminate", stays: "stay"}
    path = tmp_path / "in.sock"
    kept: list[trio.SocketStream] = []
    with trio.fail_after(40), WsServer() as server:
        flags = ("--sample-rate", "24000", "--per-participant-sample-rate", str(pp_rate))
        async with participants_on(server, tmp_path, *flags) as sidecar:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak, path, None, 1000.0, SECONDS, "terminate")
                for who, freq in tones.items():
                    nursery.start_soon(speak, path, who, freq, SECONDS, endings[who], 0.0, kept)
                # Per-stream counters, while every stream is live.
                live = await sidecar.stats(
                    lambda e: all(e["participants"].get(str(u), {}).get("chunks") for u in tones)
                )
                # Each leaving stream is flushed on its own disconnect: complete
                # before the sidecar is asked to stop.
                await wait_until(
                    lambda: all(
                        samples_of(server, u) >= round(SECONDS * pp_rate) for u in (left_a, left_b)
                    )
                )
                await sidecar.stats(lambda e: e["samples_in"] >= 4 * round(SECONDS * 48000))
            assert len(kept) == 1
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert set(live["participants"]) == {"mixed", *map(str, tones)}
    for counters in live["participants"].values():
        assert counters["frames"] > 0 and counters["samples"] > 0 and counters["chunks"] > 0
    # One websocket carries both kinds of message.
    assert len(server.connections) == 1
    assert {m["trigger"] for m in server.messages()} == {MIXED, PER_PARTICIPANT}
    mixed = check_audio_messages(server.messages(MIXED), rate=24000)
    assert len(mixed) == 2 * round(SECONDS * 24000)
    assert near(1000, mixed, 24000)
    for who, freq in tones.items():
        pcm = check_audio_messages(for_participant(server, who), rate=pp_rate, participant=who)
        assert len(pcm) == 2 * round(SECONDS * pp_rate), who
        assert near(freq, pcm, pp_rate), who
    assert len(server.messages(PER_PARTICIPANT)) == sum(
        len(for_participant(server, u)) for u in tones
    )
    joined, left = by_uuid(sidecar, "participant_joined"), by_uuid(sidecar, "participant_left")
    assert set(joined) == set(left) == set(map(str, tones))
    assert left[str(left_a)]["reason"] == "bot closed the connection"
    assert left[str(left_b)]["reason"] == "bot sent terminate"
    assert left[str(stays)]["reason"] == "sidecar stopping"
    # Participant connections are not the bot's mixed connection.
    assert len(sidecar.named("bot_connected")) == 1


async def test_participants_join_and_leave_mid_stream(tmp_path: Path) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    path = tmp_path / "in.sock"
    rate = 16000
    with trio.fail_after(40), WsServer() as server:
        async with participants_on(server, tmp_path) as sidecar:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak, path, None, 1000.0, 1.4, "terminate")
                nursery.start_soon(speak, path, a, 500.0, 0.4, "close", 0.2)
                nursery.start_soon(speak, path, b, 700.0, 0.6, "terminate", 0.5)
                # A comes back with the same UUID after it left.
                nursery.start_soon(speak, path, a, 500.0, 0.2, "close", 1.0)
                with_a = await sidecar.stats(lambda e: str(a) in e["participants"])
                without_a = await sidecar.stats(
                    lambda e: str(b) in e["participants"] and str(a) not in e["participants"]
                )
            await wait_until(lambda: len(server.audio()) >= 2 * round(1.4 * rate))
            await wait_until(lambda: samples_of(server, a) >= round(0.6 * rate))
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert with_a["participants"][str(a)]["frames"] > 0
    assert without_a["participants"][str(b)]["frames"] > 0
    order = [
        (e["event"], e["participant_uuid"])
        for e in sidecar.events
        if e["event"] in ("participant_joined", "participant_left")
    ]
    assert order == [
        ("participant_joined", str(a)),
        ("participant_joined", str(b)),
        ("participant_left", str(a)),
        ("participant_joined", str(a)),
        ("participant_left", str(b)),
        ("participant_left", str(a)),
    ]
    mixed = check_audio_messages(server.messages(MIXED), rate=rate)
    assert len(mixed) == 2 * round(1.4 * rate)
    # A's two visits: each flushed whole when it left; the clock jumps once.
    pcm_a = check_audio_messages(for_participant(server, a), rate=rate, participant=a, max_gaps=1)
    assert len(pcm_a) == 2 * round(0.6 * rate)
    assert near(500, pcm_a, rate)
    pcm_b = check_audio_messages(for_participant(server, b), rate=rate, participant=b)
    assert len(pcm_b) == 2 * round(0.6 * rate)
    assert near(700, pcm_b, rate)
    # Every stream is on the same (capture) clock: A started ~200 ms after the mixed
    # stream and B ~500 ms after it.
    t0 = server.messages(MIXED)[0]["data"]["timestamp_ms"]
    for who, offset in ((a, 200), (b, 500)):
        first = for_participant(server, who)[0]["data"]["timestamp_ms"]
        assert offset - 100 <= first - t0 <= offset + 400, (who, first - t0)


async def test_max_participants(tmp_path: Path) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    path = tmp_path / "in.sock"
    rate = 16000
    with trio.fail_after(40), WsServer() as server:
        async with participants_on(server, tmp_path, "--max-participants", "2") as sidecar:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak, path, a, 500.0, 0.6, "close")
                nursery.start_soon(speak, path, b, 700.0, 1.0, "close")
                await wait_until(lambda: len(sidecar.named("participant_joined")) == 2)
                # A third is refused while two stream.
                refused = await open_bot(path, c)
                replies = await read_until_closed(refused)
                assert error_codes(replies) == [frames.ErrorCode.TOO_MANY_STREAMS]
                event = await sidecar.wait_event("invalid_frame")
                assert event["code"] == frames.ErrorCode.TOO_MANY_STREAMS
                # So is a second connection for a participant already streaming.
                duplicate = await open_bot(path, a)
                replies = await read_until_closed(duplicate)
                assert error_codes(replies) == [frames.ErrorCode.BUSY]
                # Once A has left there is room again.
                await sidecar.wait_event("participant_left")
                nursery.start_soon(speak, path, c, 900.0, 0.3, "close")
            await wait_until(lambda: samples_of(server, c) >= round(0.3 * rate))
            codes = [e["code"] for e in sidecar.named("invalid_frame")]
            assert codes == [frames.ErrorCode.TOO_MANY_STREAMS, frames.ErrorCode.BUSY]
            assert await sidecar.stop() == 0
            await until_closed(server)
    joined = [e["participant_uuid"] for e in sidecar.named("participant_joined")]
    assert sorted(joined[:2]) == sorted([str(a), str(b)])
    assert joined[2:] == [str(c)]
    for who, freq, seconds in ((a, 500, 0.6), (b, 700, 1.0), (c, 900, 0.3)):
        pcm = check_audio_messages(for_participant(server, who), rate=rate, participant=who)
        assert len(pcm) == 2 * round(seconds * rate)
        assert near(freq, pcm, rate)
    # The refusals cost the streams already running nothing.
    assert not server.messages(MIXED)


async def test_participants_connecting_at_once(tmp_path: Path) -> None:
    """Every participant connects while the sidecar cannot accept (stopped): the
    kernel's listen queue holds them all, so no non-blocking connect() fails."""
    crowd = [uuid.uuid4() for _ in range(16)]
    path = tmp_path / "in.sock"
    rate = 16000
    with trio.fail_after(40), WsServer() as server:
        async with participants_on(server, tmp_path, "--max-participants", "16") as sidecar:
            assert sidecar.process is not None
            pid = sidecar.process.pid
            bots: list[trio.SocketStream] = []
            os.kill(pid, signal.SIGSTOP)
            try:
                for _ in crowd:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    sock.connect(str(path))  # EAGAIN here would be a lost participant
                    bots.append(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
            finally:
                os.kill(pid, signal.SIGCONT)
            for bot, who in zip(bots, crowd, strict=True):
                await bot.send_all(frames.encode_uuid(who))
            async with trio.open_nursery() as nursery:
                for bot in bots:
                    nursery.start_soon(play_tone, bot, 500.0, 0.2)
            for bot in bots:
                await bot.aclose()
            await wait_until(lambda: len(sidecar.named("participant_left")) == len(crowd))
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert set(by_uuid(sidecar, "participant_joined")) == {str(who) for who in crowd}
    for who in crowd:
        assert samples_of(server, who) == round(0.2 * rate)


async def test_participant_streams_off(tmp_path: Path) -> None:
    path = tmp_path / "in.sock"
    rate = 16000
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak, path, None, 1000.0, SECONDS, "terminate")
                refused = await open_bot(path, uuid.uuid4())
                # The refusal may already have closed the connection.
                with contextlib.suppress(trio.BrokenResourceError):
                    await refused.send_all(frames.encode_audio(bytes(1920), 48000))
                replies = await read_until_closed(refused)
                assert error_codes(replies) == [frames.ErrorCode.PER_PARTICIPANT_DISABLED]
                text = next(e for e in replies if isinstance(e, frames.ErrorFrame)).text
                assert "--per-participant" in text
            event = await sidecar.wait_event("invalid_frame")
            assert event["code"] == frames.ErrorCode.PER_PARTICIPANT_DISABLED
            assert "--per-participant" in event["message"]
            await wait_until(lambda: len(server.audio()) >= 2 * round(SECONDS * rate))
            stats = await sidecar.stats(lambda e: e["samples_in"] >= round(SECONDS * 48000))
            assert set(stats["participants"]) == {"mixed"}
            assert await sidecar.stop() == 0
            await until_closed(server)
    assert not sidecar.named("participant_joined")
    assert not server.messages(PER_PARTICIPANT)
    pcm = check_audio_messages(server.messages(MIXED), rate=rate)
    assert len(pcm) == 2 * round(SECONDS * rate)


async def test_separate_participant_url(tmp_path: Path) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    path = tmp_path / "in.sock"
    with trio.fail_after(40), WsServer() as mixed_server, WsServer() as pp_server:
        args = sidecar_args(mixed_server.url, tmp_path, "--sample-rate", "8000")
        args += ["--per-participant", "--per-participant-url", pp_server.url]
        async with open_sidecar(args) as sidecar:
            await wait_until(lambda: len(sidecar.named("connected")) == 2)
            urls = {e["url"] for e in sidecar.named("connected")}
            assert urls == {mixed_server.url, pp_server.url}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak, path, None, 1000.0, SECONDS, "terminate")
                nursery.start_soon(speak, path, a, 500.0, SECONDS, "close")
                nursery.start_soon(speak, path, b, 700.0, SECONDS, "terminate")
            await wait_until(lambda: len(mixed_server.audio()) >= 2 * round(SECONDS * 8000))
            await wait_until(
                lambda: all(samples_of(pp_server, u) >= round(SECONDS * 16000) for u in (a, b))
            )
            assert await sidecar.stop() == 0
            await until_closed(mixed_server)
            await until_closed(pp_server)
    assert {m["trigger"] for m in mixed_server.messages()} == {MIXED}
    assert {m["trigger"] for m in pp_server.messages()} == {PER_PARTICIPANT}
    for server in (mixed_server, pp_server):
        assert len(server.connections) == 1
        assert server.connections[0].close_code == 1000
    mixed = check_audio_messages(mixed_server.messages(MIXED), rate=8000)
    assert len(mixed) == 2 * round(SECONDS * 8000)
    for who, freq in ((a, 500), (b, 700)):
        pcm = check_audio_messages(for_participant(pp_server, who), rate=16000, participant=who)
        assert len(pcm) == 2 * round(SECONDS * 16000)
        assert near(freq, pcm, 16000)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_replay_is_per_stream(tmp_path: Path) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    path = tmp_path / "in.sock"
    rate, replay_ms, seconds = 16000, 600, 1.2
    port = _free_port()
    url = f"ws://127.0.0.1:{port}/audio"
    with trio.fail_after(40):
        args = sidecar_args(url, tmp_path, "--per-participant", "--replay-ms", str(replay_ms))
        args += ["--retry-delay", "0.2"]
        async with open_sidecar(args) as sidecar:
            # Nobody listens yet: everything waits in the replay buffer.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak, path, None, 1000.0, seconds, "terminate")
                nursery.start_soon(speak, path, a, 500.0, seconds, "close")
                nursery.start_soon(speak, path, b, 700.0, seconds, "close")
            assert not sidecar.named("connected")
            server = WsServer().start(port)
            try:
                await sidecar.wait_event("connected")
                # Replay goes first; once it is all in, stop.
                await sidecar.stats(lambda e: e["connected"] and e["replay_depth_ms"] == 0)
                assert await sidecar.stop() == 0
                await until_closed(server)
            finally:
                server.stop()
    kept = {
        "mixed": len(server.audio()) // 2,
        "a": samples_of(server, a),
        "b": samples_of(server, b),
    }
    for stream, samples in kept.items():
        # The newest --replay-ms of each stream, to within a chunk.
        assert abs(samples * 1000 / rate - replay_ms) <= 40, (stream, kept)
    # Drops are counted per stream too: a participant's in `participant_left`,
    # the mixed stream's in the last `stats`, adding up to the total.
    expected_ms = seconds * 1000 - replay_ms
    left = by_uuid(sidecar, "participant_left")
    final = sidecar.named("stats")[-1]
    assert set(final["participants"]) == {"mixed"}
    per_stream = {
        "mixed": final["participants"]["mixed"]["dropped"],
        "a": left[str(a)]["dropped"],
        "b": left[str(b)]["dropped"],
    }
    for stream, dropped in per_stream.items():
        assert abs(dropped * 1000 / rate - expected_ms) <= 40, (stream, per_stream)
    assert final["dropped"]["uplink_disconnected"] == sum(per_stream.values())
