"""A mark after every piece, end to end: the bot hears the same voice as without.

Real sidecar process, real websocket servers of each dialect that has marks,
real Unix sockets. Servers copied from the widely used Twilio + OpenAI bridge
sample send a mark after every audio delta; flushing the resampler at each
made the bot hear 31.7 dB SNR instead of 89.5 (issue 17). The audio goes out
all at once, as agents send it faster than real time, so what the bot hears
does not depend on the machine's timing: only the frames' content is measured.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from dialect_servers import TwilioServer, VonageServer
from support import WsServer, bot_output, open_bot_loop, tone, tone_snr_db, wait_until

Server = WsServer | TwilioServer | VonageServer

OUT_RATE = 48000
SECONDS = 2.0
FREQ = 440


@dataclass(frozen=True)
class Dialect:
    """How a test server of one dialect says audio and marks, and hears answers."""

    name: str
    rate: int
    server: Callable[[], AbstractContextManager[Server]]
    ready: Callable[[Server], bool]
    audio: Callable[[Server, bytes], None]
    mark: Callable[[Server, str], None]
    answered: Callable[[Server], int]


def _attendee() -> Dialect:
    def mark(server: Server, name: str) -> None:
        assert isinstance(server, WsServer)
        server.send({"trigger": "realtime_audio.mark", "data": {"name": name}})

    def audio(server: Server, pcm: bytes) -> None:
        assert isinstance(server, WsServer)
        server.send(bot_output(pcm, 16000))

    def answered(server: Server) -> int:
        assert isinstance(server, WsServer)
        echoes = server.messages("realtime_audio.mark")
        assert all(m["data"]["status"] == "played" for m in echoes)
        return len(echoes)

    return Dialect(
        "attendee",
        16000,
        WsServer,
        lambda server: isinstance(server, WsServer) and bool(server.connections),
        audio,
        mark,
        answered,
    )


def _twilio() -> Dialect:
    def cast(server: Server) -> TwilioServer:
        assert isinstance(server, TwilioServer)
        return server

    return Dialect(
        "twilio",
        8000,
        TwilioServer,
        lambda server: bool(cast(server).events("start")),
        lambda server, pcm: cast(server).send_pcm(pcm),
        lambda server, name: cast(server).send_mark(name),
        lambda server: len(cast(server).events("mark")),
    )


def _vonage() -> Dialect:
    def cast(server: Server) -> VonageServer:
        assert isinstance(server, VonageServer)
        return server

    return Dialect(
        "vonage",
        16000,
        VonageServer,
        lambda server: bool(cast(server).texts()),
        lambda server, pcm: cast(server).send_audio(pcm),
        lambda server, name: cast(server).send_notify(name),
        lambda server: len(cast(server).events("websocket:notify")),
    )


DIALECTS = [_attendee(), _twilio(), _vonage()]


async def heard(dialect: Dialect, tmp_path: Path, *, marks: bool) -> bytes:
    """What the bot hears of 2 s of 440 Hz sent in 20 ms pieces, a mark after
    each if `marks`; every mark answered once played."""
    expected = int(SECONDS * OUT_RATE)
    src = tone(FREQ, SECONDS, dialect.rate)
    step = dialect.rate // 50 * 2
    pieces = [src[i : i + step] for i in range(0, len(src), step)]
    with trio.fail_after(40), dialect.server() as server:
        async with open_bot_loop(server.url, tmp_path, "--protocol", dialect.name) as loop:
            await wait_until(lambda: dialect.ready(server), what="the stream's opening")
            for n, piece in enumerate(pieces):
                dialect.audio(server, piece)
                if marks:
                    dialect.mark(server, f"piece-{n}")
            await wait_until(lambda: len(loop.speaker.pcm) >= expected * 2, timeout=20)
            if marks:
                await wait_until(lambda: dialect.answered(server) == len(pieces), timeout=10)
                stats = await loop.sidecar.stats(lambda e: e["samples_played"] >= expected)
                assert stats["marks_refused"] == 0
        if not isinstance(server, WsServer):
            assert server.violations() == []
    return loop.speaker.pcm[: expected * 2]


@pytest.mark.parametrize("dialect", DIALECTS, ids=[d.name for d in DIALECTS])
async def test_a_mark_after_every_piece_leaves_the_voice_as_clean_as_without(
    dialect: Dialect, tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "marked").mkdir()
    plain = tone_snr_db(await heard(dialect, tmp_path / "plain", marks=False), OUT_RATE, FREQ)
    marked = tone_snr_db(await heard(dialect, tmp_path / "marked", marks=True), OUT_RATE, FREQ)
    assert plain > 30  # mu-law limits Twilio's; the others are far above
    assert marked > plain - 1, f"{marked:.1f} dB with marks, {plain:.1f} dB without"
