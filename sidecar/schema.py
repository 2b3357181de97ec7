"""Generate proto/schema/*.json from the message and event Structs (`make proto`).

`python -m sidecar.schema DIR` writes the files; `--check` exits 1 when the
checked-in files differ from what the code would generate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from sidecar import config, events, messages

SCHEMAS: dict[str, Any] = {
    "server-message.schema.json": messages.ServerMessage,
    "sidecar-message.schema.json": messages.SidecarMessage,
    "websocket-settings.schema.json": config.WebsocketSettings,
    "events.schema.json": events.Event,
}


def render(name: str) -> str:
    schema = msgspec.json.schema(SCHEMAS[name])
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://audio-sidecar.dev/proto/v{messages.PROTOCOL_VERSION}/{name}",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.schema")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name in SCHEMAS:
        path: Path = args.directory / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale schema files (run `make proto`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
