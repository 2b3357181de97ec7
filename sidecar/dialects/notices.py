"""What the agent dialects (openai-realtime, deepgram-agent) share.

1. Their stdout events (`transcript`, `agent_error`, `agent_warning`,
   `agent_event`, defined in `sidecar.events`): field values are the
   vendor's own strings, passed through unchanged, so a bot can look a code
   up in the vendor's docs.
2. Decoding a JSON event tagged by `type` (`sidecar.dialects.jsonwire`,
   re-exported here).
3. Quoting the user's --session values in warnings, as compact JSON.
"""

from __future__ import annotations

import json

from sidecar.dialects.base import Notice
from sidecar.dialects.jsonwire import Unknown, decode_event
from sidecar.events import AgentError, AgentEvent, AgentWarning, Transcript

AgentNotice = Transcript | AgentError | AgentWarning | AgentEvent


def notice(event: AgentNotice) -> Notice:
    return Notice(event)


def show(value: object) -> str:
    """A --session value as the user wrote it (compact JSON), for a warning."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


__all__ = [
    "AgentError",
    "AgentEvent",
    "AgentNotice",
    "AgentWarning",
    "Transcript",
    "Unknown",
    "decode_event",
    "notice",
    "show",
]
