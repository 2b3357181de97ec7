"""An EventLog that keeps the events themselves, for in-process assertions."""

from __future__ import annotations

import io
from typing import TypeVar

from sidecar import events

E = TypeVar("E")


class RecordedLog(events.EventLog):
    def __init__(self) -> None:
        super().__init__(io.BytesIO())
        self.events: list[events.Event] = []

    def emit(self, event: events.Event) -> None:
        self.events.append(event)

    def named(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]
