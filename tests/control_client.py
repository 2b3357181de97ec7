"""The bot's end of the control socket, for the tests that drive the channel."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from support import Json

READ_S = 10.0


class Client:
    """The bot's end of the control socket: commands out, event lines in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.raw = b""
        self.lines: list[bytes] = []

    async def send(self, command: Json | bytes) -> None:
        data = command if isinstance(command, bytes) else json.dumps(command).encode() + b"\n"
        await self.stream.send_all(data)

    @property
    def events(self) -> list[Json]:
        return [json.loads(line) for line in self.lines]

    async def wait(self, name: str, **fields: object) -> Json:
        with trio.fail_after(READ_S):
            while True:
                for event in self.events:
                    if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                        return event
                data = await self.stream.receive_some(65536)
                assert data, f"the sidecar closed the control connection before {name} {fields}"
                self.raw += data
                *done, rest = self.raw.split(b"\n")
                self.lines += done
                self.raw = rest


async def connect(path: Path) -> Client:
    with trio.fail_after(5):
        return Client(await trio.open_unix_socket(str(path)))
