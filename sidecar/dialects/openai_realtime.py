"""OpenAI Realtime (GA interface), spoken directly: no bridge server.

Up: `session.update` once per connection (the user's `--session` object with
the audio formats this dialect needs), then `input_audio_buffer.append` per
chunk. Down: `response.output_audio.delta` is played; every delta carries a
segment naming its item and content part, so that when the meeting barges in
(`input_audio_buffer.speech_started`) the link can say how much of that part
was *heard*, and `conversation.item.truncate` tells the model exactly that,
never more than it sent (the API rejects that). Transcripts (of the agent's
audio or text replies, and of the user when the session transcribes input)
and `error` become stdout events; every other event type is ignored and
counted. Binary frames are read as JSON too; the API sends none.

The bot's commands: a tool call is a `function_call` item done with status
`completed`; its answer is a `function_call_output` item, and once every call
of that response is answered and the response is done, one `response.create`
makes the model go on. Only one response may be active at a time (another
`response.create` gets `conversation_already_has_active_response`), so the
session tracks the active one and defers every `response.create` it owes
until that is done (`replies`). `say` is a `response.create` whose
instructions ask for the text: the model speaks it, not necessarily verbatim.
`instructions` and `context` are remembered by the dialect (`Briefing`): the
next session's `session.update` starts from them.

The API ends every session after 60 minutes: a close 1001 whose reason says
"maximum duration". `reconnect_at_once` sees it, so the link reconnects with
the same session object at once, if the session lived a quarter of that
(`renew_after_s`); sooner, the close is retried like any failure. The new
session starts with an empty conversation: the model does not remember what
was said before, only what the bot's `instructions` and `context` gave it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final

import msgspec

from sidecar import memory
from sidecar.dialects.base import (
    COMMANDS,
    MIXED,
    AddContext,
    AgentCommand,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    CutAudio,
    Dialect,
    DialectFlag,
    DtmfOut,
    Encodable,
    ErrorOut,
    Heard,
    Incoming,
    Invalid,
    MarkOut,
    Options,
    PlayAudio,
    Say,
    Session,
    SetInstructions,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
    UserSpeaking,
    UserText,
    Wire,
    WireAudio,
)
from sidecar.dialects.briefing import Briefing
from sidecar.dialects.notices import (
    AgentError,
    Transcript,
    Unknown,
    decode_event,
    notice,
    show,
)
from sidecar.events import MemoryRestored
from sidecar.messages import MAX_MESSAGE_BYTES, ErrorCode, MessageError
from sidecar.pcm import SAMPLE_BYTES

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot

RATE: Final = 24000
"""The only PCM rate the Realtime API takes and gives."""
BYTES_PER_MS: Final = RATE * SAMPLE_BYTES // 1000
AUDIO_FORMAT: Final[Mapping[str, object]] = {"type": "audio/pcm", "rate": RATE}
SESSION_CAP_S: Final = 60 * 60.0
"""The API ends every session after this long (1001 "maximum duration")."""
ROTATE_MARGIN_S: Final = 5 * 60.0
"""From 55 minutes on, the sidecar moves to a new session at the first quiet
moment, so the cap itself (which cuts whatever is playing) is rarely met."""
MAX_SEGMENTS: Final = 64
"""Reply parts remembered per connection: a barge-in only ever cuts a recent one."""
MAX_CALLS: Final = 256
"""Tool calls remembered per connection (the control plane answers or forgets
each long before: at most 64 wait for the bot)."""
MAX_DEFERRED: Final = 64
MAX_DEFERRED_BYTES: Final = 1 << 20
"""What held `response.create`s may weigh (a `say` carries its text), like the control lane."""
"""`response.create`s owed at once; beyond that the oldest is dropped (counted)."""
SAY_INSTRUCTIONS: Final = (
    "Say the following to the user, word for word, and nothing else:\n\n{text}"
)
"""How `say` asks the model to speak a text: the API has no verbatim speech."""
ACTIVE_RESPONSE: Final = "conversation_already_has_active_response"


# -- client events (sidecar -> API) ---------------------------------------------------


class _ClientEvent(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class SessionUpdate(_ClientEvent, frozen=True, tag="session.update"):
    session: dict[str, Any]


class InputAudioBufferAppend(_ClientEvent, frozen=True, tag="input_audio_buffer.append"):
    audio: bytes
    """Base64 on the wire, for free."""


class ConversationItemTruncate(_ClientEvent, frozen=True, tag="conversation.item.truncate"):
    item_id: str
    content_index: int
    audio_end_ms: int


class FunctionCallOutput(msgspec.Struct, frozen=True, tag_field="type", tag="function_call_output"):
    call_id: str
    output: str


class InputText(msgspec.Struct, frozen=True, tag_field="type", tag="input_text"):
    text: str


class OutputText(msgspec.Struct, frozen=True, tag_field="type", tag="output_text"):
    """An assistant message's text (the API takes no assistant audio items)."""

    text: str


class MessageItem(msgspec.Struct, frozen=True, tag_field="type", tag="message"):
    role: str
    """`user` (a turn to answer), `system` (context, no turn), or `assistant`
    (an earlier reply, carried into a new session)."""
    content: list[InputText] | list[OutputText]


class ConversationItemCreate(_ClientEvent, frozen=True, tag="conversation.item.create"):
    item: FunctionCallOutput | MessageItem


class ResponseParams(msgspec.Struct, frozen=True, omit_defaults=True):
    instructions: str | None = None
    """This response's instructions, in place of the session's."""


class ResponseCreate(_ClientEvent, frozen=True, omit_defaults=True, tag="response.create"):
    response: ResponseParams | None = None


class ResponseCancel(_ClientEvent, frozen=True, omit_defaults=True, tag="response.cancel"):
    response_id: str | None = None


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | ConversationItemTruncate
    | ConversationItemCreate
    | ResponseCreate
    | ResponseCancel
)


# -- server events (API -> sidecar): only those acted on; fields beyond these are ignored --


class _ServerEvent(msgspec.Struct, frozen=True, tag_field="type"):
    pass


AUDIO_DELTA: Final = "response.output_audio.delta"
AUDIO_DONE: Final = "response.output_audio.done"
SPEECH_STARTED: Final = "input_audio_buffer.speech_started"
OUTPUT_TRANSCRIPT_DONE: Final = "response.output_audio_transcript.done"
OUTPUT_TEXT_DONE: Final = "response.output_text.done"
INPUT_TRANSCRIPT_COMPLETED: Final = "conversation.item.input_audio_transcription.completed"
ERROR: Final = "error"
RESPONSE_CREATED: Final = "response.created"
RESPONSE_DONE: Final = "response.done"
OUTPUT_ITEM_DONE: Final = "response.output_item.done"
SERVER_TYPES: Final = frozenset(
    {
        RESPONSE_CREATED,
        RESPONSE_DONE,
        OUTPUT_ITEM_DONE,
        AUDIO_DELTA,
        AUDIO_DONE,
        SPEECH_STARTED,
        OUTPUT_TRANSCRIPT_DONE,
        OUTPUT_TEXT_DONE,
        INPUT_TRANSCRIPT_COMPLETED,
        ERROR,
    }
)
"""The event types acted on; every other type is ignored (and counted)."""

ContentIndex = Annotated[int, msgspec.Meta(ge=0)]


class OutputAudioDelta(_ServerEvent, frozen=True, tag=AUDIO_DELTA):
    item_id: str
    content_index: ContentIndex
    delta: bytes
    response_id: str | None = None


class StatusDetails(msgspec.Struct, frozen=True):
    type: str | None = None
    reason: str | None = None


class ResponseRef(msgspec.Struct, frozen=True):
    id: str | None = None
    status: str | None = None
    status_details: StatusDetails | None = None


class ResponseCreated(_ServerEvent, frozen=True, tag=RESPONSE_CREATED):
    response: ResponseRef


class ResponseDone(_ServerEvent, frozen=True, tag=RESPONSE_DONE):
    response: ResponseRef


class OutputItem(msgspec.Struct, frozen=True):
    """Any item; only a `function_call`'s fields are read."""

    type: str
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    status: str | None = None


class OutputItemDone(_ServerEvent, frozen=True, tag=OUTPUT_ITEM_DONE):
    item: OutputItem
    response_id: str | None = None


class OutputAudioDone(_ServerEvent, frozen=True, tag=AUDIO_DONE):
    item_id: str
    content_index: ContentIndex


class SpeechStarted(_ServerEvent, frozen=True, tag=SPEECH_STARTED):
    """Nothing in it is needed to stop playback, so nothing may void it: the
    user turn's `item_id` is taken as any value, and used only if a string."""

    item_id: Any = None


class OutputTranscriptDone(_ServerEvent, frozen=True, tag=OUTPUT_TRANSCRIPT_DONE):
    item_id: str
    transcript: str
    content_index: int = 0


class OutputTextDone(_ServerEvent, frozen=True, tag=OUTPUT_TEXT_DONE):
    """A text-only reply (`output_modalities: ["text"]`): its text is the transcript."""

    item_id: str
    text: str


class InputTranscriptCompleted(_ServerEvent, frozen=True, tag=INPUT_TRANSCRIPT_COMPLETED):
    item_id: str
    transcript: str


class ErrorDetail(msgspec.Struct, frozen=True):
    message: str = ""
    type: str | None = None
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


class ErrorEvent(_ServerEvent, frozen=True, tag=ERROR):
    error: ErrorDetail


ServerEvent = (
    ResponseCreated
    | ResponseDone
    | OutputItemDone
    | OutputAudioDelta
    | OutputAudioDone
    | SpeechStarted
    | OutputTranscriptDone
    | OutputTextDone
    | InputTranscriptCompleted
    | ErrorEvent
)

_encoder: Final = msgspec.json.Encoder()
_server_decoder: Final = msgspec.json.Decoder(ServerEvent)


def _weight(create: ResponseCreate) -> int:
    """What a held `response.create` costs against MAX_DEFERRED_BYTES."""
    instructions = create.response.instructions if create.response is not None else None
    return 64 + (len(instructions) if instructions else 0)


def encode(event: ClientEvent) -> str:
    return _encoder.encode(event).decode()


# -- segments: one content part of one reply item --------------------------------------


def segment_id(item_id: str, content_index: int) -> str:
    """`item_id:content_index`; split at the *last* colon, so any item id round-trips."""
    return f"{item_id}:{content_index}"


@dataclass(slots=True)
class _Segment:
    item_id: str
    content_index: int
    received_bytes: int = 0
    done: bool = False
    """`response.output_audio.done` came: the part's audio is complete."""
    cut: bool = False
    """A barge-in came after it started: what still arrives for it is not played."""
    truncated: bool = False

    @property
    def received_ms(self) -> int:
        # Rounded down: the API measures what it sent, and we may not claim more.
        return self.received_bytes // BYTES_PER_MS


@dataclass(slots=True)
class Statistics:
    audio_deltas: int = 0
    audio_bytes: int = 0
    dropped_deltas: int = 0
    """Deltas of a reply part already cut by a barge-in (in flight when it came)."""
    truncates: int = 0
    tool_calls: int = 0
    response_creates: int = 0
    deferred_creates: int = 0
    """`response.create`s held until the active response was done."""
    deferred_dropped: int = 0
    ignored: int = 0
    """Events of a type this dialect does not act on."""
    invalid: int = 0


@dataclass(slots=True)
class _Call:
    name: str
    response_id: str | None
    answered: bool = False


@dataclass(slots=True)
class _Response:
    """A response that made tool calls: the model goes on once all are answered."""

    calls: list[str] = field(default_factory=list)
    done: bool = False


class OpenAIRealtimeSession(Session):
    def __init__(
        self,
        session_object: dict[str, Any],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_segments: int = MAX_SEGMENTS,
        briefing: Briefing | None = None,
        history: MemorySnapshot | None = None,
    ) -> None:
        self._session_object = session_object
        self._briefing = briefing if briefing is not None else Briefing()
        self._history = history
        self._restored: MemoryRestored | None = None
        self._max_bytes = max_message_bytes
        self._max_segments = max_segments
        self._segments: OrderedDict[str, _Segment] = OrderedDict()
        self._expired = False
        self._stats = Statistics()
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._responses: OrderedDict[str | None, _Response] = OrderedDict()
        self._active: str | None = None
        """The response in progress (`response.created` came, `response.done` not yet)."""
        self._requested: ResponseCreate | None = None
        """Our `response.create` whose `response.created` has not come yet."""
        self._last_sent: ResponseCreate | None = None
        """Our latest `response.create`: the one a `conversation_already_has_active_response`
        refuses, as we never send another while one is known to be active."""
        self._deferred: deque[ResponseCreate] = deque()
        self._deferred_bytes = 0
        self._carried: tuple[str, ...] = ()
        """Context texts of earlier sessions that this one's opening put into
        its instructions: they live nowhere else in it."""
        self._owed: list[Wire] = []
        self._cut_responses: deque[str] = deque(maxlen=8)
        """Responses the bot's `clear` cancelled: their late audio is not played."""

    def opening(self) -> Sequence[Wire]:
        # Read now, not when the session was made: what the bot changed since counts.
        session = self._session_object
        briefing = self._briefing
        if briefing.instructions is not None or briefing.contexts:
            base = session.get("instructions")
            prompt = briefing.prompt(base if isinstance(base, str) else None)
            session = session | {"instructions": prompt or ""}
            self._carried = briefing.contexts
        return (encode(SessionUpdate(session=session)), *self._seed())

    def _seed(self) -> list[Wire]:
        """The conversation so far, one item per turn, in order."""
        if self._history is None:
            return []
        wires: list[Wire] = []
        chars = 0
        for turn in memory.carried(self._history):
            match turn:
                case memory.UserTurn(text=text) | memory.CommandTurn(text=text):
                    message = MessageItem(role="user", content=[InputText(text)])
                case memory.AgentTurn():
                    text = memory.spoken(turn)
                    message = MessageItem(role="assistant", content=[OutputText(text)])
                case memory.ToolTurn():
                    text = memory.tool_note(turn)
                    message = MessageItem(role="system", content=[InputText(text)])
            wires.append(encode(ConversationItemCreate(item=message)))
            chars += turn.chars
        self._restored = MemoryRestored(
            turns=len(wires), chars=chars, dropped_turns=self._history.dropped_turns
        )
        return wires

    def restored(self) -> MemoryRestored | None:
        return self._restored

    @property
    def replying(self) -> bool:
        return self._active is not None or self._requested is not None or bool(self._deferred)

    def statistics(self) -> Statistics:
        return replace(self._stats)

    @property
    def commands_dropped(self) -> int:
        return self._stats.deferred_dropped

    def replies(self) -> Sequence[Wire]:
        owed, self._owed = self._owed, []
        return tuple(owed)

    # -- up ----------------------------------------------------------------------

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream == MIXED:
                return (encode(InputAudioBufferAppend(audio=item.pcm)),)
            case ClearedOut(by_bot=True):
                return self._interrupt(item.heard)
            case ClearedOut(heard=Heard() as heard):
                return self._truncate(heard)
            case AudioOut() | ClearedOut() | MarkOut() | DtmfOut() | ErrorOut():
                # One mixed stream only; no marks, DTMF or error replies in this API.
                return ()
            case ToolResult(call_id=call_id, output=output):
                return self._tool_result(call_id, output)
            case Say(text=text):
                params = ResponseParams(instructions=SAY_INSTRUCTIONS.format(text=text))
                return self._create(ResponseCreate(response=params))
            case UserText(text=text):
                message = MessageItem(role="user", content=[InputText(text)])
                created = encode(ConversationItemCreate(item=message))
                return (created, *self._create(ResponseCreate()))
            case AddContext(text=text):
                self._briefing.add_context(text)
                message = MessageItem(role="system", content=[InputText(text)])
                return (encode(ConversationItemCreate(item=message)),)
            case SetInstructions(text=text):
                self._briefing.set_instructions(text)
                # The contexts this session began with are in its instructions
                # only: replacing them alone would make the live agent forget them.
                instructions = "\n\n".join((text, *self._carried))
                update = {"type": "realtime", "instructions": instructions}
                return (encode(SessionUpdate(session=update)),)
            case AgentCommand():
                return ()

    def _tool_result(self, call_id: str, output: str) -> Sequence[Wire]:
        call = self._calls.get(call_id)
        if call is None or call.answered:
            # A call of an earlier connection, cancelled, or answered already:
            # this conversation has no such open call.
            return ()
        call.answered = True
        wires: list[Wire] = [
            encode(ConversationItemCreate(item=FunctionCallOutput(call_id=call_id, output=output)))
        ]
        response = self._responses.get(call.response_id)
        if response is not None and response.done and self._answered(response):
            del self._responses[call.response_id]
            wires += self._create(ResponseCreate())
        return tuple(wires)

    def _answered(self, response: _Response) -> bool:
        return all(call is None or call.answered for call in map(self._calls.get, response.calls))

    def _create(self, create: ResponseCreate) -> Sequence[Wire]:
        """`create` now, or once the active response is done: one at a time."""
        if self._active is None and self._requested is None:
            self._requested = self._last_sent = create
            self._stats.response_creates += 1
            return (encode(create),)
        self._defer(create)
        return ()

    def _defer(self, create: ResponseCreate) -> None:
        if create.response is None and any(d.response is None for d in self._deferred):
            return  # one plain response answers everything waiting for one
        self._stats.deferred_creates += 1
        self._deferred.append(create)
        self._deferred_bytes += _weight(create)
        while len(self._deferred) > MAX_DEFERRED or self._deferred_bytes > MAX_DEFERRED_BYTES:
            self._deferred_bytes -= _weight(self._deferred.popleft())
            self._stats.deferred_dropped += 1

    def _flush(self) -> None:
        if self._active is None and self._requested is None and self._deferred:
            create = self._requested = self._last_sent = self._deferred.popleft()
            self._deferred_bytes -= _weight(create)
            self._stats.response_creates += 1
            self._owed.append(encode(create))

    def _interrupt(self, heard: Heard | None) -> Sequence[Wire]:
        """The bot's `clear`: what the meeting heard, and stop the model too."""
        wires = list(self._truncate(heard)) if heard is not None else []
        for segment in self._segments.values():
            segment.cut = True
        if self._active is not None:
            self._cut_responses.append(self._active)
            wires.append(encode(ResponseCancel(response_id=self._active)))
        return tuple(wires)

    def _truncate(self, heard: Heard) -> Sequence[Wire]:
        segment = self._segments.get(heard.segment)
        if segment is None or segment.truncated:
            # Not from this connection (an item of an earlier session, or long
            # forgotten), or already cut: the model has nothing to correct.
            return ()
        received = segment.received_ms
        if segment.done and heard.ms >= received:
            return ()  # heard in full: there is nothing to take back
        segment.truncated = True
        self._stats.truncates += 1
        end = min(max(heard.ms, 0), received)
        message = ConversationItemTruncate(
            item_id=segment.item_id, content_index=segment.content_index, audio_end_ms=end
        )
        return (encode(message),)

    # -- down --------------------------------------------------------------------

    def receive(self, message: Wire) -> Sequence[Incoming]:
        decoded = decode_event(_server_decoder, SERVER_TYPES, message, self._max_bytes)
        match decoded:
            case MessageError():
                self._stats.invalid += 1
                return (Invalid(decoded),)
            case Unknown():
                self._stats.ignored += 1
                return ()
            case ResponseCreated(response=response):
                self._active = response.id or ""
                self._requested = None
                return ()
            case OutputItemDone(item=item, response_id=response_id):
                return self._item_done(item, response_id)
            case ResponseDone(response=response):
                return self._response_done(response)
            case OutputAudioDelta():
                return self._delta(decoded)
            case OutputAudioDone(item_id=item_id, content_index=index):
                segment = self._segments.get(segment_id(item_id, index))
                if segment is not None:
                    segment.done = True
                return ()
            case SpeechStarted(item_id=item_id):
                for segment in self._segments.values():
                    segment.cut = True
                # The user's turn takes its place now: its transcript comes later,
                # often after the reply to it has begun.
                key = item_id if isinstance(item_id, str) else None
                return (ClearPlayout(), UserSpeaking(key))
            case OutputTranscriptDone(item_id=item_id, content_index=index, transcript=text):
                said = Transcript(
                    role="assistant", text=text, item_id=item_id, segment=segment_id(item_id, index)
                )
                return (notice(said),)
            case OutputTextDone(item_id=item_id, text=text):
                return (notice(Transcript(role="assistant", text=text, item_id=item_id)),)
            case InputTranscriptCompleted(item_id=item_id, transcript=text):
                return (notice(Transcript(role="user", text=text, item_id=item_id)),)
            case ErrorEvent(error=error):
                if error.code == "session_expired":
                    self._expired = True
                elif error.code == ACTIVE_RESPONSE and self._last_sent is not None:
                    # Our response.create met one we did not know of yet (server
                    # VAD's, whose response.created we took for ours): it goes
                    # again once that one is done (its response.done will come).
                    self._deferred.appendleft(self._last_sent)
                    self._deferred_bytes += _weight(self._last_sent)
                    self._last_sent = self._requested = None
                elif self._requested is not None and self._active is None:
                    # Perhaps our response.create failed (nothing names the event
                    # an error is about): waiting for its response.created could
                    # hold every later create for good. If it did not fail, the
                    # next create meets it and comes back by the branch above.
                    self._requested = None
                    self._flush()
                event = AgentError(
                    message=error.message,
                    code=error.code,
                    type=error.type,
                    param=error.param,
                    event_id=error.event_id,
                )
                return (notice(event),)

    def _item_done(self, item: OutputItem, response_id: str | None) -> Sequence[Incoming]:
        if item.type != "function_call" or item.status != "completed":
            # A call cut short (incomplete) was never made; other items are not calls.
            return ()
        if not item.call_id or item.name is None:
            self._stats.invalid += 1
            missing = "call_id" if not item.call_id else "name"
            text = f"`item.{missing}`: a function_call item needs one"
            return (Invalid(MessageError(ErrorCode.INVALID_FIELD, text, OUTPUT_ITEM_DONE)),)
        rid = response_id if response_id is not None else self._active
        self._calls[item.call_id] = _Call(item.name, rid)
        while len(self._calls) > MAX_CALLS:
            self._calls.popitem(last=False)
        response = self._responses.get(rid)
        if response is None:
            response = self._responses[rid] = _Response()
            while len(self._responses) > MAX_CALLS:
                self._responses.popitem(last=False)
        if len(response.calls) >= MAX_CALLS:
            # A response that never ends must not grow its list for ever: a
            # call forgotten by `_calls` counts as answered anyway.
            response.calls = [c for c in response.calls if c in self._calls]
        response.calls.append(item.call_id)
        self._stats.tool_calls += 1
        return (ToolCallIn(item.call_id, item.name, item.arguments or ""),)

    def _response_done(self, done: ResponseRef) -> Sequence[Incoming]:
        if self._active is None or done.id is None or done.id == self._active:
            self._active = None
        out: list[Incoming] = []
        response = self._responses.get(done.id)
        if response is not None:
            if done.status == "completed":
                response.done = True
                if self._answered(response):
                    del self._responses[done.id]
                    self._defer(ResponseCreate())  # sent by the flush just below
            else:
                # Cancelled, incomplete or failed: the model will not wait for these.
                del self._responses[done.id]
                details = done.status_details
                reason = (
                    "interrupted"
                    if details is not None and details.reason == "turn_detected"
                    else "cancelled"
                )
                for call_id in response.calls:
                    call = self._calls.pop(call_id, None)
                    if call is not None and not call.answered:
                        out.append(ToolCallCancelledIn(call_id, reason))
        self._flush()
        return out

    def _delta(self, event: OutputAudioDelta) -> Sequence[Incoming]:
        pcm = event.delta
        if len(pcm) % SAMPLE_BYTES:
            self._stats.invalid += 1
            error = MessageError(
                ErrorCode.ODD_LENGTH,
                f"`delta` decodes to {len(pcm)} bytes; 16-bit PCM needs an even count",
                AUDIO_DELTA,
            )
            return (Invalid(error),)
        key = segment_id(event.item_id, event.content_index)
        segment = self._segment(key, event.item_id, event.content_index)
        # Counted even when not played: the API measures truncation against what it sent.
        segment.received_bytes += len(pcm)
        self._stats.audio_deltas += 1
        self._stats.audio_bytes += len(pcm)
        if segment.cut or event.response_id in self._cut_responses:
            self._stats.dropped_deltas += 1
            return (CutAudio(len(pcm) // SAMPLE_BYTES, RATE),) if pcm else ()
        if not pcm:
            return ()
        return (PlayAudio(pcm, RATE, key),)

    def _segment(self, key: str, item_id: str, content_index: int) -> _Segment:
        segment = self._segments.get(key)
        if segment is None:
            segment = self._segments[key] = _Segment(item_id, content_index)
            while len(self._segments) > self._max_segments:
                self._segments.popitem(last=False)
        return segment

    def reconnect_at_once(self, code: int | None, reason: str) -> bool:
        # OpenAI documents the 60-minute limit, with no warning before it; users
        # see close 1001 "Your session hit the maximum duration of 60 minutes."
        # and some see an `error` with code session_expired first. Only a close
        # frame ends a session: a connection lost after that error is a failure.
        if self._expired and code in (1000, 1001):
            return True
        return code == 1001 and "maximum duration" in reason.lower()


# -- the user's session object ------------------------------------------------------------


BETA_NAMES: Final[Mapping[str, str]] = {
    "modalities": "output_modalities",
    "voice": "audio.output.voice",
    "speed": "audio.output.speed",
    "input_audio_format": "audio.input.format",
    "output_audio_format": "audio.output.format",
    "turn_detection": "audio.input.turn_detection",
    "input_audio_transcription": "audio.input.transcription",
    "input_audio_noise_reduction": "audio.input.noise_reduction",
    "max_response_output_tokens": "max_output_tokens",
}
"""Beta-interface session fields and where the GA interface moved them."""


@dataclass(frozen=True, slots=True)
class Prepared:
    session: dict[str, Any]
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class _Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare_session(user: object) -> Prepared:
    """The `session` of our `session.update`: the user's object with our audio formats."""
    report = _Report()
    if not isinstance(user, dict):
        report.problems.append(
            f"--session must be a JSON object (a Realtime session), not {_json_type(user)}"
        )
        user = {}
    typ = user.get("type")
    if typ is not None and typ != "realtime":
        report.warnings.append(
            f'--session: `type` {show(typ)} replaced by "realtime": '
            "the sidecar needs a speech-to-speech session"
        )
    for name, ga_name in BETA_NAMES.items():
        if name in user:
            report.problems.append(
                f"--session: `{name}` is a beta-interface field; the GA interface "
                f"takes `{ga_name}` (the API would reject the whole session.update)"
            )
    session: dict[str, Any] = {"type": "realtime"}
    for key, value in user.items():
        if key != "type":
            session[key] = value
    session["audio"] = _audio(user.get("audio", {}), report)
    _behaviour(session, report)
    return Prepared(session, tuple(report.problems), tuple(report.warnings))


def _audio(audio: object, report: _Report) -> dict[str, Any]:
    if not isinstance(audio, dict):
        report.problems.append(f"--session: `audio` must be an object, not {_json_type(audio)}")
        audio = {}
    merged: dict[str, Any] = dict(audio)
    for direction, verb in (("input", "sends"), ("output", "plays")):
        part = audio.get(direction, {})
        if not isinstance(part, dict):
            report.problems.append(
                f"--session: `audio.{direction}` must be an object, not {_json_type(part)}"
            )
            part = {}
        given = part.get("format")
        if given is not None and not _is_our_format(given):
            report.warnings.append(
                f"--session: `audio.{direction}.format` {show(given)} replaced by "
                f"{show(AUDIO_FORMAT)}: the sidecar {verb} 24 kHz 16-bit PCM"
            )
        merged[direction] = {"format": dict(AUDIO_FORMAT)} | {
            k: v for k, v in part.items() if k != "format"
        }
    return merged


def _is_our_format(given: object) -> bool:
    # The API's own default rate for audio/pcm is 24000, so leaving it out agrees.
    return (
        isinstance(given, dict)
        and given.get("type") == "audio/pcm"
        and given.get("rate", RATE) == RATE
        and set(given) <= {"type", "rate"}
    )


def _behaviour(session: dict[str, Any], report: _Report) -> None:
    """Settings that are valid but leave the sidecar's user without an agent that talks."""
    audio_input = session["audio"]["input"]
    if "turn_detection" in audio_input:
        detection = audio_input["turn_detection"]
        if detection is None:
            report.warnings.append(
                "--session: turn detection is off (`audio.input.turn_detection` null): the "
                "model answers the meeting's audio only after a `response.create`, which the "
                "sidecar sends only for the bot's `say`, `user_text` and `tool_result`"
            )
        elif isinstance(detection, dict) and detection.get("create_response") is False:
            report.warnings.append(
                "--session: `audio.input.turn_detection.create_response` is false: the model "
                "answers the meeting's audio only after a `response.create`, which the sidecar "
                "sends only for the bot's `say`, `user_text` and `tool_result`"
            )
    modalities = session.get("output_modalities")
    if isinstance(modalities, list) and "audio" not in modalities:
        report.warnings.append(
            '--session: `output_modalities` has no "audio": the agent replies in text '
            "only and the bot plays nothing (transcripts still arrive)"
        )


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) else type(value).__name__


# -- the dialect ------------------------------------------------------------------------


class OpenAIRealtime(Dialect):
    name: ClassVar[str] = "openai-realtime"
    default_url: ClassVar[str | None] = "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    auth_env: ClassVar[str | None] = "OPENAI_API_KEY"
    # Azure OpenAI's key header: OPENAI_API_KEY is not sent beside it.
    auth_alternatives: ClassVar[tuple[str, ...]] = ("api-key",)
    summary: ClassVar[str] = (
        "OpenAI's Realtime API (and the compatible Azure OpenAI and xAI, with --url)"
    )
    flags: ClassVar[tuple[DialectFlag, ...]] = (
        DialectFlag("--session", "the session object of session.update"),
    )
    server_audio: ClassVar[str] = "response.output_audio.delta"
    # A quarter of the cap: a session-length close sooner than that is no
    # session's end but a server closing early, retried like any failure.
    renew_after_s: ClassVar[float | None] = SESSION_CAP_S / 4
    session_cap_s: ClassVar[float | None] = SESSION_CAP_S
    rotate_margin_s: ClassVar[float] = ROTATE_MARGIN_S
    commands: ClassVar[frozenset[str]] = frozenset(COMMANDS.values())

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._prepared = prepare_session(options.session)
        self.briefing = Briefing()
        """What the bot's `instructions` and `context` changed, for every later session."""

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(RATE)

    def problems(self) -> Sequence[str]:
        return self._prepared.problems

    def warnings(self) -> Sequence[str]:
        return self._prepared.warnings

    @property
    def commands_dropped(self) -> int:
        return self.briefing.contexts_dropped

    def session(self, history: MemorySnapshot | None = None) -> OpenAIRealtimeSession:
        return OpenAIRealtimeSession(
            self._prepared.session,
            max_message_bytes=self.options.max_message_bytes,
            briefing=self.briefing,
            history=history,
        )
