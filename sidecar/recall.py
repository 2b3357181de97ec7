"""The shell that feeds the conversation record (sidecar/memory.py) from the run.

The facts flow one way, into the record: what the link delivers (transcripts,
the agent's audio and its segments, the meeting starting to speak, tool calls,
a session's end), and what the downlink and the control plane hand the link
(a clear with what of the reply was heard, a tool's result, the bot's accepted
`say`, `user_text` and `context`). The link reads a snapshot when it opens a
new connection; nothing here sends or waits.
"""

from __future__ import annotations

import collections
import math
from typing import Final

from sidecar.dialects.base import (
    AddContext,
    ClearedOut,
    Control,
    Heard,
    Incoming,
    Notice,
    PlayAudio,
    Say,
    SessionEnded,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
    UserSpeaking,
    UserText,
)
from sidecar.events import Transcript
from sidecar.memory import CommandKind, ConversationRecord, MemorySnapshot
from sidecar.pcm import SAMPLE_BYTES

MAX_SEGMENTS: Final = 64
"""Replies whose audio length is kept (a barge-in only ever cuts a recent one)."""
SLOW_SPEECH_CHARS_PER_S: Final = 12.0
"""Where the vendor sends a reply's whole text before its audio (Deepgram), a
cut reply's full length is unknown: it is taken as at least its text spoken
this slowly (agents' voices speak some 14 to 18 characters a second), so the
heard share errs short, never long."""


class Recall:
    def __init__(self, record: ConversationRecord) -> None:
        self.record = record
        self._audio_ms: collections.OrderedDict[str, float] = collections.OrderedDict()
        """Per segment: the agent's audio received for it, in ms."""
        self._said: collections.OrderedDict[str, None] = collections.OrderedDict()
        """Segments whose reply has its transcript already: a second one is the
        vendor's correction of a cut reply (ElevenLabs), already as heard."""
        self._heard_ms: dict[str, int] = {}
        """Segments a clear cut: what of each was heard."""
        self._unkeyed_ms = 0.0
        """The agent's audio received for its latest reply, where the dialect
        names no segments (Deepgram): a clear's cut is measured against it."""
        self._unkeyed_chars = 0
        """The length of that reply's text."""

    def snapshot(self) -> MemorySnapshot:
        return self.record.snapshot()

    def incoming(self, item: Incoming) -> None:
        """A fact from the agent's side, as the link delivers it."""
        record = self.record
        match item:
            case PlayAudio(pcm=pcm, rate=rate, segment=segment):
                if segment is None:
                    self._unkeyed_ms += len(pcm) * (1000.0 / SAMPLE_BYTES) / rate
                else:
                    self._audio(segment, len(pcm) * (1000.0 / SAMPLE_BYTES) / rate)
            case Notice(event=Transcript(role="user", text=text, item_id=item_id)):
                record.user_said(text, item_id)
            case Notice(event=Transcript(text=text, segment=segment)) if segment in self._said:
                # Already what was heard: it replaces the text, not cut again.
                record.agent_corrected(segment, text)
            case Notice(event=Transcript(text=text, segment=segment)):
                if segment is not None:
                    self._said[segment] = None
                    while len(self._said) > MAX_SEGMENTS:
                        self._said.popitem(last=False)
                if segment is None:
                    # A new reply's text: its audio follows.
                    self._unkeyed_ms, self._unkeyed_chars = 0.0, len(text.strip())
                record.agent_said(text, segment)
            case UserSpeaking(item=key) if key is not None:
                record.user_started(key)
            case ToolCallIn(call_id=call_id, name=name, arguments_json=arguments):
                record.tool_called(call_id, name, arguments)
            case ToolCallCancelledIn(call_id=call_id):
                record.tool_cancelled(call_id)
            case SessionEnded():
                record.session_ended()
                self._audio_ms.clear()
                self._said.clear()
                self._heard_ms.clear()

    def clearing(self, unplayed_ms: float) -> None:
        """The bot's playout is about to be cleared with `unplayed_ms` of the
        agent's audio not yet played. Where the dialect names no segments, the
        clear's `heard` figure is None, so the cut of the latest reply is
        measured here: what it received less what never played."""
        received, self._unkeyed_ms = self._unkeyed_ms, 0.0
        if received > 0 and unplayed_ms > 0:
            # Rounded so as never to claim more heard than was.
            heard = max(0, math.floor(received - unplayed_ms))
            spoken_ms = self._unkeyed_chars * 1000 / SLOW_SPEECH_CHARS_PER_S
            self.record.agent_cut(None, heard, math.ceil(max(received, spoken_ms)))

    def outgoing(self, item: Control) -> None:
        """What the downlink or the control plane hands the link."""
        record = self.record
        match item:
            case ClearedOut(heard=Heard(segment=segment, ms=ms)):
                self._heard_ms[segment] = ms
                record.agent_cut(segment, ms, round(self._audio_ms.get(segment, ms)))
            case ToolResult(call_id=call_id, output=output):
                record.tool_answered(call_id, output)
            case Say(text=text):
                record.commanded(CommandKind.SAY, text)
            case UserText(text=text):
                record.commanded(CommandKind.USER_TEXT, text)
            case AddContext(text=text):
                record.commanded(CommandKind.CONTEXT, text)

    def _audio(self, segment: str, ms: float) -> None:
        total = self._audio_ms.get(segment)
        if total is None:
            self.record.agent_started(segment)
            total = 0.0
            while len(self._audio_ms) >= MAX_SEGMENTS:
                old, _ = self._audio_ms.popitem(last=False)
                self._heard_ms.pop(old, None)
        self._audio_ms[segment] = total + ms
        heard = self._heard_ms.get(segment)
        if heard is not None:
            # More of a cut reply came after the cut: its heard share is smaller.
            self.record.agent_cut(segment, heard, round(total + ms))
