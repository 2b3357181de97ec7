"""Where a tool's findings go: JSON lines for scripts, plain sentences for people."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import msgspec

_encoder = msgspec.json.Encoder()


class Report:
    """`event()` writes one JSON object per line to `json_out` and, when given a
    sentence, that sentence to `text_out`. Either sink may be None (silent)."""

    def __init__(self, json_out: TextIO | None, text_out: TextIO | None, prefix: str = "") -> None:
        self.json_out = json_out
        self.text_out = text_out
        self.prefix = prefix

    @classmethod
    def standard(cls, prefix: str) -> Report:
        return cls(sys.stdout, sys.stderr, prefix)

    @classmethod
    def silent(cls) -> Report:
        return cls(None, None)

    def event(self, name: str, text: str | None = None, /, **fields: Any) -> None:
        if self.json_out is not None:
            record = {"event": name, "ts_ms": time.time_ns() // 1_000_000, **fields}
            _write(self.json_out, _encoder.encode(record).decode())
        if text is not None:
            self.say(text)

    def say(self, text: str) -> None:
        if self.text_out is not None:
            _write(self.text_out, f"{self.prefix}{text}")


def _write(stream: TextIO, line: str) -> None:
    try:
        stream.write(line + "\n")
        stream.flush()
    except (BrokenPipeError, ValueError):
        # Whoever read our output went away; the tool's work goes on.
        pass
