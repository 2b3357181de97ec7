"""The one redactor: every secret the run knows, hidden from everything printed.

Everything that reaches stdout (events) or stderr (log lines, ours and the
libraries') passes through one Redactor, built once per run from the
configuration and the environment: header values, URL credentials and query
values, and every dialect's credential variable (OPENAI_API_KEY,
DEEPGRAM_API_KEY, TWILIO_AUTH_TOKEN: the list comes from the dialects), set or
not for the protocol in use, since a server may echo any of them.

A server that echoes a token back ("token abc… expired") drops the "Bearer "
before it, so each secret's long words are secrets too. Text we cut (a
rejection's body) may end, or start, inside a secret: an 8-character or longer
fragment of one at a cut edge is hidden as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from sidecar import events

MASK: Final = "***"
FRAGMENT_CHARS: Final = 8
"""A piece of a secret this long, at a cut edge, is hidden; shorter ones are
too common to mean anything (and hiding them would garble ordinary text)."""


def secret_words(found: Iterable[str]) -> tuple[str, ...]:
    """The secrets, and the long words inside them, longest first, so a
    secret that contains another is hidden whole."""
    secrets = {s for s in found if s}
    words = {w for secret in secrets for w in secret.split() if len(w) >= FRAGMENT_CHARS}
    return tuple(sorted(secrets | words, key=lambda s: (-len(s), s)))


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.words = secret_words(secrets)
        self._base = self.words

    def connection_secrets(self, secrets: Iterable[str]) -> None:
        """Secrets of the current connection alone (a signed URL's token),
        hidden besides the run's; they replace the previous connection's, so
        reconnecting for days keeps the list the size it was."""
        self.words = secret_words((*self._base, *secrets))

    @classmethod
    def for_run(cls, configured: Iterable[str], environ: Mapping[str, str]) -> Redactor:
        """`configured`: config.secrets(); plus every dialect's credential variable."""
        from sidecar.dialects import DIALECTS

        names = {name for d in DIALECTS.values() for name in d.credential_envs()}
        found = [*configured, *(environ.get(name, "") for name in sorted(names))]
        # A token is used stripped (the dialects strip it): hide both spellings.
        found += [s.strip() for s in found]
        return cls(s for s in found if len(s.strip()) >= 4)

    def __call__(self, text: str) -> str:
        for word in self.words:
            if word in text:
                text = text.replace(word, MASK)
        return text

    def edges(self, text: str) -> str:
        """Hide a fragment of a secret (FRAGMENT_CHARS or more) that `text`
        ends or starts with: what is left of a secret a cut went through."""
        for word in self.words:
            longest = min(len(word) - 1, len(text))
            for n in range(longest, FRAGMENT_CHARS - 1, -1):
                if text.endswith(word[:n]):
                    text = text[:-n] + MASK
                    break
            longest = min(len(word) - 1, len(text))
            for n in range(longest, FRAGMENT_CHARS - 1, -1):
                if text.startswith(word[-n:]):
                    text = MASK + text[n:]
                    break
        return text

    def cut(self, text: str, limit: int) -> str:
        """`text` (itself maybe cut at its end) redacted, then at most `limit`
        characters: redacted before the cut, so no secret straddles it."""
        text = self.edges(self(text))
        if len(text) <= limit:
            return text
        return self.edges(text[: limit - 1]) + "…"

    def event(self, event: events.Event) -> events.Event:
        """The event with every text field redacted (only server text can
        carry a secret, but which fields carry it is not this module's to know)."""
        if not self.words:
            return event
        changed: dict[str, str] = {}
        for name in event.__struct_fields__:
            value = getattr(event, name)
            if isinstance(value, str):
                clean = self(value)
                if clean is not value and clean != value:
                    changed[name] = clean
        return msgspec.structs.replace(event, **changed) if changed else event


__all__ = ["FRAGMENT_CHARS", "MASK", "Redactor", "secret_words"]
