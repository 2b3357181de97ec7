"""Google's Gemini Live API (BidiGenerateContent), spoken directly: no bridge server.

Up: one `setup` per connection (the user's `--session` object: model, system
instruction, tools, voice...), with what the sidecar needs set by it: audio
replies only, both transcriptions, and session resumption. The API wants
nothing else before its `setupComplete`, so `audio_ready` waits for it, and
what the bot commands meanwhile is held and sent right after it (behind the
seeded history: audio waits until the link has taken both as `replies`). Then
`realtimeInput.audio`, 16 kHz 16-bit PCM (`audio/pcm;rate=16000`).

Down: every message is JSON (the service sends it in binary frames; text is
read alike). `serverContent.modelTurn.parts[].inlineData` is the voice, 24 kHz
PCM (the part's mimeType says the rate; every part of a message is played);
`interrupted` is a barge-in: the playout is cleared and what is still in
flight of that turn is dropped (counted) until its `turnComplete`. The
transcriptions come in pieces; each side's pieces are joined into one
`transcript` event per turn: the agent's at `generationComplete`,
`turnComplete` or `interrupted` (what it had said until then), the user's
as soon as the agent's turn starts (or at `turnComplete`, or `finished`).
Every reply is one segment (`gemini-N`, numbered over the run), which the
agent's transcript names (`segment`: Gemini has no item ids), so the
conversation record keeps of a cut reply what the meeting heard.

Memory (`--memory on`; off, no handle is asked for or carried): the server
hands out resumption handles (`sessionResumptionUpdate`);
the dialect keeps the newest for the run, and a new connection's setup
carries it (`sessionResumption.handle`): the server goes on with the same
conversation. A handle a setup carried without getting `setupComplete` is
not tried again. Without a handle, the conversation record the link passes to
`session(history)` is the new session's initial history
(`historyConfig.initialHistoryInClientContent`, then one `clientContent` of
its turns with `turnComplete`: the model does not answer it).

`goAway` is the server's notice that the connection ends soon: an
`agent_event` for the bot, and `SessionExpiring(timeLeft)`, on which the link
moves to a new connection (with the handle) at a quiet moment before then;
the first piece of the meeting's transcription, and `interrupted`, say the
meeting is speaking (`UserSpeaking`: no quiet moment). Should the close come
first, it is the routine end of a connection, reconnected at once if the
connection lived `renew_after_s`. The session says what its opening restores
(`restored()`, a `memory_restored` event): the record's size, whether by the
handle or as initial history.

The bot's commands: `tool_result` is `toolResponse.functionResponses` (a JSON
object output is the `response`, anything else `{"result": text}`);
`user_text` a user turn in `clientContent` with `turnComplete`;
`instructions` and `context` are `contextUpdate.systemInstruction` with the
whole prompt: the --session's instruction (or the bot's last `instructions`)
then every context text, as a new session's setup carries them (`Briefing`),
since a system instruction replaces the one before. `say` is refused: the
API has no verbatim speech, and the only way to make the model talk is a
user turn, which would put words in the meeting's mouth (`user_text` does
that, knowingly). The bot's `clear` has no message (the API has no
truncation): the rest of the cut turn's audio is dropped as it comes.
"""

from __future__ import annotations

import binascii
import json
import re
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgspec
from msgspec import UNSET, UnsetType

from sidecar import events
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
    Incoming,
    Invalid,
    MarkOut,
    Options,
    Outgoing,
    PlayAudio,
    Say,
    Session,
    SessionExpiring,
    SetInstructions,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
    UserSpeaking,
    UserText,
    Utf8Text,
    Wire,
    WireAudio,
)
from sidecar.dialects.briefing import Briefing
from sidecar.dialects.notices import AgentEvent, Transcript, notice, show
from sidecar.messages import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    MessageError,
    decode_json,
    validation_parts,
)
from sidecar.pcm import SAMPLE_BYTES

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot

INPUT_RATE: Final = 16000
"""The rate the Live API takes: "raw 16-bit PCM audio at 16kHz little-endian"."""
OUTPUT_RATE: Final = 24000
"""The rate of its voice, when a part's mimeType does not say."""
INPUT_MIME: Final = f"audio/pcm;rate={INPUT_RATE}"
DEFAULT_MODEL: Final = "models/gemini-3.8-live"
"""Google: "the default option for most low-latency voice agent experiences"."""
CONNECTION_CAP_S: Final = 10 * 60.0
"""Google: "The lifetime of a connection is ... around 10 minutes"; a goAway
comes about a minute before the end."""
MAX_CALLS: Final = 256
"""Tool calls remembered per connection (the control plane answers or forgets
each long before: at most 64 wait for the bot)."""
MAX_HELD: Final = 64
"""Commands held until `setupComplete`; past it the oldest goes (counted)."""
MAX_TRANSCRIPT_CHARS: Final = 16 * 1024
"""One side's transcript pieces joined per turn; the rest is dropped (counted)."""
SEGMENT_PREFIX: Final = "gemini-"

SETUP_FIELDS: Final = frozenset(
    {
        "model",
        "generationConfig",
        "systemInstruction",
        "tools",
        "realtimeInputConfig",
        "sessionResumption",
        "contextWindowCompression",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "proactivity",
        "explicitVadSignal",
        "historyConfig",
        "avatarConfig",
        "safetySettings",
        "labels",
    }
)
"""The setup's fields in the API's JSON (google-genai 3.6.1's LiveConnectConfig
as its converter puts them on the wire)."""
OURS: Final = frozenset({"sessionResumption", "historyConfig"})
"""Setup fields the sidecar sets itself (memory across connections)."""


# -- client messages (sidecar -> API): the API's JSON is camelCase ----------------------


class _Camel(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    pass


class Blob(_Camel, frozen=True):
    data: bytes
    """Base64 on the wire, for free."""
    mime_type: str


class Part(_Camel, frozen=True):
    text: str


class Content(_Camel, frozen=True):
    parts: list[Part]
    role: str | UnsetType = UNSET


class RealtimeInput(_Camel, frozen=True):
    audio: Blob


class LiveClientContent(_Camel, frozen=True):
    turns: list[Content]
    turn_complete: bool


class FunctionResponse(_Camel, frozen=True):
    id: str
    name: str
    response: dict[str, Any]


class ToolResponse(_Camel, frozen=True):
    function_responses: list[FunctionResponse]


class ContextUpdate(_Camel, frozen=True):
    system_instruction: Content


class ClientMessage(_Camel, frozen=True):
    """Exactly one field set, as the API requires of every client message."""

    setup: dict[str, Any] | UnsetType = UNSET
    client_content: LiveClientContent | UnsetType = UNSET
    realtime_input: RealtimeInput | UnsetType = UNSET
    tool_response: ToolResponse | UnsetType = UNSET
    context_update: ContextUpdate | UnsetType = UNSET


_encoder: Final = msgspec.json.Encoder()


def encode(message: ClientMessage) -> str:
    return _encoder.encode(message).decode()


def _audio_message(pcm: bytes) -> ClientMessage:
    blob = Blob(data=pcm, mime_type=INPUT_MIME)
    return ClientMessage(realtime_input=RealtimeInput(audio=blob))


def text_content(text: str, role: str | UnsetType = UNSET) -> Content:
    return Content(parts=[Part(text=text)], role=role)


# -- server messages (API -> sidecar): only what is acted on; the rest is ignored ----------


class _In(msgspec.Struct, frozen=True, rename="camel"):
    pass


class InBlob(_In, frozen=True):
    data: str = ""
    """Base64, standard or URL-safe, padded or not: protobuf's JSON takes all four."""
    mime_type: str = ""


_URL_SAFE: Final = str.maketrans("-_", "+/")


def b64decode(text: str) -> bytes | None:
    """The bytes of a protobuf JSON `bytes` field; None if it is not base64."""
    try:
        return binascii.a2b_base64(
            (text.translate(_URL_SAFE) + "=" * (-len(text) % 4)).encode("ascii"), strict_mode=True
        )
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


class InPart(_In, frozen=True):
    inline_data: InBlob | None = None
    text: str | None = None
    thought: bool | None = None


class InContent(_In, frozen=True):
    parts: list[InPart] = []
    role: str | None = None


class InTranscription(_In, frozen=True):
    text: str = ""
    finished: bool | None = None


class ServerContent(_In, frozen=True):
    model_turn: InContent | None = None
    turn_complete: bool | None = None
    interrupted: bool | None = None
    generation_complete: bool | None = None
    input_transcription: InTranscription | None = None
    output_transcription: InTranscription | None = None
    turn_complete_reason: str | None = None


class SetupComplete(_In, frozen=True):
    session_id: str | None = None


class FunctionCall(_In, frozen=True):
    id: str | None = None
    name: str | None = None
    args: dict[str, Any] | None = None


class ToolCall(_In, frozen=True):
    function_calls: list[FunctionCall] = []


class ToolCallCancellation(_In, frozen=True):
    ids: list[str] = []


class GoAway(_In, frozen=True):
    time_left: str | None = None


class ResumptionUpdate(_In, frozen=True):
    new_handle: str | None = None
    resumable: bool | None = None


class ServerMessage(_In, frozen=True):
    setup_complete: SetupComplete | None = None
    server_content: ServerContent | None = None
    tool_call: ToolCall | None = None
    tool_call_cancellation: ToolCallCancellation | None = None
    go_away: GoAway | None = None
    session_resumption_update: ResumptionUpdate | None = None


_server_decoder: Final = msgspec.json.Decoder(ServerMessage)


def _classify(reason: str, raw: bytes) -> MessageError:
    """A message that does not fit, named by its field; the message's kind (its
    one top-level key) is the trigger."""
    text, path = validation_parts(reason)
    if not path:
        return MessageError(ErrorCode.INVALID_JSON, f"message must be a JSON object: {text}")
    trigger = path.split(".")[0].split("[")[0]
    if "base64" in text:
        return MessageError(ErrorCode.INVALID_BASE64, f"`{path}` is not valid base64", trigger)
    return MessageError(ErrorCode.INVALID_FIELD, f"`{path}`: {text}", trigger)


_RATE: Final = re.compile(r";\s*rate=(\d+)")


def pcm_rate(mime_type: str) -> int | None:
    """The rate of an `audio/pcm` part (24 kHz where it does not say); None: not PCM."""
    kind = mime_type.split(";")[0].strip().lower()
    if kind not in ("audio/pcm", "audio/l16"):
        return None
    found = _RATE.search(mime_type)
    return int(found.group(1)) if found else OUTPUT_RATE


def seconds(duration: str | None) -> float | None:
    """A protobuf Duration's JSON ("50s", "0.5s") in seconds; None if it is not one."""
    if duration is None or not duration.endswith("s"):
        return None
    try:
        value = float(duration[:-1])
    except ValueError:
        return None
    return value if value >= 0 else None


# -- what outlives one connection -------------------------------------------------------


@dataclass(slots=True)
class Resumption:
    """The run's newest resumption handle, and whether it was proven to work."""

    handle: str | None = None
    sent: str | None = None
    """The handle a setup carried, until its setupComplete confirms it."""
    rejected: int = 0
    """Handles given up on: a setup carried them and got no setupComplete."""

    def current(self) -> str | None:
        """The handle for a new connection. One a setup carried without a
        setupComplete is not tried twice (the server refused it, or it expired):
        that connection may have dropped for another reason, but the record
        still seeds the next one, where a refused handle would fail them all."""
        if self.sent is not None and self.sent == self.handle:
            self.handle = None
            self.rejected += 1
        self.sent = None
        return self.handle


@dataclass(frozen=True, slots=True)
class Restoring:
    """What a new session gives the server of the conversation so far."""

    via: str
    """"resumption" (a handle: the server's own memory) or "history" (our record)."""
    turns: int
    chars: int
    dropped_turns: int


@dataclass(slots=True)
class Statistics:
    audio_parts: int = 0
    audio_bytes: int = 0
    cut_parts: int = 0
    """Parts of a turn a barge-in or the bot's `clear` cut, dropped as they came."""
    other_parts: int = 0
    """Model parts that are not audio (text, thoughts): not played."""
    tool_calls: int = 0
    held_dropped: int = 0
    transcript_chars_dropped: int = 0
    handles: int = 0
    ignored: int = 0
    """Messages with nothing this dialect acts on (usageMetadata, ...)."""
    invalid: int = 0


@dataclass(slots=True)
class _Pieces:
    """One side's transcription pieces of the current turn."""

    parts: list[str] = field(default_factory=list)
    chars: int = 0

    def add(self, text: str, stats: Statistics) -> None:
        room = MAX_TRANSCRIPT_CHARS - self.chars
        if len(text) > room:
            stats.transcript_chars_dropped += len(text) - max(room, 0)
            text = text[: max(room, 0)]
        if text:
            self.parts.append(text)
            self.chars += len(text)

    def take(self) -> str:
        text = "".join(self.parts).strip()
        self.parts.clear()
        self.chars = 0
        return text


class GeminiLiveSession(Session):
    def __init__(
        self,
        setup: dict[str, Any],
        *,
        briefing: Briefing,
        resumption: Resumption,
        handle: str | None = None,
        turns: list[int],
        history: Sequence[Content] = (),
        restoring: Restoring | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._setup = setup
        self._briefing = briefing
        self._resumption = resumption
        self._handle = handle
        self._turn_counter = turns
        """The run's reply counter (one list cell, shared by the run's sessions)."""
        self._history = list(history)
        self.restoring = restoring
        self._max_bytes = max_message_bytes
        self._set_up = False
        """setupComplete came."""
        self._ready = False
        """Audio may go: set up, and what it owed the server (the history, held
        commands) taken by `replies`, so that no audio or command overtakes it."""
        self._held: deque[str] = deque()
        self._owed: list[Wire] = []
        self._stats = Statistics()
        self._calls: OrderedDict[str, str] = OrderedDict()
        """Open calls: id -> name (a functionResponse carries both)."""
        self._segment: str | None = None
        """The reply being received, until its turnComplete."""
        self._cutting = False
        """A barge-in or the bot's clear cut the current turn: its audio is dropped."""
        self._said = _Pieces()
        self._heard = _Pieces()
        self._going_away = False
        self.session_id: str | None = None

    # -- the connection's opening -------------------------------------------------

    def opening(self) -> Sequence[Wire]:
        # Read now, not when the session was made: what the bot changed since counts.
        setup = dict(self._setup)
        briefing = self._briefing
        if briefing.instructions is not None or briefing.contexts:
            prompt = briefing.prompt(instruction_text(setup.get("systemInstruction")))
            setup["systemInstruction"] = msgspec.to_builtins(text_content(prompt or ""))
        if self._handle is not None:
            self._resumption.sent = self._handle  # proven by our setupComplete
        return (encode(ClientMessage(setup=setup)),)

    @property
    def audio_ready(self) -> bool:
        return self._ready

    def statistics(self) -> Statistics:
        return replace(self._stats)

    def restored(self) -> events.MemoryRestored | None:
        restoring = self.restoring
        if restoring is None:
            return None
        return events.MemoryRestored(
            turns=restoring.turns, chars=restoring.chars, dropped_turns=restoring.dropped_turns
        )

    def replies(self) -> Sequence[Wire]:
        if self._set_up and not self._ready:
            # Taken now, to be queued ahead of anything encoded from here on.
            self._ready = True
            self._owed += self._held
            self._held.clear()
        owed, self._owed = self._owed, []
        return tuple(owed)

    # -- up ------------------------------------------------------------------------

    def wire_utf8(self, item: Outgoing) -> Sequence[Wire | Utf8Text]:
        # Audio, nearly every message: msgspec's bytes go out as they are.
        if isinstance(item, AudioOut) and item.stream == MIXED:
            return (Utf8Text(_encoder.encode(_audio_message(item.pcm))),)
        return self.wire(item)

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream == MIXED:
                return (encode(_audio_message(item.pcm)),)
            case ClearedOut(by_bot=True):
                # No message stops a Gemini turn: what is left of it is not played.
                self._cutting = self._segment is not None
                return ()
            case AudioOut() | ClearedOut() | MarkOut() | DtmfOut() | ErrorOut():
                # One mixed stream; no marks, DTMF, error replies or truncation here.
                return ()
            case ToolResult(call_id=call_id, output=output):
                name = self._calls.pop(call_id, None)
                if name is None:
                    return ()  # a call of an earlier connection, cancelled, or answered
                answer = FunctionResponse(id=call_id, name=name, response=tool_response(output))
                message = ClientMessage(tool_response=ToolResponse(function_responses=[answer]))
                return self._after_setup(encode(message))
            case UserText(text=text):
                turn = LiveClientContent(turns=[text_content(text, "user")], turn_complete=True)
                return self._after_setup(encode(ClientMessage(client_content=turn)))
            case AddContext(text=text):
                self._briefing.add_context(text)
                return self._after_setup(self._instruction_update())
            case SetInstructions(text=text):
                self._briefing.set_instructions(text)
                return self._after_setup(self._instruction_update())
            case Say() | AgentCommand():
                return ()  # refused before it was queued (`GeminiLive.commands`)

    def _instruction_update(self) -> str:
        base = instruction_text(self._setup.get("systemInstruction"))
        prompt = self._briefing.prompt(base) or ""
        update = ContextUpdate(system_instruction=text_content(prompt))
        return encode(ClientMessage(context_update=update))

    def _after_setup(self, wire: str) -> Sequence[Wire]:
        """`wire` now, or, before setupComplete (the API wants nothing before it)
        and until the seeded history is on its way, then."""
        if self._ready:
            return (wire,)
        if len(self._held) == MAX_HELD:
            self._held.popleft()
            self._stats.held_dropped += 1
        self._held.append(wire)
        return ()

    # -- down ----------------------------------------------------------------------

    def receive(self, message: Wire) -> Sequence[Incoming]:
        decoded = decode_json(_server_decoder, message, self._max_bytes, _classify)
        if isinstance(decoded, MessageError):
            self._stats.invalid += 1
            return (Invalid(decoded),)
        out: list[Incoming] = []
        acted = False
        if decoded.setup_complete is not None:
            acted = True
            out += self._setup_complete(decoded.setup_complete)
        if decoded.server_content is not None:
            acted = True
            out += self._content(decoded.server_content)
        if decoded.tool_call is not None:
            acted = True
            out += self._tool_call(decoded.tool_call)
        if decoded.tool_call_cancellation is not None:
            acted = True
            out += [
                ToolCallCancelledIn(call_id, "interrupted")
                for call_id in decoded.tool_call_cancellation.ids
                if self._calls.pop(call_id, None) is not None
            ]
        if decoded.session_resumption_update is not None:
            acted = True
            update = decoded.session_resumption_update
            if update.resumable and update.new_handle:
                self._resumption.handle = update.new_handle
                self._stats.handles += 1
        if decoded.go_away is not None:
            acted = True
            self._going_away = True
            left = decoded.go_away.time_left
            out.append(notice(AgentEvent(name="goAway", text=left)))
            within = seconds(left)
            # No time said: the end is near; the link rotates at once.
            out.append(SessionExpiring(within if within is not None else 0.0))
        if not acted:
            self._stats.ignored += 1
        return out

    def _setup_complete(self, complete: SetupComplete) -> Sequence[Incoming]:
        if self._set_up:
            return ()
        self._set_up = True
        self.session_id = complete.session_id
        if self._handle is not None and self._resumption.sent == self._handle:
            self._resumption.sent = None  # the handle worked
        if self._history:
            turns = LiveClientContent(turns=self._history, turn_complete=True)
            self._owed.append(encode(ClientMessage(client_content=turns)))
        self._owed += self._held
        self._held.clear()
        # Nothing owed: audio may go at once (`check` never asks for replies).
        self._ready = not self._owed
        return (notice(AgentEvent(name="setupComplete")),)

    def _content(self, content: ServerContent) -> Sequence[Incoming]:
        out: list[Incoming] = []
        if content.input_transcription is not None:
            if not self._heard.parts and content.input_transcription.text.strip():
                out.append(UserSpeaking())  # the meeting's turn has begun
            self._heard.add(content.input_transcription.text, self._stats)
            if content.input_transcription.finished:
                out += self._flush_user()
        if content.interrupted:
            out += self._flush_agent()
            out.append(ClearPlayout())
            if not self._heard.parts:
                out.append(UserSpeaking())  # the server's VAD heard the meeting
            self._cutting = self._segment is not None
        if content.model_turn is not None:
            out += self._parts(content.model_turn.parts)
        if content.output_transcription is not None:
            out += self._flush_user()
            self._turn_started()
            self._said.add(content.output_transcription.text, self._stats)
            if content.output_transcription.finished:
                out += self._flush_agent()
        if content.generation_complete:
            out += self._flush_agent()
        if content.turn_complete:
            out += self._flush_user()
            out += self._flush_agent()
            self._segment = None
            self._cutting = False
        return out

    def _turn_started(self) -> str:
        if self._segment is None:
            self._turn_counter[0] += 1
            self._segment = f"{SEGMENT_PREFIX}{self._turn_counter[0]}"
        return self._segment

    def _parts(self, parts: list[InPart]) -> Sequence[Incoming]:
        out: list[Incoming] = list(self._flush_user())
        segment = self._turn_started()
        for index, part in enumerate(parts):
            blob = part.inline_data
            rate = None if blob is None else pcm_rate(blob.mime_type)
            if blob is None or rate is None:
                self._stats.other_parts += 1
                continue
            pcm = b64decode(blob.data)
            if pcm is None:
                self._stats.invalid += 1
                where = f"serverContent.modelTurn.parts[{index}].inlineData.data"
                error = MessageError(
                    ErrorCode.INVALID_BASE64, f"`{where}` is not valid base64", "serverContent"
                )
                out.append(Invalid(error))
                continue
            if len(pcm) % SAMPLE_BYTES:
                self._stats.invalid += 1
                text = (
                    f"`serverContent.modelTurn.parts[{index}].inlineData.data` decodes to "
                    f"{len(pcm)} bytes; 16-bit PCM needs an even count"
                )
                out.append(Invalid(MessageError(ErrorCode.ODD_LENGTH, text, "serverContent")))
                continue
            self._stats.audio_parts += 1
            self._stats.audio_bytes += len(pcm)
            if not pcm:
                continue
            if self._cutting:
                self._stats.cut_parts += 1
                out.append(CutAudio(len(pcm) // SAMPLE_BYTES, rate))
                continue
            out.append(PlayAudio(pcm, rate, segment))
        return out

    def _flush_user(self) -> Sequence[Incoming]:
        text = self._heard.take()
        return (notice(Transcript(role="user", text=text)),) if text else ()

    def _flush_agent(self) -> Sequence[Incoming]:
        text = self._said.take()
        if not text:
            return ()
        return (notice(Transcript(role="assistant", text=text, segment=self._segment)),)

    def _tool_call(self, call: ToolCall) -> Sequence[Incoming]:
        out: list[Incoming] = []
        for index, function in enumerate(call.function_calls):
            if not function.id or not function.name:
                self._stats.invalid += 1
                missing = "id" if not function.id else "name"
                text = f"`toolCall.functionCalls[{index}].{missing}`: a call needs one"
                out.append(Invalid(MessageError(ErrorCode.INVALID_FIELD, text, "toolCall")))
                continue
            self._calls[function.id] = function.name
            while len(self._calls) > MAX_CALLS:
                self._calls.popitem(last=False)
            self._stats.tool_calls += 1
            arguments = json.dumps(function.args or {}, separators=(",", ":"))
            out.append(ToolCallIn(function.id, function.name, arguments))
        return out

    def reconnect_at_once(self, code: int | None, reason: str) -> bool:
        # A goAway announced this end: the connection's routine lifetime, not a fault.
        return self._going_away


def tool_response(output: str) -> dict[str, Any]:
    """The functionResponse's `response`: the output itself where it is a JSON
    object, else the API's convention `{"result": ...}` with its text."""
    try:
        value = json.loads(output)
    except ValueError:
        return {"result": output}
    return value if isinstance(value, dict) else {"result": output}


def instruction_text(instruction: object) -> str | None:
    """The text of a setup's systemInstruction (a string or a Content of text parts)."""
    if isinstance(instruction, str):
        return instruction
    if isinstance(instruction, dict) and isinstance(instruction.get("parts"), list):
        texts = [p.get("text") for p in instruction["parts"] if isinstance(p, dict)]
        joined = "\n".join(t for t in texts if isinstance(t, str))
        return joined or None
    return None


def history_turns(history: MemorySnapshot) -> list[Content]:
    """The record as the API's turns: the meeting's and the bot's words as the
    user's, the agent's (and what the bot made it say) as the model's, a tool
    call as a model note. Context texts are left out: the system instruction
    carries them (`Briefing`)."""
    from sidecar.memory import AgentTurn, CommandKind, CommandTurn, ToolTurn, UserTurn

    turns: list[Content] = []
    for turn in history.turns:
        match turn:
            case UserTurn(text=text) if text:
                turns.append(text_content(text, "user"))
            case AgentTurn(text=text) if text:
                turns.append(text_content(text, "model"))
            case CommandTurn(kind=CommandKind.USER_TEXT, text=text) if text:
                turns.append(text_content(text, "user"))
            case CommandTurn(kind=CommandKind.SAY, text=text) if text:
                turns.append(text_content(text, "model"))
            case ToolTurn(name=name, arguments_json=arguments, output=output):
                result = "no result" if output is None else f"result {output}"
                note = f"(called the tool {name} with {arguments}: {result})"
                turns.append(text_content(note, "model"))
    return turns


# -- the user's setup -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    setup: dict[str, Any]
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def prepare_setup(user: object) -> Prepared:
    """The `setup` we send (without memory): the user's, with what the sidecar needs."""
    problems: list[str] = []
    warnings: list[str] = []
    if isinstance(user, dict) and set(user) == {"setup"} and isinstance(user["setup"], dict):
        user = user["setup"]  # the whole client message, as the API's docs show it
    if not isinstance(user, dict):
        problems.append("--session must be a JSON object (the Live API's setup)")
        user = {}
    given: dict[str, Any] = {}
    for key, value in user.items():
        camel = _snake_to_camel(key)
        if camel != key and camel in SETUP_FIELDS:
            problems.append(f"--session: `{key}` is written `{camel}` in the API's JSON")
            continue
        if key in OURS:
            warnings.append(
                f"--session: `{key}` {show(value)} is set by the sidecar (resumption "
                "handles and the conversation record carry memory across connections)"
            )
            continue
        if key not in SETUP_FIELDS:
            warnings.append(
                f"--session: `{key}` is not a setup field the sidecar knows; sent as given"
            )
        given[key] = value
    model = given.pop("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip():
        problems.append(f"--session: `model` must be a model name, not {show(model)}")
        model = DEFAULT_MODEL
    config = given.pop("generationConfig", {})
    if not isinstance(config, dict):
        problems.append(f"--session: `generationConfig` must be an object, not {show(config)}")
        config = {}
    modalities = config.get("responseModalities")
    if modalities is not None and modalities != ["AUDIO"]:
        warnings.append(
            f"--session: `generationConfig.responseModalities` {show(modalities)} replaced "
            'by ["AUDIO"]: the sidecar plays the agent\'s voice'
        )
    # One order whatever the user's, so the setup's text is predictable.
    setup: dict[str, Any] = {
        # The Gemini API names models `models/NAME`; a name with a path (Vertex's
        # `projects/...`, `publishers/...`) is the user's, as given.
        "model": model if "/" in model else f"models/{model}",
        "generationConfig": {**config, "responseModalities": ["AUDIO"]},
    }
    instruction = given.pop("systemInstruction", None)
    if isinstance(instruction, str):
        setup["systemInstruction"] = msgspec.to_builtins(text_content(instruction))
    elif isinstance(instruction, dict):
        setup["systemInstruction"] = instruction
    elif instruction is not None:
        problems.append(
            "--session: `systemInstruction` must be a text or a Content object, "
            f"not {show(instruction)}"
        )
    transcriptions = {}
    for key in ("inputAudioTranscription", "outputAudioTranscription"):
        value = given.pop(key, {})
        if not isinstance(value, dict):
            problems.append(f"--session: `{key}` must be an object, not {show(value)}")
            value = {}
        transcriptions[key] = value
    setup |= given
    setup |= transcriptions
    if "contextWindowCompression" not in setup:
        warnings.append(
            "--session: no `contextWindowCompression`: Gemini ends an audio session after "
            "15 minutes without it (resuming on a new connection continues the same session)"
        )
    return Prepared(setup, tuple(problems), tuple(warnings))


# -- the dialect ------------------------------------------------------------------------


KEY_ENVS: Final = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
"""Where the key is read from, in google-genai's order: "Both GOOGLE_API_KEY and
GEMINI_API_KEY are set. Using GOOGLE_API_KEY." """


class GeminiLive(Dialect):
    name: ClassVar[str] = "gemini-live"
    default_url: ClassVar[str | None] = (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    summary: ClassVar[str] = "Google's Gemini Live API (BidiGenerateContent)"
    auth_env: ClassVar[str | None] = "GEMINI_API_KEY"
    """The one the docs and error messages name (Google's own examples use it)."""
    auth_envs: ClassVar[tuple[str, ...]] = KEY_ENVS
    auth_header: ClassVar[str] = "x-goog-api-key"
    auth_scheme: ClassVar[str] = ""
    # Vertex or a proxy takes the user's bearer: a Google key from the
    # environment must not travel beside it to someone else's server.
    auth_alternatives: ClassVar[tuple[str, ...]] = ("Authorization",)
    flags: ClassVar[tuple[DialectFlag, ...]] = (
        DialectFlag(
            "--session",
            "the setup object (model, systemInstruction, tools, generationConfig.speechConfig, "
            "realtimeInputConfig...)",
        ),
    )
    server_audio: ClassVar[str] = "serverContent.modelTurn.parts[].inlineData"
    # A tenth of a connection's life: a goAway-announced close sooner than that
    # is a server closing early, retried like any failure.
    renew_after_s: ClassVar[float | None] = CONNECTION_CAP_S / 10
    commands: ClassVar[frozenset[str]] = frozenset(COMMANDS.values()) - {COMMANDS[Say]}

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._prepared = prepare_setup(options.session)
        self.briefing = Briefing()
        """What the bot's `instructions` and `context` changed, for every later session."""
        self.resumption = Resumption()
        self._turns = [0]

    def refuses(self, command: str) -> str | None:
        if command == COMMANDS[Say]:
            return (
                f"--protocol {self.name} has no verbatim speech: the model speaks only in "
                "answer to a turn (use `user_text` to give it one)"
            )
        return super().refuses(command)

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(INPUT_RATE)

    def problems(self) -> Sequence[str]:
        return self._prepared.problems

    def warnings(self) -> Sequence[str]:
        return self._prepared.warnings

    def session(self, history: MemorySnapshot | None = None) -> GeminiLiveSession:
        setup = dict(self._prepared.setup)
        # --memory off: every connection starts the conversation afresh, so no
        # handle is asked for or carried (the server's memory is memory too).
        memory = self.options.memory
        handle = self.resumption.current() if memory else None
        turns: list[Content] = []
        restoring: Restoring | None = None
        if handle is not None:
            setup["sessionResumption"] = {"handle": handle}
            if history is not None:
                restoring = Restoring(
                    "resumption", history.turn_count, history.chars, history.dropped_turns
                )
        elif memory:
            # Handles are asked for from the first connection on.
            setup["sessionResumption"] = {}
            turns = history_turns(history) if history is not None else []
            if turns and history is not None:
                setup["historyConfig"] = {"initialHistoryInClientContent": True}
                restoring = Restoring(
                    "history", history.turn_count, history.chars, history.dropped_turns
                )
        return GeminiLiveSession(
            setup,
            briefing=self.briefing,
            resumption=self.resumption,
            handle=handle,
            turns=self._turns,
            history=turns,
            restoring=restoring,
            max_message_bytes=self.options.max_message_bytes,
        )
