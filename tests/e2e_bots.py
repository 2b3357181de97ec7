"""Bot-side helpers for the uplink, socket and per-participant end-to-end tests.

- `running`: a SidecarProcess that is always killed and reaped, even when the
  test fails half-way.
- `open_bot` / `read_until_closed`: the bot's end of audio-in, including the
  error frames the sidecar answers with before closing a connection.
- `check_audio_messages`: the exact shape of Attendee's messages, timestamps
  that advance with the audio, and the PCM they carry.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
import uuid
from pathlib import Path

import trio
from support import Json, SidecarProcess, WsServer, dominant_frequency, play, tone, wait_until

from sidecar import frames

MIXED = "realtime_audio.mixed"
PER_PARTICIPANT = "realtime_audio.per_participant"
# Timestamps are floored to whole ms from an exact stream clock; a chunk may
# therefore start up to 1 ms off the previous one's end, and this leaves 1 ms
# more for rounding of the expected duration.
TIMESTAMP_SLACK_MS = 2.0
READ_TIMEOUT_S = 5.0


async def open_bot(path: Path, participant: uuid.UUID | None = None) -> trio.SocketStream:
    """Connect to audio-in; a participant's connection starts with its UUID frame."""
    with trio.fail_after(5):
        stream = await trio.open_unix_socket(str(path))
    if participant is not None:
        await stream.send_all(frames.encode_uuid(participant))
    return stream


async def read_until_closed(stream: trio.SocketStream) -> list[frames.Event]:
    """What the sidecar writes until it closes the connection.

    Closing a Unix socket with unread input makes the peer's next read fail
    with ECONNRESET instead of returning EOF; a refused bot that was still
    writing sees that, after the error frame.
    """
    decoder = frames.FrameDecoder()
    out: list[frames.Event] = []
    with trio.fail_after(READ_TIMEOUT_S):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            decoder.feed(bytes(data))
            out.extend(decoder)
    return out


async def nth_event(sidecar: SidecarProcess, name: str, n: int) -> Json:
    """The n-th (from 1) event of that name, once it has arrived."""
    await wait_until(lambda: len(sidecar.named(name)) >= n)
    return sidecar.named(name)[n - 1]


async def stats_where(sidecar: SidecarProcess, field: str, value: object) -> Json:
    return await sidecar.stats(lambda e: e[field] == value)


def error_codes(events: list[frames.Event]) -> list[int]:
    return [e.code for e in events if isinstance(e, frames.ErrorFrame)]


async def play_tone(
    stream: trio.abc.SendStream, freq: float, seconds: float, rate: int = 48000
) -> None:
    """Real-time paced 20 ms AudioSocket frames of a tone."""
    await play(stream, tone(freq, seconds, rate), rate)


def near(freq: float, pcm: bytes, rate: int, tolerance: float = 4.0) -> bool:
    """The tone is there: its dominant frequency, within the FFT's resolution."""
    return abs(dominant_frequency(pcm, rate) - freq) <= tolerance


def wall_ms() -> float:
    return time.time() * 1000


def audio_of(messages: list[Json]) -> bytes:
    return b"".join(base64.b64decode(m["data"]["chunk"]) for m in messages)


def for_participant(server: WsServer, participant: uuid.UUID) -> list[Json]:
    return [
        m
        for m in server.messages(PER_PARTICIPANT)
        if m["data"]["participant_uuid"] == str(participant)
    ]


async def until_closed(server: WsServer) -> None:
    """Every websocket the server saw has finished its close handshake, so every
    message sent before it is recorded."""
    await wait_until(lambda: all(c.closed.is_set() for c in server.connections))


def check_audio_messages(
    messages: list[Json],
    *,
    rate: int,
    bot_id: str = "bot_test",
    participant: uuid.UUID | None = None,
    start_ms: float | None = None,
    max_gaps: int = 0,
) -> bytes:
    """Assert Attendee's exact message shape and a timeline that advances with
    the audio; returns the concatenated PCM.

    `max_gaps`: how many forward jumps of the stream clock the scenario allows
    (a bot that went away and came back).
    """
    assert messages, "no audio messages"
    trigger = MIXED if participant is None else PER_PARTICIPANT
    data_keys = {"chunk", "sample_rate", "timestamp_ms"}
    if participant is not None:
        data_keys.add("participant_uuid")
    for m in messages:
        assert set(m) == {"bot_id", "trigger", "data"}, m.keys()
        assert m["bot_id"] == bot_id
        assert m["trigger"] == trigger
        data = m["data"]
        assert set(data) == data_keys, data.keys()
        assert type(data["sample_rate"]) is int and data["sample_rate"] == rate
        assert type(data["timestamp_ms"]) is int
        assert isinstance(data["chunk"], str)
        try:
            pcm = base64.b64decode(data["chunk"], validate=True)
        except binascii.Error as exc:
            raise AssertionError(f"chunk is not base64: {exc}") from None
        assert pcm and len(pcm) % 2 == 0
        if participant is not None:
            assert data["participant_uuid"] == str(participant)
    stamps = [m["data"]["timestamp_ms"] for m in messages]
    sizes = [len(base64.b64decode(m["data"]["chunk"])) // 2 for m in messages]
    gaps = 0
    for (prev, size), nxt in zip(zip(stamps, sizes, strict=True), stamps[1:], strict=False):
        assert nxt >= prev, f"timestamp went backwards: {prev} -> {nxt}"
        expected = size * 1000 / rate
        if nxt - prev > expected + TIMESTAMP_SLACK_MS:
            gaps += 1
        else:
            assert abs(nxt - prev - expected) <= TIMESTAMP_SLACK_MS, (
                f"chunk of {expected:.2f} ms followed {nxt - prev} ms later"
            )
    assert gaps <= max_gaps, f"{gaps} jumps in the timeline: {list(itertools.pairwise(stamps))}"
    if start_ms is not None:
        # Capture time of the first sample: after the bot started, and not
        # much later (the first frame is read within moments).
        assert start_ms - 50 <= stamps[0] <= start_ms + 3000, (stamps[0], start_ms)
    return audio_of(messages)
