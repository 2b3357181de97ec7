"""OpenAI-compatible realtime endpoints through `--protocol openai-realtime`
and `--url`: Azure OpenAI (`/openai/v1/realtime?model=DEPLOYMENT`, its
`api-key` header or an Entra bearer token) and xAI (`/v1/realtime`, a bearer
key). The OpenAI fake serves each one's path and auth scheme only (another
path is a 404, another credential a 401) and validates every message the
sidecar sends with the OpenAI SDK's models."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from agent_servers import RealtimeConfig, RealtimeServer
from support import SidecarProcess, frame_stream, open_bot_loop, sidecar_args, tone

AZURE_PATH = "/openai/v1/realtime?model=my-realtime-deployment"
XAI_PATH = "/v1/realtime?model=grok-voice-latest"
OPENAI_KEY = "sk-openai-key-never-for-azure-0123"


async def _talk(bot: trio.SocketStream) -> None:
    """Someone speaks for 0.6 s, then silence: the fake agent answers the turn."""
    pcm = tone(1000, 0.6, level=0.3) + bytes(2 * 48000 * 2)
    start = trio.current_time()
    for n, frame in enumerate(frame_stream(pcm)):
        await trio.sleep_until(start + n * 0.02)
        await bot.send_all(frame)


@pytest.mark.parametrize(
    ("config", "header_line"),
    [
        (
            RealtimeConfig(
                api_key="azure-key-0123456789",
                auth_header="api-key",
                auth_scheme="",
                path=AZURE_PATH,
            ),
            "api-key: azure-key-0123456789",
        ),
        (
            RealtimeConfig(api_key="entra-token-0123456789", path=AZURE_PATH),
            "Authorization: Bearer entra-token-0123456789",
        ),
        (
            RealtimeConfig(api_key="xai-0123456789", path=XAI_PATH),
            "Authorization: Bearer xai-0123456789",
        ),
    ],
    ids=["azure-api-key", "azure-entra", "xai"],
)
async def test_a_compatible_endpoint_answers_through_openai_realtime(
    tmp_path: Path, config: RealtimeConfig, header_line: str
) -> None:
    """The key comes from SIDECAR_HEADERS (not argv); OPENAI_API_KEY, set as
    well, is never sent beside Azure's `api-key` (nor to anyone, given a key)."""
    config.reply_ms = 600
    env = {"SIDECAR_HEADERS": header_line, "OPENAI_API_KEY": OPENAI_KEY}
    with trio.fail_after(60), RealtimeServer(config) as server:
        args = ("--protocol", "openai-realtime")
        async with (
            open_bot_loop(server.url, tmp_path, *args, env=env) as meeting,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_talk, meeting.bot)
            await meeting.sidecar.wait_event("agent_speaking", timeout=20)
            nursery.cancel_scope.cancel()
    conn = server.current
    assert conn.path == config.path
    assert conn.violations == []
    assert conn.received[0]["type"] == "session.update"
    sent = {name.lower(): value for name, value in conn.headers.raw_items()}
    assert OPENAI_KEY not in " ".join(sent.values())
    if config.auth_header == "api-key":
        assert "authorization" not in sent
    assert config.api_key.encode() not in meeting.sidecar.stdout + meeting.sidecar.stderr


async def test_azure_wrong_key_is_fatal(tmp_path: Path) -> None:
    config = RealtimeConfig(
        api_key="azure-key-0123456789", auth_header="api-key", auth_scheme="", path=AZURE_PATH
    )
    with trio.fail_after(40), RealtimeServer(config) as server:
        url = f"ws://127.0.0.1:{server.port}{AZURE_PATH}"
        async with trio.open_nursery() as nursery:
            wrong_key = SidecarProcess(
                [*sidecar_args(url, tmp_path, "--protocol", "openai-realtime")],
                env={"SIDECAR_HEADERS": "api-key: azure-key-wrong-999"},
            )
            await wrong_key.start(nursery)
            assert await wrong_key.wait(timeout=20) == 4
    assert wrong_key.named("gave_up")[0]["status"] == 401
    assert b"azure-key-wrong-999" not in wrong_key.stdout + wrong_key.stderr
