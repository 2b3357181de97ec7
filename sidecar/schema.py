"""Generate proto/schema/*.json from the message and event Structs (`make proto`).

`python -m sidecar.schema DIR` writes the files; `--check` exits 1 when the
checked-in files differ from what the code would generate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

import msgspec

from sidecar import commands, config, events, messages

SCHEMAS: dict[str, Any] = {
    "server-message.schema.json": messages.ServerMessage,
    "sidecar-message.schema.json": messages.SidecarMessage,
    "websocket-settings.schema.json": config.WebsocketSettings,
    "events.schema.json": events.Event,
    # What a bot writes on the control channel, one object per line; `id` may
    # be left out (the only field with a default), so these stay optional.
    "commands.schema.json": commands.Command,
}


def _always_present(schema: dict[str, Any], union: Any) -> None:
    """Mark every field of these Structs required and drop their defaults.

    msgspec calls a field with a default optional, but a Struct without
    `omit_defaults` encodes every field: to a reader, each one is always there
    (null when it has no value), and a default is a constructor's convenience,
    not part of the wire format.
    """
    for struct in get_args(union):
        config = struct.__struct_config__
        if config.omit_defaults:
            raise ValueError(f"{struct.__name__} omits defaults: its shape would vary")
        node = schema["$defs"][struct.__name__]
        names = [config.tag_field] if config.tag_field else []
        names += [f.encode_name for f in msgspec.structs.fields(struct)]
        node["required"] = names
        for prop in node["properties"].values():
            prop.pop("default", None)


def render(name: str) -> str:
    schema = msgspec.json.schema(SCHEMAS[name])
    if SCHEMAS[name] is events.Event:
        _always_present(schema, events.Event)
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
