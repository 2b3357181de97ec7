"""What the bot told an agent that must outlive one connection (the agent dialects).

The `instructions` and `context` commands change the agent's session; a
reconnect (the vendor's session cap, a dropped link) starts a new one from
the `--session` object, which would silently forget them. So the dialect (one
per run) keeps a `Briefing`, every session updates it as it *sends* such a
command, and a new session's opening starts from it.

It is not the conversation (`sidecar.memory` keeps what was said): only what
stands for every session, the way the --session object does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

MAX_CONTEXT_BYTES: Final = 64 * 1024
"""Context text carried into a new session (UTF-8 bytes); the oldest goes first."""
MAX_CONTEXTS: Final = 256
"""Context texts carried, however short: each is a paragraph of every new prompt."""


@dataclass(slots=True)
class Briefing:
    instructions: str | None = None
    """The bot's last `instructions`; None: the --session object's own."""
    max_context_bytes: int = MAX_CONTEXT_BYTES
    max_contexts: int = MAX_CONTEXTS
    _contexts: deque[str] = field(default_factory=deque)
    _context_bytes: int = 0
    contexts_dropped: int = 0
    """Context texts forgotten to stay within `max_context_bytes` and
    `max_contexts` (or larger than the byte bound alone)."""

    def set_instructions(self, text: str) -> None:
        self.instructions = text

    def add_context(self, text: str) -> None:
        size = len(text.encode())
        if size > self.max_context_bytes:
            self.contexts_dropped += 1
            return
        self._contexts.append(text)
        self._context_bytes += size
        while (
            self._context_bytes > self.max_context_bytes or len(self._contexts) > self.max_contexts
        ):
            self._context_bytes -= len(self._contexts.popleft().encode())
            self.contexts_dropped += 1

    @property
    def contexts(self) -> tuple[str, ...]:
        return tuple(self._contexts)

    def prompt(self, base: str | None) -> str | None:
        """The instructions a new session starts with: the bot's (else `base`,
        the user's own), then every remembered context text, in order."""
        head = self.instructions if self.instructions is not None else base
        parts = [head] if head else []
        parts += self._contexts
        if not parts:
            return head
        return "\n\n".join(parts)
