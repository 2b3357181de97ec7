"""The real sidecar process talking straight to ElevenLabs Agents (a strict local fake).

tests/elevenlabs_server.py validates every message the sidecar sends with the
`elevenlabs` package's types and has every message it sends read by the SDK's
own client code. The bot talks, the agent answers at the format the
conversation's metadata announced, the bot hears it paced at 48 kHz; the
meeting interrupts, the answer stops within a frame and the reply's audio
still in flight is dropped; pings are answered; a tool call is answered over
--control.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import trio
from control_client import connect
from elevenlabs_server import ElevenLabsConfig, ElevenLabsServer
from support import SidecarProcess, dominant_frequency, open_bot_loop, sidecar_args, wait_until
from test_e2e_agents import FRAME_MS, audible_ms, talk_then_listen, tone_frames
from test_tools_check import check_options

from sidecar.tools.check import render, run_check

SESSION = {
    "conversation_config_override": {
        "agent": {"prompt": {"prompt": "Be brief."}, "language": "en"},
        "tts": {"voice_id": "21m00Tcm4TlvDq8ikWAM"},
    },
    "dynamic_variables": {"user_name": "Ada"},
}


def elevenlabs_args(*extra: str, session: dict[str, object] | None = None) -> list[str]:
    given = SESSION if session is None else session
    return ["--protocol", "elevenlabs-agent", "--session", json.dumps(given), *extra]


async def test_answer_heard_at_22k_and_an_interruption_stops_it_and_its_stale_audio(
    tmp_path: Path,
) -> None:
    config = ElevenLabsConfig(
        output_format="pcm_22050", reply_ms=4000, barge_in_at_ms=2400, answer_barge_in=False
    )
    with trio.fail_after(60), ElevenLabsServer(config) as server:
        async with (
            open_bot_loop(server.url, tmp_path, *elevenlabs_args()) as meeting,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 4.0)
            cleared = await meeting.sidecar.wait_event(
                "playout_cleared", lambda e: e["dropped_ms"] > 0, timeout=20
            )
            at = trio.current_time()
            conn = server.current
            state = server.state(conn)
            await wait_until(lambda: state.stale_sent == config.stale_chunks, what="stale audio")
            await meeting.sidecar.wait_event("transcript", lambda e: e["role"] == "assistant")
            await wait_until(lambda: len(state.pongs) >= 2, 10, "two pongs")
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    assert conn.violations == []
    initiation = conn.received[0]
    assert initiation == {"type": "conversation_initiation_client_data", **SESSION}
    heard = [(t, f) for t, f in tone_frames(meeting.speaker, 523) if t <= at]
    after = [t for t, _ in tone_frames(meeting.speaker, 523) if t > at]
    # Sent 4x faster than real time at 22.05 kHz, heard paced at 48 kHz: far
    # less than the 2.4 s sent was heard when the user spoke.
    assert 200 <= audible_ms(heard) <= 1500
    # Stopped within a frame, and the reply's audio sent after the interruption
    # (its event_id at or below the interruption's) was never played.
    assert len(after) <= 1
    assert cleared["heard_ms"] is None or cleared["heard_ms"] <= audible_ms(heard) + FRAME_MS
    # Every ping answered with its own event_id (at most the last one still in flight).
    assert len(state.pings) <= 1
    transcripts = meeting.sidecar.named("transcript")
    user = [t for t in transcripts if t["role"] == "user"]
    agent = [t for t in transcripts if t["role"] == "assistant"]
    assert user and user[0]["text"] == "what the user said"
    # The reply's transcript, then the correction of what was cut: the same item.
    (reply_id,) = state.interruptions
    said = [t["text"] for t in agent if t["item_id"] == str(reply_id)]
    assert said == ["the agent's answer", "the"]
    # Every sample the agent sent is accounted for: played, cleared, or cut unplayed.
    stats = meeting.sidecar.named("stats")[-1]
    assert stats["bot_output_samples"] == state.audio_samples_sent
    stale = config.stale_chunks * 20 * 22050 // 1000
    assert stats["dropped"]["downlink_cleared"] >= stale * 48000 // 22050


async def test_ulaw_both_ways_and_the_capture_converted(tmp_path: Path) -> None:
    config = ElevenLabsConfig(input_format="ulaw_8000", output_format="ulaw_8000", reply_ms=1000)
    with trio.fail_after(60), ElevenLabsServer(config) as server:
        async with (
            open_bot_loop(server.url, tmp_path, *elevenlabs_args()) as meeting,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 2.0)
            await wait_until(
                lambda: audible_ms(tone_frames(meeting.speaker, 523)) >= 900, 20, "the answer"
            )
            nursery.cancel_scope.cancel()
    conn = server.current
    assert conn.violations == []
    # The 16 kHz capture reached the agent as 8 kHz mu-law: the 1 kHz tone, about 0.6 s of it.
    received = bytes(conn.audio)
    assert len(received) // 2 >= 8000 * 0.6 * 0.9
    assert abs(dominant_frequency(received[:8000], 8000) - 1000) < 20
    # Paced: the chunks came over about as long as the audio they carried, not in a burst.
    arrivals = server.state(conn).chunk_arrivals
    assert arrivals[-1] - arrivals[0] >= 0.8 * (len(received) // 2 / 8000 - 0.1)


async def test_a_tool_call_answered_end_to_end(tmp_path: Path) -> None:
    config = ElevenLabsConfig(reply_ms=1500, calls=[("lookup_time", {"tz": "UTC"})])
    control = tmp_path / "control.sock"
    with trio.fail_after(60), ElevenLabsServer(config) as server:
        args = elevenlabs_args("--control", str(control))
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await connect(control)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 1.5)
                call = await client.wait("tool_call")
                assert call["name"] == "lookup_time"
                assert call["arguments"] == {"tz": "UTC"}
                answer = {"command": "tool_result", "id": "r1", "call_id": call["call_id"]}
                await client.send(answer | {"output": {"time": "15:04"}})
                assert (await client.wait("command_result", id="r1"))["ok"] is True
                await client.wait("transcript", role="assistant")
                await wait_until(
                    lambda: audible_ms(tone_frames(meeting.speaker, 523)) >= 1400, 20, "the answer"
                )
                nursery.cancel_scope.cancel()
    conn = server.current
    state = server.state(conn)
    assert conn.violations == []
    ((call_id, result, is_error),) = state.results
    assert call_id == call["call_id"] and json.loads(result) == {"time": "15:04"} and not is_error


async def test_user_text_and_context_reach_the_agent_and_say_is_unsupported(
    tmp_path: Path,
) -> None:
    control = tmp_path / "control.sock"
    with trio.fail_after(60), ElevenLabsServer(ElevenLabsConfig(reply_ms=600)) as server:
        args = elevenlabs_args("--control", str(control))
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await connect(control)
            await client.send({"command": "context", "id": "1", "text": "Bob is the host."})
            assert (await client.wait("command_result", id="1"))["ok"] is True
            await client.send({"command": "user_text", "id": "2", "text": "What time is it?"})
            assert (await client.wait("command_result", id="2"))["ok"] is True
            await client.send({"command": "say", "id": "3", "text": "Hello."})
            refused = await client.wait("command_result", id="3")
            assert refused["ok"] is False and refused["error"]["code"] == "unsupported"
            await client.wait("transcript", role="assistant")
            await wait_until(
                lambda: audible_ms(tone_frames(meeting.speaker, 523)) >= 500, 20, "the answer"
            )
    conn = server.current
    state = server.state(conn)
    assert conn.violations == []
    assert state.contexts == ["Bob is the host."]
    assert state.user_messages == ["What time is it?"]


async def test_an_unknown_agent_is_refused_exit_4(tmp_path: Path) -> None:
    with trio.fail_after(30), ElevenLabsServer() as server:
        url = server.url.replace("agent_test", "agent_wrong")
        args = [*sidecar_args(url, tmp_path), *elevenlabs_args()]
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(args).start(nursery)
            assert await sidecar.wait(timeout=20) == 4
    gave_up = sidecar.named("gave_up")[0]
    assert gave_up["status"] == 403
    assert server.refusals == ["no agent 'agent_wrong'"]


async def test_a_public_agent_named_by_agent_id_alone(tmp_path: Path) -> None:
    """No key: --agent-id goes into the URL the websocket connects to, replacing
    the one --url names."""
    with trio.fail_after(30), ElevenLabsServer() as server:
        url = server.url.replace("agent_test", "agent_wrong")
        args = [*sidecar_args(url, tmp_path), *elevenlabs_args("--agent-id", "agent_test")]
        async with trio.open_nursery() as nursery:
            # An empty key is no key (a public agent).
            sidecar = await SidecarProcess(args, env={"ELEVENLABS_API_KEY": ""}).start(nursery)
            await sidecar.wait_event("connected", timeout=20)
            assert await sidecar.stop() == 0
    assert server.refusals == []
    assert server.handshakes == 1


async def test_check_speaks_elevenlabs_agent(tmp_path: Path) -> None:
    """`check --protocol elevenlabs-agent`: nothing in check knows the dialect; the
    session holds the audio until the metadata and converts it to the announced format."""
    session = {"conversation_config_override": {"agent": {"first_message": "Hello!"}}}
    config = ElevenLabsConfig(input_format="pcm_24000", output_format="pcm_44100", reply_ms=800)
    with ElevenLabsServer(config) as server, trio.fail_after(30):
        options = check_options(
            "--protocol", "elevenlabs-agent", server.url, "--seconds", "2",
            "--session", json.dumps(session),
        )  # fmt: skip
        report = await run_check(replace(options, quiet_after=0.5))
    assert report.ok, render(report)
    assert [v for conn in server.connections for v in conn.violations] == []
    assert report.bot_output_rates == [44100]
    assert report.bot_output_messages > 0
    conn = server.connections[0]
    # 2 s sent, converted to the announced 24 kHz (less the converter's hold-back).
    assert 24000 * 2 * 0.97 <= len(conn.audio) // 2 <= 24000 * 2
