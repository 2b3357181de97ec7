"""agent_speaking end to end: checked against what the bot actually received.

Real sidecar process, real `websockets` server, the bot reading audio-out.
The server sends one utterance 5x faster than real time, then another at real
time with a 40 ms hole in it (a late server: the same utterance). Every
frame's samples carry its utterance and index, so the bot's audio says which
frames it got, in which order; the event stream is compared with it by order
and by count, never by clock across processes:

- with a mark after every frame, each mark is echoed once its frame was
  written: the true must come before the first frame's mark, the false after
  the last one's, with exactly the utterance's frames in between;
- without marks, the `stats` events (every 20 ms, `frames_out` = frames
  written) interleaved with agent_speaking must bracket the bot's frame index
  where each utterance starts and ends.

The agent dialects' fakes (OpenAI Realtime, Deepgram Voice Agent) stream a
reply 4x faster than real time in uneven pieces; it is heard whole, or cut by
the user's barge-in: the same brackets, and OpenAI's item named as segment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio
from agent_servers import AgentConfig, AgentServer, RealtimeConfig, RealtimeServer
from e2e_peers import open_speaker, until_connected
from support import (
    Json,
    SidecarProcess,
    WsServer,
    bot_output,
    open_bot_loop,
    open_sidecar,
    sidecar_args,
    wait_until,
)
from test_e2e_agents import deepgram_args, openai_args, talk_then_listen

# Attendee's highest rate, and the bot's too: a passthrough, samples kept exactly.
OUT_RATE = 24000
FRAME = OUT_RATE * 20 // 1000
FRAMES = 25  # per utterance: half a second
HOLE_AFTER = 10  # the real-time utterance's server is 40 ms late after this frame


def frame_pcm(utterance: int, index: int) -> bytes:
    """A frame whose every sample names it: it survives the passthrough as is."""
    return np.full(FRAME, utterance * 1000 + index + 1, dtype="<i2").tobytes()


def mark(name: str) -> Json:
    return {"trigger": "realtime_audio.mark", "data": {"name": name}}


async def send_utterance(
    server: WsServer, utterance: int, *, piece_s: float, marks: bool, hole_s: float = 0.0
) -> None:
    start = trio.current_time()
    at = start
    for i in range(FRAMES):
        await trio.sleep_until(at)
        server.send(bot_output(frame_pcm(utterance, i), OUT_RATE))
        if marks:
            server.send(mark(f"u{utterance}-{i}"))
        at += piece_s + (hole_s if i == HOLE_AFTER else 0.0)


def identify(pcm: bytes) -> tuple[int, int]:
    values = np.unique(np.frombuffer(pcm, dtype="<i2"))
    assert len(values) == 1, f"a frame mixes {values[:5]}"
    value = int(values[0]) - 1
    return value // 1000, value % 1000


def stats_after_last(sc: SidecarProcess) -> bool:
    names = [e["event"] for e in sc.events]
    last = len(names) - 1 - names[::-1].index("agent_speaking")
    return "stats" in names[last:]


def speaking(sidecar: SidecarProcess) -> list[Json]:
    return [
        {k: e[k] for k in ("speaking", "segment", "cause")} for e in sidecar.named("agent_speaking")
    ]


@pytest.mark.parametrize("marks", [True, False], ids=["marks", "stats"])
async def test_agent_speaking_matches_what_the_bot_received(tmp_path: Path, marks: bool) -> None:
    with trio.fail_after(40), WsServer() as server:
        async with (
            open_sidecar(
                sidecar_args(
                    server.url,
                    tmp_path,
                    "--output-rate",
                    str(OUT_RATE),
                    # Real-time pieces with a hole: 200 ms of lead, so a stall of
                    # this test's sender under load is not an utterance's end.
                    "--jitter-ms",
                    "200",
                    stats_interval=0.02,
                )
            ) as sc,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sc, server)
            speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
            await sc.wait_event("bot_connected", lambda e: e["socket"] == "out")
            # 5x real time: a 20 ms frame every 4 ms.
            await send_utterance(server, 1, piece_s=0.004, marks=marks)
            await sc.wait_event("agent_speaking", lambda e: not e["speaking"], timeout=10)
            await send_utterance(server, 2, piece_s=0.020, marks=marks, hole_s=0.040)
            await wait_until(lambda: len(sc.named("agent_speaking")) >= 4)
            # A stats line after the last false: every bracket is closed.
            await wait_until(lambda: sc.events[-1]["event"] == "stats" and stats_after_last(sc))
            nursery.cancel_scope.cancel()

    # What the bot received: both utterances, whole, in order, nothing else.
    got = [identify(f.pcm) for f in speaker.audio_frames]
    assert got == [(u, i) for u in (1, 2) for i in range(FRAMES)]
    assert (
        speaking(sc)
        == [
            {"speaking": True, "segment": None, "cause": "started"},
            {"speaking": False, "segment": None, "cause": "finished"},
        ]
        * 2
    )
    if marks:
        assert_order_by_marks(sc)
    else:
        assert_brackets_by_stats(sc, [(0, FRAMES - 1), (FRAMES, 2 * FRAMES - 1)])


@pytest.mark.parametrize("barge_in", [False, True], ids=["heard", "barge_in"])
@pytest.mark.parametrize("vendor", ["openai", "deepgram"])
async def test_an_agents_reply_is_one_utterance_cut_or_finished(
    tmp_path: Path, vendor: str, barge_in: bool
) -> None:
    cue = 1200 if barge_in else None
    server: RealtimeServer | AgentServer
    if vendor == "openai":
        server = RealtimeServer(RealtimeConfig(barge_in_at_ms=cue, answer_barge_in=False))
        args = openai_args(server, tmp_path)
    else:
        server = AgentServer(AgentConfig(barge_in_at_ms=cue, answer_barge_in=False))
        args = deepgram_args(server)
    with trio.fail_after(60), server:
        async with (
            open_bot_loop(server.url, tmp_path, *args, "--stats-interval", "0.02") as meeting,
            trio.open_nursery() as nursery,
        ):
            sc = meeting.sidecar
            nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 6.0)
            await sc.wait_event("agent_speaking", lambda e: not e["speaking"], timeout=20)
            await wait_until(lambda: stats_after_last(sc))
            nursery.cancel_scope.cancel()

    segment = None
    if vendor == "openai":
        (transcript, *_) = sc.named("transcript")
        segment = f"{transcript['item_id']}:0"
    assert speaking(sc) == [
        {"speaking": True, "segment": segment, "cause": "started"},
        {"speaking": False, "segment": segment, "cause": "cleared" if barge_in else "finished"},
    ]
    n = len(meeting.speaker.audio_frames)
    if barge_in:
        # Cut at 1.2 s sent, 4x faster than heard: about 0.3 s reached the bot.
        assert 5 <= n < 1500 // 20
    else:
        assert n == 1500 // 20  # the whole reply, to the frame
    assert_brackets_by_stats(sc, [(0, n - 1)])


def assert_order_by_marks(sc: SidecarProcess) -> None:
    """A mark is echoed when its frame was written: the event stream, read in
    order, is the bot's frame stream with the speaking events placed in it."""
    stream: list[str] = []
    for e in sc.events:
        if e["event"] == "agent_speaking":
            stream.append("true" if e["speaking"] else "false")
        elif e["event"] == "mark":
            assert e["status"] == "played"
            stream.append(e["name"])
    frames_of = [[f"u{u}-{i}" for i in range(FRAMES)] for u in (1, 2)]
    assert stream == ["true", *frames_of[0], "false", "true", *frames_of[1], "false"]


def assert_brackets_by_stats(sc: SidecarProcess, bounds: list[tuple[int, int]]) -> None:
    """Utterance u spans the bot's frames [first, last] (0-based): its true
    was emitted as frame `first` was written, so stats before it show exactly
    `first` frames written (every earlier utterance whole, none of this one),
    and stats after it, up to its false, between `first + 1` and `last + 1`."""
    written_before = 0
    state = 0  # index into the four agent_speaking events
    checks = 0
    for e in sc.events:
        if e["event"] == "agent_speaking":
            state += 1
            continue
        if e["event"] != "stats":
            continue
        n = e["frames_out"]
        assert n >= written_before, "frames_out went backwards"
        written_before = n
        utterance, phase = divmod(state, 2)
        if utterance < len(bounds):
            first, last = bounds[utterance]
            if phase == 0:  # before this utterance's true
                assert n == first, (n, first)
            else:  # between true and false: frames of this utterance only
                assert first + 1 <= n <= last + 1, (n, first, last)
        else:  # after the last false: nothing more was written
            assert n == bounds[-1][1] + 1, (n, bounds)
        checks += 1
    assert state == 2 * len(bounds) and checks > 10
