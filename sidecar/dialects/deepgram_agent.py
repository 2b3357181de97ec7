"""Deepgram's Voice Agent API (v1), spoken directly: no bridge server.

Up: one `Settings` message per connection (the user's `--session` object with
the `audio` section this dialect needs), then raw linear16 audio as binary
frames, and `KeepAlive` while no audio flows. Down: binary frames are the
agent's voice; JSON text frames are events. No audio may go before
`SettingsApplied` (Deepgram: send Settings "before sending any audio"), so
`audio_ready` waits for it and the link holds audio in the outbox meanwhile.

Barge-in: `UserStartedSpeaking` means "stop playback at once and discard
buffered agent audio"; Deepgram keeps no per-reply position, so there is
nothing to tell it back (`ClearedOut` sends nothing). Transcripts, errors,
warnings and the steps of a turn become stdout events.

The bot's commands map one to one: a client-side `FunctionCallRequest` entry
is a tool call, answered by `FunctionCallResponse` (the agent goes on by
itself); `FunctionCallCancelled` withdraws one; `say` is `InjectAgentMessage`
(spoken verbatim), `user_text` `InjectUserMessage`, `context` `UpdatePrompt`
(which appends) and `instructions` `UpdateThink` with the session's think
settings and the new prompt. What `context` and `instructions` change is
remembered by the dialect (`Briefing`): the next session's Settings carry it.
The bot's `clear` has no message here: the rest of the reply's audio is
dropped as it comes (counted) until the reply ends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

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
from sidecar.dialects.jsonwire import where
from sidecar.dialects.notices import (
    AgentError,
    AgentEvent,
    AgentWarning,
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

KEEPALIVE_S: Final = 8.0
SESSION_CAP_S: Final = 2 * 60 * 60.0
"""Voice Agent sessions close after two hours (changelog 2026-07-31)."""
ROTATE_MARGIN_S: Final = 10 * 60.0
"""From 1 h 50 on, the sidecar moves to a new session at the first quiet moment."""
"""Deepgram: "While idle, send one KeepAlive every 8 seconds"."""
MAX_CALLS: Final = 256
"""Tool calls remembered per connection (the control plane answers or forgets
each long before: at most 64 wait for the bot)."""


# -- client messages (sidecar -> Deepgram) -------------------------------------------


class AudioInput(msgspec.Struct, frozen=True):
    encoding: Literal["linear16"]
    sample_rate: int


class AudioOutput(msgspec.Struct, frozen=True):
    encoding: Literal["linear16"]
    sample_rate: int
    container: Literal["none"]
    """Raw samples: a WAV header in every frame would be played as noise."""


class Audio(msgspec.Struct, frozen=True):
    input: AudioInput
    output: AudioOutput


def audio_section(rate: int) -> Audio:
    return Audio(AudioInput("linear16", rate), AudioOutput("linear16", rate, "none"))


class _ClientMessage(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=True):
    pass


class Settings(_ClientMessage, frozen=True, kw_only=True, tag="Settings"):
    """Deepgram's top-level Settings fields, in the order its docs show them."""

    tags: list[str] | UnsetType = UNSET
    experimental: bool | UnsetType = UNSET
    mip_opt_out: bool | UnsetType = UNSET
    flags: dict[str, Any] | UnsetType = UNSET
    audio: Audio
    agent: dict[str, Any] | str
    """Passed through as given: listen, think, speak, greeting (or an agent id)."""


class KeepAlive(_ClientMessage, frozen=True, tag="KeepAlive"):
    pass


class FunctionCallResponse(_ClientMessage, frozen=True, tag="FunctionCallResponse"):
    id: str
    name: str
    content: str


class InjectAgentMessage(_ClientMessage, frozen=True, tag="InjectAgentMessage"):
    message: str


class InjectUserMessage(_ClientMessage, frozen=True, tag="InjectUserMessage"):
    content: str


class UpdatePrompt(_ClientMessage, frozen=True, tag="UpdatePrompt"):
    prompt: str
    """Appended to the agent's prompt (Deepgram: it "adds to" it)."""


class UpdateThink(_ClientMessage, frozen=True, tag="UpdateThink"):
    think: dict[str, Any] | list[dict[str, Any]]
    """The whole think settings (or fallback list): Deepgram replaces them all."""


ClientMessage = (
    Settings
    | KeepAlive
    | FunctionCallResponse
    | InjectAgentMessage
    | InjectUserMessage
    | UpdatePrompt
    | UpdateThink
)

_encoder: Final = msgspec.json.Encoder()


def encode(message: ClientMessage) -> str:
    return _encoder.encode(message).decode()


_KEEPALIVE: Final = encode(KeepAlive())


# -- server messages (Deepgram -> sidecar): only those acted on ------------------------


class _ServerMessage(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class Welcome(_ServerMessage, frozen=True, tag="Welcome"):
    request_id: str | None = None


class SettingsApplied(_ServerMessage, frozen=True, tag="SettingsApplied"):
    pass


class ConversationText(_ServerMessage, frozen=True, tag="ConversationText"):
    role: str
    content: str


class UserStartedSpeaking(_ServerMessage, frozen=True, tag="UserStartedSpeaking"):
    pass


class AgentThinking(_ServerMessage, frozen=True, tag="AgentThinking"):
    content: str | None = None


class AgentStartedSpeaking(_ServerMessage, frozen=True, tag="AgentStartedSpeaking"):
    total_latency: float | None = None
    tts_latency: float | None = None
    ttt_latency: float | None = None


class AgentAudioDone(_ServerMessage, frozen=True, tag="AgentAudioDone"):
    pass


class FunctionCall(msgspec.Struct, frozen=True):
    id: str
    name: str
    arguments: str
    client_side: bool


class FunctionCallRequest(_ServerMessage, frozen=True, tag="FunctionCallRequest"):
    functions: list[FunctionCall]


class CancelledCall(msgspec.Struct, frozen=True):
    id: str
    name: str | None = None


class FunctionCallCancelled(_ServerMessage, frozen=True, tag="FunctionCallCancelled"):
    functions: list[CancelledCall]


class InjectionRefused(_ServerMessage, frozen=True, tag="InjectionRefused"):
    message: str = ""


# Lenient on purpose: a report of trouble must reach the bot even if half-formed.
class ErrorMessage(_ServerMessage, frozen=True, tag="Error"):
    description: str = ""
    code: str | None = None


class WarningMessage(_ServerMessage, frozen=True, tag="Warning"):
    description: str = ""
    code: str | None = None


ServerMessage = (
    Welcome
    | SettingsApplied
    | ConversationText
    | UserStartedSpeaking
    | AgentThinking
    | AgentStartedSpeaking
    | AgentAudioDone
    | FunctionCallRequest
    | FunctionCallCancelled
    | InjectionRefused
    | ErrorMessage
    | WarningMessage
)
SERVER_TYPES: Final = frozenset(
    {
        "FunctionCallRequest",
        "FunctionCallCancelled",
        "InjectionRefused",
        "Welcome",
        "SettingsApplied",
        "ConversationText",
        "UserStartedSpeaking",
        "AgentThinking",
        "AgentStartedSpeaking",
        "AgentAudioDone",
        "Error",
        "Warning",
    }
)
"""The message types acted on; every other type is ignored (and counted)."""

_server_decoder: Final = msgspec.json.Decoder(ServerMessage)


# -- the session ---------------------------------------------------------------------------


@dataclass(slots=True)
class Statistics:
    audio_frames: int = 0
    audio_bytes: int = 0
    cut_frames: int = 0
    """Frames of a reply the bot's `clear` cut, dropped as they came."""
    tool_calls: int = 0
    server_side_calls: int = 0
    """FunctionCallRequest entries Deepgram runs itself: nothing for the bot."""
    ignored: int = 0
    """Messages of a type this dialect does not act on (History, PromptUpdated, ...)."""
    invalid: int = 0


class DeepgramAgentSession(Session):
    keepalive_s: ClassVar[float | None] = KEEPALIVE_S

    def __init__(
        self,
        settings: Settings,
        rate: int,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        briefing: Briefing | None = None,
        history: MemorySnapshot | None = None,
    ) -> None:
        self._settings = settings
        self._briefing = briefing if briefing is not None else Briefing()
        self._history = history
        self._restored: MemoryRestored | None = None
        self._rate = rate
        self._max_bytes = max_message_bytes
        self._applied = False
        self._carry = b""
        self._stats = Statistics()
        self._calls: OrderedDict[str, str] = OrderedDict()
        """Open client-side calls: id -> name (FunctionCallResponse needs both)."""
        self._speaking = False
        """Between AgentStartedSpeaking and AgentAudioDone: a reply's audio flows."""
        self._cutting = False
        """The bot's `clear` cut the reply in flight: its audio is dropped."""

    def opening(self) -> Sequence[Wire]:
        # Read now, not when the session was made: what the bot changed since counts.
        settings = self._settings
        think = current_think(settings.agent, self._briefing)
        if think is not None and isinstance(settings.agent, dict):
            settings = msgspec.structs.replace(settings, agent=settings.agent | {"think": think})
        if self._history is not None and isinstance(settings.agent, dict):
            settings = msgspec.structs.replace(settings, agent=self._seed(settings.agent))
        return (encode(settings),)

    def _seed(self, agent: dict[str, Any]) -> dict[str, Any]:
        """The conversation so far as `agent.context.messages` History entries,
        after any the user's settings hold."""
        assert self._history is not None
        messages: list[dict[str, Any]] = []
        chars = 0
        for turn in memory.carried(self._history):
            match turn:
                case memory.UserTurn(text=text) | memory.CommandTurn(text=text):
                    messages.append(_history("user", text))
                case memory.AgentTurn():
                    messages.append(_history("assistant", memory.spoken(turn)))
                case memory.ToolTurn():
                    messages.append(_function_call(turn))
            chars += turn.chars
        self._restored = MemoryRestored(
            turns=len(messages), chars=chars, dropped_turns=self._history.dropped_turns
        )
        context = agent.get("context")
        context = dict(context) if isinstance(context, dict) else {}
        given = context.get("messages")
        context["messages"] = [*(given if isinstance(given, list) else ()), *messages]
        return agent | {"context": context}

    def restored(self) -> MemoryRestored | None:
        return self._restored

    @property
    def replying(self) -> bool:
        return self._speaking

    @property
    def audio_ready(self) -> bool:
        return self._applied

    def keepalive(self) -> Sequence[Wire]:
        return (_KEEPALIVE,)

    def statistics(self) -> Statistics:
        return replace(self._stats)

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream == MIXED:
                return (item.pcm,)
            case ClearedOut(by_bot=True):
                # No message stops a Deepgram reply; what is left of it is not played.
                self._cutting = self._speaking
                self._carry = b""
                return ()
            case AudioOut() | ClearedOut() | MarkOut() | DtmfOut() | ErrorOut():
                # One mixed stream; no marks, DTMF, error replies or playback position here.
                return ()
            case ToolResult(call_id=call_id, output=output):
                name = self._calls.pop(call_id, None)
                if name is None:
                    return ()  # a call of an earlier connection, cancelled, or answered
                return (encode(FunctionCallResponse(id=call_id, name=name, content=output)),)
            case Say(text=text):
                return (encode(InjectAgentMessage(message=text)),)
            case UserText(text=text):
                return (encode(InjectUserMessage(content=text)),)
            case AddContext(text=text):
                self._briefing.add_context(text)
                return (encode(UpdatePrompt(prompt=text)),)
            case SetInstructions(text=text):
                self._briefing.set_instructions(text)
                think = current_think(self._settings.agent, self._briefing)
                if think is None:
                    return ()  # refused before it was queued (`DeepgramAgent.refuses`)
                return (encode(UpdateThink(think=think)),)
            case AgentCommand():
                return ()

    def receive(self, message: Wire) -> Sequence[Incoming]:
        if isinstance(message, bytes):
            return self._audio(message)
        decoded = decode_event(_server_decoder, SERVER_TYPES, message, self._max_bytes)
        match decoded:
            case MessageError():
                self._stats.invalid += 1
                return (Invalid(decoded),)
            case Unknown():
                self._stats.ignored += 1
                return ()
            case Welcome(request_id=request_id):
                return (notice(AgentEvent(name="Welcome", request_id=request_id)),)
            case SettingsApplied():
                self._applied = True
                return (notice(AgentEvent(name="SettingsApplied")),)
            case ConversationText(role=role, content=content):
                return (notice(Transcript(role=role, text=content)),)
            case UserStartedSpeaking():
                self._carry = b""  # half a sample of the audio being discarded
                started = notice(AgentEvent(name="UserStartedSpeaking"))
                return (ClearPlayout(), UserSpeaking(), started)
            case AgentThinking(content=content):
                return (notice(AgentEvent(name="AgentThinking", text=content)),)
            case AgentStartedSpeaking():
                self._speaking, self._cutting = True, False
                event = AgentEvent(
                    name="AgentStartedSpeaking",
                    total_latency=decoded.total_latency,
                    tts_latency=decoded.tts_latency,
                    ttt_latency=decoded.ttt_latency,
                )
                return (notice(event),)
            case AgentAudioDone():
                # Deepgram has *sent* the reply's last audio; it may still be playing.
                self._speaking = self._cutting = False
                return (notice(AgentEvent(name="AgentAudioDone")),)
            case FunctionCallRequest(functions=functions):
                return self._calls_requested(functions)
            case FunctionCallCancelled(functions=functions):
                return tuple(
                    ToolCallCancelledIn(f.id, "cancelled")
                    for f in functions
                    if self._calls.pop(f.id, None) is not None
                )
            case InjectionRefused(message=text):
                return (notice(AgentWarning(message=text, code="InjectionRefused")),)
            case ErrorMessage(description=description, code=code):
                return (notice(AgentError(message=description, code=code)),)
            case WarningMessage(description=description, code=code):
                return (notice(AgentWarning(message=description, code=code)),)

    def _calls_requested(self, functions: list[FunctionCall]) -> Sequence[Incoming]:
        out: list[Incoming] = []
        for function in functions:
            if not function.client_side:
                self._stats.server_side_calls += 1
                continue
            self._calls[function.id] = function.name
            while len(self._calls) > MAX_CALLS:
                self._calls.popitem(last=False)
            self._stats.tool_calls += 1
            out.append(ToolCallIn(function.id, function.name, function.arguments))
        return out

    def _audio(self, message: bytes) -> Sequence[Incoming]:
        if len(message) > self._max_bytes:
            self._stats.invalid += 1
            text = f"binary message of {len(message)} bytes exceeds the limit of {self._max_bytes}"
            return (Invalid(MessageError(ErrorCode.MESSAGE_TOO_LARGE, text)),)
        self._stats.audio_frames += 1
        self._stats.audio_bytes += len(message)
        if self._cutting:
            self._stats.cut_frames += 1
            # Whole samples only; a stray byte's sample is never played either.
            samples = len(message) // SAMPLE_BYTES
            return (CutAudio(samples, self._rate),) if samples else ()
        # Deepgram's frames are a byte stream: a sample split across two frames is
        # carried, not dropped, or every later sample would be read off by a byte.
        data = self._carry + message if self._carry else message
        partial = len(data) % SAMPLE_BYTES
        if partial:
            self._carry, data = data[-partial:], data[:-partial]
        else:
            self._carry = b""
        return (PlayAudio(data, self._rate),) if data else ()


# -- the user's settings --------------------------------------------------------------------


class _UserSettings(msgspec.Struct, forbid_unknown_fields=True):
    """What --session may hold: Deepgram's Settings; `audio` is the dialect's own."""

    agent: dict[str, Any] | str
    type: Any = UNSET
    tags: list[str] | UnsetType = UNSET
    experimental: bool | UnsetType = UNSET
    mip_opt_out: bool | UnsetType = UNSET
    flags: dict[str, Any] | UnsetType = UNSET
    audio: Any = UNSET


@dataclass(frozen=True, slots=True)
class Prepared:
    settings: Settings
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def prepare_settings(user: object, rate: int) -> Prepared:
    """The `Settings` we send: the user's, with the audio section set to what we send and play."""
    ours = audio_section(rate)
    if not isinstance(user, dict):
        problem = "--session must be a JSON object (Deepgram's Settings)"
        return Prepared(Settings(audio=ours, agent={}), (problem,))
    try:
        given = msgspec.convert(user, _UserSettings)
    except msgspec.ValidationError as exc:
        problem = f"--session is not a Voice Agent Settings object: {where(exc)}"
        return Prepared(Settings(audio=ours, agent={}), (problem,))
    warnings: list[str] = []
    if given.type is not UNSET and given.type != "Settings":
        warnings.append(f'--session: `type` {show(given.type)} replaced by "Settings"')
    ours_plain = msgspec.to_builtins(ours)
    if given.audio is not UNSET and given.audio != ours_plain:
        warnings.append(
            f"--session: `audio` {show(given.audio)} replaced by {show(ours_plain)}: the "
            f"sidecar sends and plays raw linear16 at {rate} Hz (--sample-rate)"
        )
    settings = Settings(
        tags=given.tags,
        experimental=given.experimental,
        mip_opt_out=given.mip_opt_out,
        flags=given.flags,
        audio=ours,
        agent=given.agent,
    )
    return Prepared(settings, (), tuple(warnings))


def think_of(agent: dict[str, Any] | str) -> dict[str, Any] | list[dict[str, Any]] | None:
    """The agent's think settings (one object, or Deepgram's fallback list); None
    when there are none to change (an agent id, or no `think`)."""
    think = agent.get("think") if isinstance(agent, dict) else None
    if isinstance(think, dict):
        return think
    if isinstance(think, list) and think and all(isinstance(t, dict) for t in think):
        return think
    return None


def current_think(
    agent: dict[str, Any] | str, briefing: Briefing
) -> dict[str, Any] | list[dict[str, Any]] | None:
    """The think settings with what the bot changed: its instructions in place of
    the prompt, then its context texts (each entry of a fallback list alike)."""
    think = think_of(agent)
    if think is None or (briefing.instructions is None and not briefing.contexts):
        return think

    def update(entry: dict[str, Any]) -> dict[str, Any]:
        base = entry.get("prompt")
        prompt = briefing.prompt(base if isinstance(base, str) else None)
        return entry | {"prompt": prompt or ""}

    return update(think) if isinstance(think, dict) else [update(t) for t in think]


def _history(role: str, content: str) -> dict[str, Any]:
    return {"type": "History", "role": role, "content": content}


def _function_call(turn: memory.ToolTurn) -> dict[str, Any]:
    """A tool call in Deepgram's History form: its response is the result's text,
    or what became of a call that had none."""
    response = turn.output if turn.output is not None else memory.tool_note(turn)
    call = {
        "id": turn.call_id,
        "name": turn.name,
        "client_side": True,
        "arguments": turn.arguments_json,
        "response": response,
    }
    return {"type": "History", "function_calls": [call]}


# -- the dialect ------------------------------------------------------------------------------


class DeepgramAgent(Dialect):
    name: ClassVar[str] = "deepgram-agent"
    default_url: ClassVar[str | None] = "wss://agent.deepgram.com/v1/agent/converse"
    auth_env: ClassVar[str | None] = "DEEPGRAM_API_KEY"
    auth_scheme: ClassVar[str] = "Token"
    summary: ClassVar[str] = "Deepgram's Voice Agent API"
    flags: ClassVar[tuple[DialectFlag, ...]] = (DialectFlag("--session", "the Settings message"),)
    sample_rates: ClassVar[tuple[int, ...]] = (8000, 16000, 24000)
    default_sample_rate: ClassVar[int] = 16000
    server_audio: ClassVar[str] = "binary audio"
    commands: ClassVar[frozenset[str]] = frozenset(COMMANDS.values())
    session_cap_s: ClassVar[float | None] = SESSION_CAP_S
    rotate_margin_s: ClassVar[float] = ROTATE_MARGIN_S

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._prepared = prepare_settings(options.session, options.sample_rate)
        self.briefing = Briefing()
        """What the bot's `instructions` and `context` changed, for every later session."""

    def refuses(self, command: str) -> str | None:
        if (
            command in ("instructions", "context")
            and think_of(self._prepared.settings.agent) is None
        ):
            # UpdateThink needs the think settings to send whole, and a new
            # session's Settings must carry the change: an agent id has neither.
            return (
                f"--protocol {self.name} needs `agent.think` in --session (an object, not an "
                f"agent id) for `{command}`: the change is sent as, and kept in, those settings"
            )
        return super().refuses(command)

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(self.options.sample_rate)

    def problems(self) -> Sequence[str]:
        return self._prepared.problems

    def warnings(self) -> Sequence[str]:
        return self._prepared.warnings

    @property
    def commands_dropped(self) -> int:
        return self.briefing.contexts_dropped

    def session(self, history: MemorySnapshot | None = None) -> DeepgramAgentSession:
        return DeepgramAgentSession(
            self._prepared.settings,
            self.options.sample_rate,
            max_message_bytes=self.options.max_message_bytes,
            briefing=self.briefing,
            history=history,
        )
