"""A private ElevenLabs agent through the real sidecar: a signed URL fetched with
ELEVENLABS_API_KEY before every connection (it expires), a wrong key exit 4.

The fakes (tests/elevenlabs_server.py): get-signed-url answers 401 for a wrong
key and issues a new signature each time; the agent's websocket takes a
signature once and never after it expired.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio_websocket
from elevenlabs_server import ElevenLabsConfig, ElevenLabsServer, SignedUrlServer
from support import SidecarProcess, open_bot_loop, sidecar_args, wait_until
from test_e2e_elevenlabs import elevenlabs_args


def signed_env(rest: SignedUrlServer, key: str | None = None) -> dict[str, str]:
    return {"ELEVENLABS_API_KEY": key or rest.api_key, "ELEVENLABS_API_BASE": rest.base}


async def test_an_expired_signed_url_is_fetched_anew(tmp_path: Path) -> None:
    config = ElevenLabsConfig(private=True, ping_every_s=0.2)
    with (
        trio.fail_after(60),
        ElevenLabsServer(config) as agents,
        SignedUrlServer(agents) as rest,
    ):
        args = elevenlabs_args("--retry-delay", "0.1")
        async with open_bot_loop(agents.url, tmp_path, *args, env=signed_env(rest)) as meeting:
            await wait_until(lambda: bool(agents.connections), 10, "a conversation")
            first = agents.current
            await wait_until(lambda: bool(agents.state(first).pongs), 10, "a pong")
            # Fifteen minutes pass: every signature issued so far expires; the
            # conversation ends (modelled: the service closes it).
            agents.expire()
            first.close(1011, "conversation ended")
            await wait_until(lambda: len(agents.connections) == 2, 20, "a second conversation")
            second = agents.current
            await wait_until(lambda: bool(agents.state(second).pongs), 10, "a pong")
            # The first signed URL opens nothing any more.
            with pytest.raises(trio_websocket.HandshakeError):
                async with trio_websocket.open_websocket_url(rest.issued[0]):
                    pass
    assert [key for _, key in rest.requests] == [rest.api_key, rest.api_key]
    assert len(set(rest.issued)) == 2
    # The sidecar never offered an old signature: the only refusal is ours above.
    assert agents.refusals == ["the signature is unknown or expired"]
    assert all(conn.violations == [] for conn in agents.connections)
    assert second.received[0]["type"] == "conversation_initiation_client_data"
    assert len(meeting.sidecar.named("connected")) == 2
    out = meeting.sidecar.stdout + meeting.sidecar.stderr
    assert rest.api_key.encode() not in out
    for url in rest.issued:
        assert url.split("conversation_signature=")[1].encode() not in out


async def test_a_wrong_key_is_exit_4(tmp_path: Path) -> None:
    with (
        trio.fail_after(30),
        ElevenLabsServer(ElevenLabsConfig(private=True)) as agents,
        SignedUrlServer(agents) as rest,
    ):
        args = [*sidecar_args(agents.url, tmp_path), *elevenlabs_args()]
        async with trio.open_nursery() as nursery:
            env = signed_env(rest, key="xi-wrong")
            sidecar = await SidecarProcess(args, env=env).start(nursery)
            assert await sidecar.wait(timeout=20) == 4
    gave_up = sidecar.named("gave_up")[0]
    assert gave_up["status"] == 401
    assert agents.handshakes == 0
    assert b"xi-wrong" not in sidecar.stdout + sidecar.stderr


async def test_agent_id_flag_names_the_agent_whose_url_is_fetched(tmp_path: Path) -> None:
    """--agent-id, and a --url that names no agent: the signed URL is asked for that agent."""
    with (
        trio.fail_after(30),
        ElevenLabsServer(ElevenLabsConfig(private=True)) as agents,
        SignedUrlServer(agents) as rest,
    ):
        bare = agents.url.split("?")[0]
        args = elevenlabs_args("--agent-id", agents.config.agent_id)
        async with open_bot_loop(bare, tmp_path, *args, env=signed_env(rest)):
            await wait_until(lambda: bool(agents.connections), 10, "a conversation")
            conn = agents.current
            await wait_until(lambda: bool(conn.received), 10, "the initiation")
    ((path, key),) = rest.requests
    assert path.endswith(f"get-signed-url?agent_id={agents.config.agent_id}")
    assert key == rest.api_key
    assert conn.violations == []
    assert agents.refusals == []
