"""The loop in one test: tone in, messages at the server, bot_output back out."""

from __future__ import annotations

from pathlib import Path

import trio
from support import SidecarProcess, Speaker, WsServer, play, sidecar_args, tone


async def test_tone_round_trip(tmp_path: Path) -> None:
    def echo(server: WsServer, conn: object, message: dict[str, object]) -> None:
        if message["trigger"] == "realtime_audio.mixed":
            data = message["data"]
            assert isinstance(data, dict)
            server.send(
                {
                    "trigger": "realtime_audio.bot_output",
                    "data": {k: data[k] for k in ("chunk", "sample_rate")},
                }
            )

    with trio.fail_after(30), WsServer(on_message=echo) as server:
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path)).start(nursery)
            await sidecar.wait_event("connected")
            out = await trio.open_unix_socket(str(tmp_path / "out.sock"))
            speaker = Speaker(out)
            nursery.start_soon(speaker.serve)
            bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            await play(bot, tone(1000, 1.0))
            await sidecar.stats(lambda e: e["samples_played"] >= 48000)
            assert await sidecar.stop() == 0
            nursery.cancel_scope.cancel()
    assert len(server.audio()) == 16000 * 2
