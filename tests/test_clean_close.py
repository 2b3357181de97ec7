"""A clean close (1000) from the server: the end of the call for Twilio and
Vonage (exit 0), a drop to reconnect after elsewhere; --reconnect-on-close
overrides the dialect."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from e2e_peers import until_connected
from support import WsServer, open_sidecar, sidecar_args

from sidecar import dialects


@pytest.mark.parametrize("protocol", ["twilio", "vonage"])
async def test_a_clean_close_ends_the_call_for_telephony_dialects(
    tmp_path: Path, protocol: str
) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--protocol", protocol, "--retry-delay", "0.1")
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            server.current.ws.close(1000, "call completed")
            assert await sidecar.wait(10) == 0
            await trio.sleep(0.1)  # the last lines
    (stopped,) = sidecar.named("stopped")
    assert stopped["exit_code"] == 0
    ended = "the server ended the call: closed by server with code 1000"
    assert stopped["reason"].startswith(ended)
    assert "call completed" in stopped["reason"]
    assert sidecar.named("disconnected") and not sidecar.named("retrying")
    assert server.handshakes == 1


@pytest.mark.parametrize(
    ("protocol", "flag", "reconnects"),
    [
        ("twilio", "always", True),
        ("attendee", "auto", True),
        ("attendee", "never", False),
    ],
)
async def test_reconnect_on_close_overrides_the_dialect(
    tmp_path: Path, protocol: str, flag: str, reconnects: bool
) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(
            server.url,
            tmp_path,
            *("--protocol", protocol, "--retry-delay", "0.1", "--reconnect-on-close", flag),
        )
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            server.current.ws.close(1000, "bye")
            if reconnects:
                await until_connected(sidecar, server, 2)
                assert await sidecar.stop() == 0
            else:
                assert await sidecar.wait(10) == 0
    assert bool(sidecar.named("retrying")) == reconnects


def test_only_the_telephony_dialects_take_a_clean_close_for_the_end_of_the_call() -> None:
    ending = {name for name, d in dialects.DIALECTS.items() if not d.reconnect_on_clean_close}
    assert ending == {"twilio", "vonage"}
