"""Fake agent services, written from the vendors' documentation, for tests.

- RealtimeServer: OpenAI Realtime (GA). Server VAD on the audio it is sent,
  replies streamed faster than real time in uneven deltas, `speech_started`
  in the middle of a reply (from the audio, or on cue: `barge_in_at_ms`),
  truncation checked against the audio it sent ("Audio content of Xms is
  already shorter than Yms"), the 60-minute close (1001, "maximum duration")
  after `max_session_s`, and HTTP 401 at the handshake for a wrong key.
- AgentServer: Deepgram Voice Agent v1. Welcome; Settings first, then
  SettingsApplied; audio only after it; UserStartedSpeaking mid-reply; binary
  linear16 replies; KeepAlive tolerated (and needed: idle connections close);
  HTTP 401 for a wrong token.

Every message a server sends is built with the vendor's SDK models, and every
message it receives is validated with them, strictly: a field the SDK does not
know is a violation (`conn.violations`), answered as the service would. Where
the docs are silent (an error's exact code, how a 2-hour Deepgram session
closes) the behaviour is a stated guess, marked "modelled".

`AgentClient` drives a dialect Session over a real websocket the way the
sidecar's link will, with a real-time playout model, so the servers can be
tested before the dialects are wired into the sidecar process.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import msgspec
import numpy as np
import pydantic
import trio
import trio_websocket
from deepgram.agent.v1.types import (
    AgentV1AgentAudioDone,
    AgentV1AgentStartedSpeaking,
    AgentV1AgentThinking,
    AgentV1ConversationText,
    AgentV1Error,
    AgentV1FunctionCallCancelled,
    AgentV1FunctionCallCancelledFunctionsItem,
    AgentV1FunctionCallRequest,
    AgentV1FunctionCallRequestFunctionsItem,
    AgentV1InjectAgentMessage,
    AgentV1InjectionRefused,
    AgentV1InjectUserMessage,
    AgentV1KeepAlive,
    AgentV1PromptUpdated,
    AgentV1SendFunctionCallResponse,
    AgentV1Settings,
    AgentV1SettingsApplied,
    AgentV1ThinkUpdated,
    AgentV1UpdatePrompt,
    AgentV1UpdateThink,
    AgentV1UserStartedSpeaking,
    AgentV1Welcome,
)
from openai.types.realtime import (
    ConversationItemAdded,
    ConversationItemDone,
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemTruncatedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeConversationItemAssistantMessage,
    RealtimeConversationItemFunctionCall,
    RealtimeConversationItemFunctionCallOutput,
    RealtimeConversationItemSystemMessage,
    RealtimeConversationItemUserMessage,
    RealtimeErrorEvent,
    RealtimeResponse,
    RealtimeSessionCreateRequest,
    ResponseAudioDeltaEvent,
    ResponseAudioDoneEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_error import RealtimeError
from openai.types.realtime.realtime_response_status import RealtimeResponseStatus
from openai.types.realtime.response_content_part_added_event import Part
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from sidecar.dialects.base import (
    MIXED,
    AddContext,
    AgentCommand,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    CutAudio,
    Dialect,
    DtmfOut,
    ErrorOut,
    Heard,
    Incoming,
    Invalid,
    MarkOut,
    Notice,
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
)
from sidecar.messages import ErrorCode, MessageError

Json = dict[str, Any]

# -- strict validation with the SDKs' models --------------------------------------------


def unknown_fields(value: object, path: str = "$") -> list[str]:
    """Every field, at any depth, that the SDK model it was validated into does not know.

    Both SDKs' models keep unknown fields as pydantic "extras" (they allow
    them, to survive API additions); for a *client* of the API an extra is a
    field the service does not document, so here it counts as an error.
    """
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found += [f"{path}.{key}" for key in value.__pydantic_extra__ or {}]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += unknown_fields(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unknown_fields(item, f"{path}.{key}")
    return found


_client_events: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeClientEvent)


def validate_realtime_client_event(data: Json) -> tuple[pydantic.BaseModel | None, list[str]]:
    """(model, problems): the event as the openai SDK reads it, and what is wrong with it."""
    try:
        model = _client_events.validate_python(data)
    except pydantic.ValidationError as exc:
        return None, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    assert isinstance(model, pydantic.BaseModel)
    return model, [f"unknown field {p}" for p in unknown_fields(model)]


def validate_agent_settings(data: Json) -> tuple[AgentV1Settings | None, list[str]]:
    """(model, problems) for a Deepgram Settings message, by the deepgram SDK."""
    try:
        model = AgentV1Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        return None, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return model, [f"unknown field {p}" for p in unknown_fields(model)]


# -- what both servers share ------------------------------------------------------------


def tone(freq: float, ms: float, rate: int, level: float = 0.3, start: int = 0) -> bytes:
    n = np.arange(start, start + round(ms * rate / 1000))
    return (np.sin(2 * np.pi * freq * n / rate) * level * 32767).round().astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return math.sqrt(float(np.mean(x * x))) if len(x) else 0.0


@dataclass
class Vad:
    """Energy VAD over the chunks a client sends: speech starts on a loud chunk and
    stops after `silence_ms` of quiet ones (what server VAD does, crudely)."""

    rate: int
    threshold: float = 600.0
    silence_ms: float = 300.0
    position_ms: float = 0.0
    speaking: bool = False
    quiet_ms: float = 0.0

    def feed(self, pcm: bytes) -> str | None:
        """ "start", "stop" or None, for one chunk."""
        ms = len(pcm) * 500 / self.rate
        loud = rms(pcm) > self.threshold
        self.position_ms += ms
        if loud:
            self.quiet_ms = 0.0
            if not self.speaking:
                self.speaking = True
                return "start"
        elif self.speaking:
            self.quiet_ms += ms
            if self.quiet_ms >= self.silence_ms:
                self.speaking = False
                return "stop"
        return None


@dataclass
class Conn:
    ws: ServerConnection
    headers: Headers
    path: str
    received: list[Json] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    sent: list[str | bytes] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    """Set when the connection ends, however: background threads stop on it."""
    close_code: int | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    def send(self, message: str | bytes | pydantic.BaseModel) -> None:
        wire = message.model_dump_json() if isinstance(message, pydantic.BaseModel) else message
        with self.lock:
            if self.ended.is_set():
                return
            try:
                self.ws.send(wire)
            except Exception:  # the peer went away: the handler notices and ends
                self.ended.set()
                return
            self.sent.append(wire)

    def close(self, code: int, reason: str) -> None:
        self.ended.set()
        with contextlib.suppress(Exception):  # already closed, or the peer is gone
            self.ws.close(code, reason)

    def sent_json(self, type_: str | None = None) -> list[Json]:
        with self.lock:
            texts = [m for m in self.sent if isinstance(m, str)]
        out = [json.loads(m) for m in texts]
        return [m for m in out if type_ is None or m.get("type") == type_]


class _FakeServer:
    """websockets' threaded server on 127.0.0.1, port 0, with an auth check."""

    def __init__(
        self,
        accept: Callable[[str], bool],
        reject_body: str,
        auth_header: str = "Authorization",
        path: str | None = None,
    ) -> None:
        self._auth_header = auth_header
        self._path = path
        """The one request target served (None: any); another is a 404."""
        self._accept = accept
        self._reject_body = reject_body
        self.connections: list[Conn] = []
        self.handshakes = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.socket.getsockname()[1])

    def start(self) -> Self:
        # A short close_timeout: a client that never closes its TCP side (one whose
        # handshake was refused, say) must not hold stop() for websockets' 10 s.
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._request,
            max_size=None,
            close_timeout=0.5,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            conn.close(1001, "server stopping")
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def current(self) -> Conn:
        with self._lock:
            return self.connections[-1]

    def _request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.handshakes += 1
        if self._path is not None and request.path != self._path:
            return ws.respond(404, "Not Found\n")
        if self._accept(request.headers.get(self._auth_header, "")):
            return None
        with self._lock:
            self.rejected += 1
        response = ws.respond(401, self._reject_body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = Conn(ws, ws.request.headers, ws.request.path)
        with self._lock:
            self.connections.append(conn)
        try:
            self.opened(conn)
            for raw in ws:
                self.message(conn, raw)
        except Exception as exc:  # a dropped connection ends the handler, however it drops
            if not isinstance(exc, OSError) and "ConnectionClosed" not in type(exc).__name__:
                conn.violations.append(f"server error: {exc!r}")
        finally:
            conn.ended.set()
            conn.close_code = ws.close_code
            conn.closed.set()

    def opened(self, conn: Conn) -> None:
        raise NotImplementedError

    def message(self, conn: Conn, raw: str | bytes) -> None:
        raise NotImplementedError


def _after(conn: Conn, seconds: float, action: Callable[[], None]) -> None:
    """Run `action` in `seconds`, unless the connection has ended by then."""

    def run() -> None:
        if not conn.ended.wait(seconds):
            action()

    threading.Thread(target=run, daemon=True).start()


def _wind_down(conn: Conn, state: _RealtimeState | _AgentState) -> bool:
    """May a new reply start? Yes when idle, or once a cancelled one has finished."""
    with conn.lock:
        flag, thread = state.responding, state.thread
    if flag is None:
        return True
    if not flag.is_set() or thread is None:
        return False
    thread.join(timeout=5)
    return not thread.is_alive()


def _ids(prefix: str) -> Iterator[str]:
    return (f"{prefix}_{n:04d}" for n in itertools.count(1))


# -- OpenAI Realtime ------------------------------------------------------------------------

MAX_DURATION = "Your session hit the maximum duration of 60 minutes."
"""The reason the Realtime API closes with (1001) after 60 minutes, as users report it."""


@dataclass
class RealtimeConfig:
    api_key: str = "sk-test"
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    """The key is accepted as `auth_header: auth_scheme KEY` ("" : the key alone)."""
    path: str = "/v1/realtime?model=gpt-realtime"
    """The request target served: OpenAI's, or Azure's or xAI's (compatible APIs)."""
    reply_ms: int = 1500
    speed: float = 4.0
    """How much faster than real time replies are streamed."""
    delta_ms: tuple[int, ...] = (40, 120, 20, 200, 60, 100, 80)
    """Reply deltas cycle through these lengths: uneven, as the API's are."""
    tone_hz: float = 440.0
    barge_in_at_ms: int | None = None
    """Pretend the user spoke once this much of the first reply was sent."""
    barge_in_reply: int = 1
    """Which reply (counting a tool call's) the barge-in cue is for."""
    words: str | None = None
    """The transcript of every reply, in place of "reply of N ms": of a cut
    reply, the share of it its audio sent so far stands for, as the API
    transcribes only the audio it generated."""
    answer_barge_in: bool = True
    """After a barge-in on cue, commit the turn and answer it."""
    max_session_s: float | None = None
    expiry_error: bool = False
    """Send an `error` (code session_expired) just before the session-length close."""
    vad_threshold: float = 600.0
    silence_ms: float = 300.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    """The next replies call these functions (name, arguments JSON) instead of
    speaking, one reply each, in order; the replies after them speak."""


@dataclass
class _Item:
    role: str
    sent_bytes: int = 0
    truncated_ms: int | None = None


@dataclass(frozen=True)
class _ReplyIds:
    response_id: str
    item_id: str


@dataclass
class _RealtimeState:
    session: Json = field(default_factory=dict)
    vad: Vad = field(default_factory=lambda: Vad(24000))
    items: dict[str, _Item] = field(default_factory=dict)
    responding: threading.Event | None = None
    """The running reply's cancel flag (set = cancel), None when idle."""
    thread: threading.Thread | None = None
    replies: int = 0
    user_item: str | None = None
    truncations: list[tuple[str, int, bool]] = field(default_factory=list)
    """(item_id, audio_end_ms, accepted) for every truncate received."""
    calls: dict[str, bool] = field(default_factory=dict)
    """Every function call made: call_id -> answered."""
    outputs: list[tuple[str, str]] = field(default_factory=list)
    """(call_id, output) of every function_call_output item received."""
    messages: list[tuple[str, str]] = field(default_factory=list)
    """(role, text) of every message item the client created."""
    instructions: list[str | None] = field(default_factory=list)
    """Each client `response.create`'s own instructions (None: the session's)."""
    refused_creates: int = 0
    """`response.create`s refused because a response was active."""
    cancel_reason: str = "turn_detected"


class RealtimeServer(_FakeServer):
    def __init__(self, config: RealtimeConfig | None = None) -> None:
        self.config = config or RealtimeConfig()
        key = self.config.api_key
        body = json.dumps(
            {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "param": None,
                }
            }
        )
        scheme = self.config.auth_scheme
        expected = f"{scheme} {key}" if scheme else key
        super().__init__(
            lambda header: header == expected, body, self.config.auth_header, self.config.path
        )
        self.states: dict[int, _RealtimeState] = {}
        self._events = _ids("event")
        self._item_ids = _ids("item")
        self._response_ids = _ids("resp")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.config.path}"

    def state(self, conn: Conn) -> _RealtimeState:
        return self.states[id(conn)]

    # -- connection ----------------------------------------------------------------

    def opened(self, conn: Conn) -> None:
        state = self.states[id(conn)] = _RealtimeState()
        state.vad = Vad(24000, self.config.vad_threshold, self.config.silence_ms)
        default = RealtimeSessionCreateRequest.model_validate(
            {
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": {"type": "server_vad", "create_response": True},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
                },
            }
        )
        state.session = default.model_dump(mode="json", exclude_none=True)
        conn.send(
            SessionCreatedEvent(type="session.created", event_id=self._event(), session=default)
        )
        if self.config.max_session_s is not None:
            _after(conn, self.config.max_session_s, lambda: self._expire(conn))

    def _expire(self, conn: Conn) -> None:
        if self.config.expiry_error:
            self._error(conn, MAX_DURATION, code="session_expired")
        conn.close(1001, MAX_DURATION)

    def message(self, conn: Conn, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            conn.violations.append("binary message (the API takes JSON text only)")
            self._error(conn, "Binary messages are not supported.", code="invalid_value")
            return
        try:
            data = json.loads(raw)
        except ValueError:
            conn.violations.append(f"not JSON: {raw[:80]!r}")
            self._error(conn, "Invalid JSON.", code="invalid_json")
            return
        if not isinstance(data, dict):
            conn.violations.append(f"not a JSON object: {raw[:80]!r}")
            self._error(conn, "Expected an object.", code="invalid_value")
            return
        conn.received.append(data)
        model, problems = validate_realtime_client_event(data)
        if problems or model is None:
            conn.violations += problems
            self._error(
                conn, "; ".join(problems), code="invalid_value", event_id=data.get("event_id")
            )
            return
        kind = data["type"]
        if kind == "session.update":
            self._session_update(conn, data)
        elif kind == "input_audio_buffer.append":
            self._append(conn, base64.b64decode(data["audio"]))
        elif kind == "conversation.item.truncate":
            self._truncate(conn, data)
        elif kind == "conversation.item.create":
            self._item_create(conn, model)
        elif kind == "response.create":
            response = data.get("response") or {}
            self.state(conn).instructions.append(response.get("instructions"))
            self.respond(conn, response.get("instructions"), by_client=True)
        elif kind == "response.cancel":
            if self.state(conn).responding is None:
                # Modelled on the API's error for a cancel with nothing to cancel.
                self._error(
                    conn, "Cancellation failed: no active response found.",
                    code="response_cancel_not_active",
                )  # fmt: skip
                return
            self._cancel(conn, "client_cancelled")

    # -- client events -------------------------------------------------------------

    def _session_update(self, conn: Conn, data: Json) -> None:
        state = self.state(conn)
        session = data["session"]
        for direction in ("input", "output"):
            fmt = session.get("audio", {}).get(direction, {}).get("format")
            if fmt is not None and fmt != {"type": "audio/pcm", "rate": 24000}:
                conn.violations.append(f"audio.{direction}.format is {fmt}")
        with conn.lock:
            state.session = _merge(state.session, session)
            effective = RealtimeSessionCreateRequest.model_validate(state.session)
        conn.send(
            SessionUpdatedEvent(type="session.updated", event_id=self._event(), session=effective)
        )

    def _append(self, conn: Conn, pcm: bytes) -> None:
        state = self.state(conn)
        if len(pcm) % 2:
            conn.violations.append(f"odd audio length {len(pcm)}")
        conn.audio += pcm
        start_ms = state.vad.position_ms
        change = state.vad.feed(pcm)
        if change == "start":
            self.speech_started(conn, int(start_ms))
        elif change == "stop":
            self.speech_stopped(conn)

    def _truncate(self, conn: Conn, data: Json) -> None:
        state = self.state(conn)
        item_id, end = data["item_id"], data["audio_end_ms"]
        with conn.lock:
            item = state.items.get(item_id)
            error: str | None = None
            if item is None:
                error = f"Item with item_id '{item_id}' not found."
            elif item.role != "assistant":
                error = "Only assistant message items can be truncated."
            elif data["content_index"] != 0:
                error = f"Content index {data['content_index']} does not exist."
            elif end > item.sent_bytes // 48:
                error = (
                    f"Audio content of {item.sent_bytes // 48}ms is already shorter than {end}ms"
                )
            state.truncations.append((item_id, end, error is None))
            if item is not None and error is None:
                item.truncated_ms = end
        if error is not None:
            # Modelled: the message is what users report; the code is our guess.
            self._error(conn, error, code="invalid_value", param="audio_end_ms")
            return
        conn.send(
            ConversationItemTruncatedEvent(
                type="conversation.item.truncated",
                event_id=self._event(),
                item_id=item_id,
                content_index=0,
                audio_end_ms=end,
            )
        )

    def _cancel(self, conn: Conn, reason: str = "turn_detected") -> None:
        state = self.state(conn)
        flag = state.responding
        if flag is not None:
            state.cancel_reason = reason
            flag.set()

    def _item_create(self, conn: Conn, model: pydantic.BaseModel | None) -> None:
        state = self.state(conn)
        item = getattr(model, "item", None)
        if isinstance(item, RealtimeConversationItemFunctionCallOutput):
            with conn.lock:
                known = item.call_id in state.calls
                if known:
                    state.calls[item.call_id] = True
                    state.outputs.append((item.call_id, item.output))
            if not known:
                conn.violations.append(f"output for unknown call {item.call_id!r}")
                # Modelled: the API refuses an output for a call it never made.
                self._error(
                    conn, f"Tool call ID '{item.call_id}' not found in conversation.",
                    code="invalid_tool_call_id", param="item.call_id",
                )  # fmt: skip
                return
        elif isinstance(
            item,
            RealtimeConversationItemUserMessage
            | RealtimeConversationItemSystemMessage
            | RealtimeConversationItemAssistantMessage,
        ):
            if isinstance(item, RealtimeConversationItemAssistantMessage) and any(
                c.type != "output_text" for c in item.content
            ):
                # The API refuses assistant audio items (and the beta's `text`).
                conn.violations.append(f"an assistant item not output_text: {item!r}")
                return
            text = "".join(c.text or "" for c in item.content)
            with conn.lock:
                state.messages.append((item.role, text))
        else:
            conn.violations.append(f"an item the dialect should not create: {item!r}")
            return
        added = item.model_copy(update={"id": next(self._item_ids), "status": "completed"})
        conn.send(
            ConversationItemAdded(
                type="conversation.item.added", event_id=self._event(), item=added
            )
        )

    # -- the user's turn ---------------------------------------------------------------

    def speech_started(self, conn: Conn, audio_start_ms: int) -> None:
        state = self.state(conn)
        state.user_item = next(self._item_ids)
        conn.send(
            InputAudioBufferSpeechStartedEvent(
                type="input_audio_buffer.speech_started",
                event_id=self._event(),
                audio_start_ms=audio_start_ms,
                item_id=state.user_item,
            )
        )
        detection = self._turn_detection(state)
        if detection is not None and detection.get("interrupt_response", True):
            self._cancel(conn)

    def speech_stopped(self, conn: Conn) -> None:
        state = self.state(conn)
        item_id = state.user_item or next(self._item_ids)
        state.user_item = None
        with conn.lock:
            state.items[item_id] = _Item("user")
        conn.send(
            InputAudioBufferSpeechStoppedEvent(
                type="input_audio_buffer.speech_stopped",
                event_id=self._event(),
                audio_end_ms=int(state.vad.position_ms),
                item_id=item_id,
            )
        )
        conn.send(
            InputAudioBufferCommittedEvent(
                type="input_audio_buffer.committed", event_id=self._event(), item_id=item_id
            )
        )
        item = RealtimeConversationItemUserMessage(
            id=item_id, type="message", role="user", status="completed", content=[]
        )
        conn.send(
            ConversationItemAdded(type="conversation.item.added", event_id=self._event(), item=item)
        )
        if state.session.get("audio", {}).get("input", {}).get("transcription") is not None:
            conn.send(
                ConversationItemInputAudioTranscriptionCompletedEvent.model_validate(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "event_id": self._event(),
                        "item_id": item_id,
                        "content_index": 0,
                        "transcript": "what the user said",
                        "usage": {"type": "duration", "seconds": 1.0},
                    }
                )
            )
        detection = self._turn_detection(state)
        if detection is not None and detection.get("create_response", True):
            self.respond(conn)

    @staticmethod
    def _turn_detection(state: _RealtimeState) -> Json | None:
        audio_input = state.session.get("audio", {}).get("input", {})
        detection: Json | None = audio_input.get("turn_detection", {"type": "server_vad"})
        return detection

    # -- the agent's reply -------------------------------------------------------------

    def respond(
        self, conn: Conn, instructions: str | None = None, *, by_client: bool = False
    ) -> None:
        """Start a reply (what `response.create`, or the end of the user's turn, does)."""
        state = self.state(conn)
        with conn.lock:
            active = state.responding is not None and not state.responding.is_set()
        if active and by_client:
            with conn.lock:
                state.refused_creates += 1
            # The code and text many clients handle (no OpenAI doc page states them).
            self._error(
                conn,
                "Conversation already has an active response in progress. Wait until "
                "the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
            return
        if not _wind_down(conn, state):
            return  # one response at a time, as the API does
        with conn.lock:
            state.responding = threading.Event()
            state.cancel_reason = "turn_detected"
            state.replies += 1
            first = state.replies == self.config.barge_in_reply
            call = self.config.calls.pop(0) if self.config.calls else None
        if call is not None:
            target: Callable[..., None] = self._call_reply
            args: tuple[Any, ...] = (conn, state.responding, call)
        else:
            target, args = self._reply, (conn, state.responding, first, instructions)
        state.thread = threading.Thread(target=target, args=args, daemon=True)
        state.thread.start()

    def call_function(self, conn: Conn, name: str, arguments: str) -> None:
        """On cue: the next reply calls `name` instead of speaking."""
        with conn.lock:
            self.config.calls.append((name, arguments))
        self.respond(conn)

    def _call_reply(self, conn: Conn, cancel: threading.Event, call: tuple[str, str]) -> None:
        """A reply that is one function call: the events the API sends for it."""
        state = self.state(conn)
        name, arguments = call
        response_id, item_id = next(self._response_ids), next(self._item_ids)
        call_id = f"call_{item_id}"
        conn.send(
            ResponseCreatedEvent(
                type="response.created",
                event_id=self._event(),
                response=RealtimeResponse(
                    id=response_id, object="realtime.response", status="in_progress", output=[]
                ),
            )
        )
        item = RealtimeConversationItemFunctionCall(
            id=item_id, type="function_call", call_id=call_id, name=name, arguments="",
            status="in_progress", object="realtime.item",
        )  # fmt: skip
        conn.send(
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                event_id=self._event(),
                response_id=response_id,
                output_index=0,
                item=item,
            )
        )
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            conn.send(
                ResponseFunctionCallArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta", event_id=self._event(),
                    response_id=response_id, item_id=item_id, output_index=0,
                    call_id=call_id, delta=piece,
                )
            )  # fmt: skip
            cancel.wait(0.02 / self.config.speed)
        conn.send(
            ResponseFunctionCallArgumentsDoneEvent(
                type="response.function_call_arguments.done", event_id=self._event(),
                response_id=response_id, item_id=item_id, output_index=0,
                call_id=call_id, name=name, arguments=arguments,
            )
        )  # fmt: skip
        cancelled = cancel.is_set()
        status: Literal["completed", "incomplete"] = "incomplete" if cancelled else "completed"
        done_item = item.model_copy(update={"arguments": arguments, "status": status})
        if not cancelled:
            with conn.lock:
                state.calls[call_id] = False
        conn.send(
            ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                event_id=self._event(),
                response_id=response_id,
                output_index=0,
                item=done_item,
            )
        )
        conn.send(
            ConversationItemDone(
                type="conversation.item.done", event_id=self._event(), item=done_item
            )
        )
        self._response_done(conn, response_id, cancelled, [done_item])
        with conn.lock:
            if state.responding is cancel:  # not a newer reply's
                state.responding = None

    def _response_done(
        self, conn: Conn, response_id: str, cancelled: bool, output: list[Any]
    ) -> None:
        state = self.state(conn)
        with conn.lock:
            # The API has finished a response before it says so: a
            # response.create answering this response.done must find none active
            # (the reply thread clearing the flag only after it raced the client).
            state.responding = None
        status: Literal["cancelled", "completed"] = "cancelled" if cancelled else "completed"
        reason: Any = state.cancel_reason if cancelled else None
        details = RealtimeResponseStatus(type=status, reason=reason)
        conn.send(
            ResponseDoneEvent(
                type="response.done",
                event_id=self._event(),
                response=RealtimeResponse(
                    id=response_id,
                    object="realtime.response",
                    status=status,
                    status_details=details,
                    output=output,
                ),
            )
        )

    def _reply(
        self, conn: Conn, cancel: threading.Event, first: bool, instructions: str | None = None
    ) -> None:
        state, config = self.state(conn), self.config
        response_id, item_id = next(self._response_ids), next(self._item_ids)
        with conn.lock:
            item_state = state.items[item_id] = _Item("assistant")
        ids = _ReplyIds(response_id, item_id)
        conn.send(
            ResponseCreatedEvent(
                type="response.created",
                event_id=self._event(),
                response=RealtimeResponse(
                    id=response_id, object="realtime.response", status="in_progress", output=[]
                ),
            )
        )
        item = RealtimeConversationItemAssistantMessage(
            id=item_id, type="message", role="assistant", status="in_progress", content=[]
        )
        conn.send(
            ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                event_id=self._event(),
                response_id=response_id,
                output_index=0,
                item=item,
            )
        )
        conn.send(
            ConversationItemAdded(type="conversation.item.added", event_id=self._event(), item=item)
        )
        conn.send(
            ResponseContentPartAddedEvent(
                type="response.content_part.added",
                event_id=self._event(),
                content_index=0,
                part=Part(type="audio", transcript=""),
                response_id=ids.response_id,
                item_id=ids.item_id,
                output_index=0,
            )
        )
        sent_ms, barged = 0, False
        for ms in itertools.cycle(config.delta_ms):
            if cancel.is_set() or conn.ended.is_set() or sent_ms >= config.reply_ms:
                break
            ms = min(ms, config.reply_ms - sent_ms)
            pcm = tone(config.tone_hz, ms, 24000, start=sent_ms * 24)
            conn.send(
                ResponseAudioDeltaEvent(
                    type="response.output_audio.delta",
                    event_id=self._event(),
                    content_index=0,
                    delta=base64.b64encode(pcm).decode(),
                    response_id=ids.response_id,
                    item_id=ids.item_id,
                    output_index=0,
                )
            )
            with conn.lock:
                item_state.sent_bytes += len(pcm)
            sent_ms += ms
            cue = config.barge_in_at_ms
            if first and not barged and cue is not None and sent_ms >= cue:
                barged = True
                self._barge_in(conn)
                continue
            cancel.wait(ms / 1000 / config.speed)
        words = f"reply of {sent_ms} ms" if instructions is None else instructions
        if instructions is None and config.words is not None:
            words = config.words[: len(config.words) * sent_ms // config.reply_ms]
        self._finish(conn, cancel.is_set(), words, ids)
        with conn.lock:
            if state.responding is cancel:  # not a newer reply's
                state.responding = None

    def _barge_in(self, conn: Conn) -> None:
        """The user speaks over the reply (on cue): what server VAD would report."""
        self.speech_started(conn, int(self.state(conn).vad.position_ms))
        if self.config.answer_barge_in:
            # Wait for this reply to wind down, as the user's turn ends later anyway.
            _after(conn, 0.2, lambda: self.speech_stopped(conn))

    def _finish(self, conn: Conn, cancelled: bool, words: str, ids: _ReplyIds) -> None:
        conn.send(
            ResponseAudioDoneEvent(
                type="response.output_audio.done",
                event_id=self._event(),
                content_index=0,
                response_id=ids.response_id,
                item_id=ids.item_id,
                output_index=0,
            )
        )
        conn.send(
            ResponseAudioTranscriptDoneEvent(
                type="response.output_audio_transcript.done",
                event_id=self._event(),
                content_index=0,
                transcript=words,
                response_id=ids.response_id,
                item_id=ids.item_id,
                output_index=0,
            )
        )
        conn.send(
            ResponseContentPartDoneEvent.model_validate(
                {
                    "type": "response.content_part.done",
                    "event_id": self._event(),
                    "content_index": 0,
                    "part": {"type": "audio", "transcript": words},
                    "response_id": ids.response_id,
                    "item_id": ids.item_id,
                    "output_index": 0,
                }
            )
        )
        item = RealtimeConversationItemAssistantMessage(
            id=ids.item_id,
            type="message",
            role="assistant",
            status="incomplete" if cancelled else "completed",
            content=[],
        )
        conn.send(
            ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                event_id=self._event(),
                response_id=ids.response_id,
                output_index=0,
                item=item,
            )
        )
        conn.send(
            ConversationItemDone(type="conversation.item.done", event_id=self._event(), item=item)
        )
        self._response_done(conn, ids.response_id, cancelled, [item])

    # -- helpers -----------------------------------------------------------------------

    def _event(self) -> str:
        return next(self._events)

    def _error(
        self,
        conn: Conn,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        error = RealtimeError(
            type="invalid_request_error",
            code=code,
            message=message,
            param=param,
            event_id=event_id,
        )
        conn.send(RealtimeErrorEvent(type="error", event_id=self._event(), error=error))


def _merge(base: Json, update: Json) -> Json:
    """`session.update` semantics: only the fields present are changed (objects deeply)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# -- Deepgram Voice Agent ---------------------------------------------------------------------


@dataclass
class AgentConfig:
    api_key: str = "dg-test"
    reply_ms: int = 1500
    speed: float = 4.0
    chunk_ms: tuple[int, ...] = (60, 20, 140, 40, 100, 80)
    tone_hz: float = 330.0
    barge_in_at_ms: int | None = None
    answer_barge_in: bool = True
    idle_timeout_s: float | None = 10.0
    """No audio and no KeepAlive for this long: Error CLIENT_MESSAGE_TIMEOUT, close."""
    max_session_s: float | None = None
    vad_threshold: float = 600.0
    silence_ms: float = 300.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    """The next user turns are answered with a client-side FunctionCallRequest
    for these (name, arguments JSON) instead of speech, one turn each."""
    words: str | None = None
    """The text of the agent's answers, in place of "the agent's answer"."""


@dataclass
class _AgentState:
    rate: int | None = None
    """Set by an accepted Settings (its audio.input.sample_rate)."""
    vad: Vad | None = None
    keepalives: int = 0
    last_message: float = field(default_factory=time.monotonic)
    responding: threading.Event | None = None
    thread: threading.Thread | None = None
    replies: int = 0
    settings: Json = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    """Client-side calls requested and not yet answered or cancelled: id -> name."""
    answers: list[tuple[str, str, str]] = field(default_factory=list)
    """(id, name, content) of every FunctionCallResponse received."""
    injected: list[tuple[str, str]] = field(default_factory=list)
    """(type, text) of every InjectAgentMessage / InjectUserMessage accepted."""
    refused: int = 0
    prompt_updates: list[str] = field(default_factory=list)
    thinks: list[Any] = field(default_factory=list)
    """The `think` of every UpdateThink received."""


def _strict_deepgram(model: type[pydantic.BaseModel], data: Json) -> list[str]:
    """What the deepgram SDK finds wrong with a client message, strictly."""
    try:
        parsed = model.model_validate(data)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return [f"unknown field {p}" for p in unknown_fields(parsed)]


_DEEPGRAM_CLIENT: dict[str, type[pydantic.BaseModel]] = {
    "FunctionCallResponse": AgentV1SendFunctionCallResponse,
    "InjectAgentMessage": AgentV1InjectAgentMessage,
    "InjectUserMessage": AgentV1InjectUserMessage,
    "UpdatePrompt": AgentV1UpdatePrompt,
    "UpdateThink": AgentV1UpdateThink,
}


class AgentServer(_FakeServer):
    def __init__(self, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()
        key = self.config.api_key
        body = json.dumps({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."})
        super().__init__(lambda header: header in (f"Token {key}", f"Bearer {key}"), body)
        self.states: dict[int, _AgentState] = {}

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent/converse"

    def state(self, conn: Conn) -> _AgentState:
        return self.states[id(conn)]

    def opened(self, conn: Conn) -> None:
        self.states[id(conn)] = _AgentState()
        conn.send(AgentV1Welcome(type="Welcome", request_id=str(uuid.uuid4())))
        if self.config.idle_timeout_s is not None:
            threading.Thread(target=self._watch_idle, args=(conn,), daemon=True).start()
        if self.config.max_session_s is not None:
            # Modelled: Deepgram documents the 2-hour limit, not how the close looks.
            _after(conn, self.config.max_session_s, lambda: conn.close(1000, "session length"))

    def _watch_idle(self, conn: Conn) -> None:
        limit = self.config.idle_timeout_s
        assert limit is not None
        state = self.state(conn)
        while not conn.ended.wait(min(limit / 4, 0.25)):
            if time.monotonic() - state.last_message > limit:
                self._error(conn, "CLIENT_MESSAGE_TIMEOUT", "No message from the client in time.")
                conn.close(1000, "client message timeout")
                return

    def message(self, conn: Conn, raw: str | bytes) -> None:
        state = self.state(conn)
        state.last_message = time.monotonic()
        if isinstance(raw, bytes):
            self._audio(conn, raw)
            return
        try:
            data = json.loads(raw)
        except ValueError:
            conn.violations.append(f"not JSON: {raw[:80]!r}")
            self._error(conn, "UNPARSABLE_CLIENT_MESSAGE", "The message is not JSON.")
            return
        conn.received.append(data)
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "Settings":
            self._settings(conn, data)
        elif kind == "KeepAlive":
            if extras := unknown_fields(AgentV1KeepAlive.model_validate(data)):
                conn.violations.append(f"KeepAlive has unknown fields {extras}")
            state.keepalives += 1
        elif isinstance(kind, str) and kind in _DEEPGRAM_CLIENT:
            if problems := _strict_deepgram(_DEEPGRAM_CLIENT[kind], data):
                conn.violations += [f"{kind}: {p}" for p in problems]
                self._error(conn, "UNPARSABLE_CLIENT_MESSAGE", "; ".join(problems))
                return
            if state.vad is None:
                conn.violations.append(f"{kind} before Settings")
                return
            self._control(conn, kind, data)
        else:
            conn.violations.append(f"unexpected message {kind!r}")
            self._error(conn, "UNPARSABLE_CLIENT_MESSAGE", f"Unknown message type {kind!r}.")

    def _control(self, conn: Conn, kind: str, data: Json) -> None:
        """A client message of the control kinds, already validated."""
        state = self.state(conn)
        if kind == "FunctionCallResponse":
            with conn.lock:
                name = state.pending.pop(data["id"], None)
                state.answers.append((data["id"], data["name"], data["content"]))
            if name is None or name != data["name"]:
                conn.violations.append(f"FunctionCallResponse for no open call: {data}")
                return
            # Deepgram: the agent goes on by itself with the function's result.
            self.respond(conn, f"the answer is {data['content']}")
        elif kind == "InjectAgentMessage":
            with conn.lock:
                busy = state.responding is not None and not state.responding.is_set()
            if busy and data.get("behavior") in (None, "default"):
                with conn.lock:
                    state.refused += 1
                conn.send(
                    AgentV1InjectionRefused(
                        type="InjectionRefused", message="The agent is speaking."
                    )
                )
                return
            with conn.lock:
                state.injected.append((kind, data["message"]))
            self.respond(conn, data["message"])
        elif kind == "InjectUserMessage":
            with conn.lock:
                state.injected.append((kind, data["content"]))
            conn.send(
                AgentV1ConversationText(
                    type="ConversationText", role="user", content=data["content"]
                )
            )
            self._answer_turn(conn)
        elif kind == "UpdatePrompt":
            with conn.lock:
                state.prompt_updates.append(data["prompt"])
            conn.send(AgentV1PromptUpdated(type="PromptUpdated"))
        elif kind == "UpdateThink":
            with conn.lock:
                state.thinks.append(data["think"])
            conn.send(AgentV1ThinkUpdated(type="ThinkUpdated"))

    def request_call(self, conn: Conn, name: str, arguments: str, client_side: bool = True) -> str:
        """On cue: ask the client to run `name`; the call's id."""
        call_id = f"fc_{uuid.uuid4().hex[:8]}"
        if client_side:
            with conn.lock:
                self.state(conn).pending[call_id] = name
        conn.send(
            AgentV1FunctionCallRequest(
                type="FunctionCallRequest",
                functions=[
                    AgentV1FunctionCallRequestFunctionsItem(
                        id=call_id, name=name, arguments=arguments, client_side=client_side
                    )
                ],
            )
        )
        return call_id

    def cancel_calls(self, conn: Conn) -> None:
        """On cue: withdraw every open call (the user spoke again)."""
        with conn.lock:
            pending, self.state(conn).pending = self.state(conn).pending, {}
        items = [
            AgentV1FunctionCallCancelledFunctionsItem(id=id_, name=name)
            for id_, name in pending.items()
        ]
        conn.send(AgentV1FunctionCallCancelled(type="FunctionCallCancelled", functions=items))

    def _settings(self, conn: Conn, data: Json) -> None:
        state = self.state(conn)
        state.settings = data
        if state.rate is not None:
            conn.violations.append("a second Settings")
        model, problems = validate_agent_settings(data)
        if model is None or problems:
            conn.violations += problems
            # Deepgram: an Error ends the session; the connection closes after it.
            self._error(conn, "UNPARSABLE_CLIENT_MESSAGE", "; ".join(problems))
            conn.close(1008, "invalid Settings")
            return
        audio_in, audio_out = model.audio.input, model.audio.output
        if audio_in is None or audio_out is None:
            conn.violations.append("Settings without audio.input and audio.output")
            return
        if audio_in.encoding != "linear16" or audio_out.encoding != "linear16":
            conn.violations.append(f"encodings {audio_in.encoding}/{audio_out.encoding}")
        if audio_out.container != "none":
            conn.violations.append(f"output container {audio_out.container!r}")
        if audio_out.sample_rate != audio_in.sample_rate:
            conn.violations.append("input and output rates differ")
        state.rate = audio_in.sample_rate
        state.vad = Vad(state.rate, self.config.vad_threshold, self.config.silence_ms)
        conn.send(AgentV1SettingsApplied(type="SettingsApplied"))
        agent = data.get("agent")
        if isinstance(agent, dict) and isinstance(agent.get("greeting"), str):
            self.respond(conn, agent["greeting"])

    def _audio(self, conn: Conn, pcm: bytes) -> None:
        state = self.state(conn)
        if state.vad is None:
            conn.violations.append("audio before SettingsApplied")
            # Modelled: the docs say only that Settings must come before any audio.
            self._error(conn, "UNPARSABLE_CLIENT_MESSAGE", "Audio received before Settings.")
            return
        conn.audio += pcm
        change = state.vad.feed(pcm)
        if change == "start":
            self.user_started_speaking(conn)
        elif change == "stop":
            self.user_stopped_speaking(conn)

    def user_started_speaking(self, conn: Conn) -> None:
        conn.send(AgentV1UserStartedSpeaking(type="UserStartedSpeaking"))
        flag = self.state(conn).responding
        if flag is not None:
            flag.set()

    def user_stopped_speaking(self, conn: Conn) -> None:
        conn.send(
            AgentV1ConversationText(
                type="ConversationText", role="user", content="what the user said"
            )
        )
        conn.send(AgentV1AgentThinking(type="AgentThinking", content="considering it"))
        self._answer_turn(conn)

    def _answer_turn(self, conn: Conn) -> None:
        with conn.lock:
            call = self.config.calls.pop(0) if self.config.calls else None
        if call is not None:
            self.request_call(conn, *call)
        else:
            self.respond(conn, self.config.words or "the agent's answer")

    def respond(self, conn: Conn, text: str) -> None:
        state = self.state(conn)
        if not _wind_down(conn, state):
            return
        with conn.lock:
            state.responding = threading.Event()
            state.replies += 1
            first = state.replies == 1
        args = (conn, state.responding, text, first)
        state.thread = threading.Thread(target=self._reply, args=args, daemon=True)
        state.thread.start()

    def _reply(self, conn: Conn, cancel: threading.Event, text: str, first: bool) -> None:
        state, config = self.state(conn), self.config
        assert state.rate is not None
        conn.send(AgentV1ConversationText(type="ConversationText", role="assistant", content=text))
        conn.send(
            AgentV1AgentStartedSpeaking(
                type="AgentStartedSpeaking", total_latency=0.42, tts_latency=0.12, ttt_latency=0.3
            )
        )
        sent_ms = 0
        for ms in itertools.cycle(config.chunk_ms):
            if cancel.is_set() or conn.ended.is_set() or sent_ms >= config.reply_ms:
                break
            ms = min(ms, config.reply_ms - sent_ms)
            conn.send(tone(config.tone_hz, ms, state.rate, start=sent_ms * state.rate // 1000))
            sent_ms += ms
            if first and config.barge_in_at_ms is not None and sent_ms >= config.barge_in_at_ms:
                self.user_started_speaking(conn)
                if config.answer_barge_in:
                    _after(conn, 0.2, lambda: self.user_stopped_speaking(conn))
                break
            cancel.wait(ms / 1000 / config.speed)
        with conn.lock:
            # Done before it says so (see the Realtime fake's response.done).
            if state.responding is cancel:
                state.responding = None
        if not cancel.is_set():
            conn.send(AgentV1AgentAudioDone(type="AgentAudioDone"))

    def _error(self, conn: Conn, code: str, description: str) -> None:
        conn.send(AgentV1Error(type="Error", code=code, description=description))


# -- a client that drives a dialect Session ----------------------------------------------------


@dataclass
class _Queued:
    segment: str | None
    rate: int
    remaining: int
    """Bytes not yet played."""
    played: int = 0


class Playout:
    """What the bot hears: queued PlayAudio, consumed at real time by a clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._queue: list[_Queued] = []
        self._last = clock()
        self.played: dict[str | None, int] = {}
        """Bytes played per segment (None: audio without one)."""

    def add(self, audio: PlayAudio) -> None:
        self._advance()
        self._queue.append(_Queued(audio.segment, audio.rate, len(audio.pcm)))

    def clear(self) -> ClearedOut:
        """Drop what is queued; say which segment was cut, and how much of it was heard."""
        self._advance()
        if not self._queue:
            return ClearedOut()
        head = self._queue[0]
        self._queue.clear()
        if head.segment is None:
            return ClearedOut()
        heard = self.played.get(head.segment, 0)
        return ClearedOut(Heard(head.segment, heard * 500 // head.rate))

    @property
    def busy(self) -> bool:
        self._advance()
        return bool(self._queue)

    def _advance(self) -> None:
        now = self._clock()
        budget_s, self._last = now - self._last, now
        while self._queue and budget_s > 0:
            head = self._queue[0]
            can = min(head.remaining, int(budget_s * head.rate) * 2)
            head.remaining -= can
            head.played += can
            self.played[head.segment] = self.played.get(head.segment, 0) + can
            budget_s -= can / 2 / head.rate
            if head.remaining:
                break
            self._queue.pop(0)


class AgentClient:
    """One connection: a dialect Session over trio-websocket, with a real-time playout."""

    def __init__(self, session: Session, ws: trio_websocket.WebSocketConnection) -> None:
        self.session = session
        self.ws = ws
        self.incoming: list[Incoming] = []
        self.arrivals: list[float] = []
        """trio.current_time() at which each of `incoming` arrived."""
        self.clears: list[ClearedOut] = []
        self.playout = Playout(trio.current_time)
        self.close_code: int | None = None
        self.close_reason = ""
        self.replied: list[str | bytes] = []
        """What `Session.replies` owed the server, sent after the message that made it."""
        self._changed = trio.Event()

    async def open(self) -> None:
        for message in self.session.opening():
            await self.ws.send_message(message)

    async def serve(self) -> None:
        """Receive until the connection closes; answer clears as the link will."""
        try:
            while True:
                message = await self.ws.get_message()
                for item in self.session.receive(message):
                    self.incoming.append(item)
                    self.arrivals.append(trio.current_time())
                    if isinstance(item, PlayAudio):
                        self.playout.add(item)
                    elif isinstance(item, ClearPlayout):
                        cleared = self.playout.clear()
                        self.clears.append(cleared)
                        for wire in self.session.encode(cleared):
                            await self.ws.send_message(wire)
                # What the session owes the server now (a deferred response.create).
                for wire in self.session.replies():
                    self.replied.append(wire)
                    await self.ws.send_message(wire)
                self._changed.set()
                self._changed = trio.Event()
        except trio_websocket.ConnectionClosed as exc:
            if exc.reason is not None:
                self.close_code, self.close_reason = exc.reason.code, exc.reason.reason or ""
            self._changed.set()

    async def command(self, item: AgentCommand | ClearedOut) -> list[str | bytes]:
        """Send what the session encodes `item` as (what the link does); those messages."""
        wires = list(self.session.wire(item))
        for wire in wires:
            await self.ws.send_message(wire)
        return wires

    async def clear(self) -> list[str | bytes]:
        """The bot's `clear`: stop playback now and tell the session so."""
        cleared = self.playout.clear()
        return await self.command(ClearedOut(cleared.heard, by_bot=True))

    def played_bytes(self) -> int:
        """Bytes the bot has heard by now."""
        self.playout.busy  # noqa: B018 -- advances the playout to now
        return sum(self.playout.played.values())

    async def send_audio(self, pcm: bytes, rate: int, chunk_ms: int = 20) -> None:
        """Send `pcm` in `chunk_ms` chunks at real time, once the session allows audio."""
        await self.wait(lambda: self.session.audio_ready)
        step = rate * chunk_ms // 1000 * 2
        start = trio.current_time()
        for n, i in enumerate(range(0, len(pcm), step)):
            await trio.sleep_until(start + n * chunk_ms / 1000)
            item = AudioOut(pcm[i : i + step], rate, timestamp_ms=int(time.time() * 1000))
            for wire in self.session.encode(item):
                await self.ws.send_message(wire)

    async def wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def of(self, kind: type[Any]) -> list[Any]:
        return [i for i in self.incoming if isinstance(i, kind)]

    def span(self, kind: type[Any]) -> float:
        """Seconds from the first to the last arrival of `kind`."""
        times = [
            t for i, t in zip(self.incoming, self.arrivals, strict=True) if isinstance(i, kind)
        ]
        return times[-1] - times[0] if times else 0.0


# -- the language-neutral vectors (proto/vectors/openai-realtime.json, deepgram-agent.json) --

VECTORS = Path(__file__).resolve().parent.parent / "proto" / "vectors"


def load_vectors(name: str) -> list[Json]:
    cases: list[Json] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return cases


def options_from(obj: Json) -> Options:
    return Options(
        session=obj.get("session", {}),
        sample_rate=obj.get("sample_rate", 16000),
        max_message_bytes=obj.get("max_message_bytes", Options().max_message_bytes),
    )


def _item_from(obj: Json) -> Outgoing:
    match obj["kind"]:
        case "audio":
            pcm = bytes.fromhex(obj["pcm_hex"])
            stream = obj.get("stream", MIXED)
            return AudioOut(pcm, obj["rate"], obj.get("timestamp_ms", 0), stream)
        case "dtmf":
            return DtmfOut(obj["digit"])
        case "mark":
            return MarkOut(obj["name"], obj["played"])
        case "error":
            return ErrorOut(MessageError(ErrorCode(obj["code"]), obj["message"]))
        case "cleared":
            heard = obj.get("heard")
            by_bot = obj.get("by_bot", False)
            return ClearedOut(
                None if heard is None else Heard(heard["segment"], heard["ms"]), by_bot
            )
        case "tool_result":
            return ToolResult(obj["call_id"], obj["output"])
        case "say":
            return Say(obj["text"])
        case "user_text":
            return UserText(obj["text"])
        case "context":
            return AddContext(obj["text"])
        case "instructions":
            return SetInstructions(obj["text"])
    raise AssertionError(obj)


def _wire_json(messages: Iterable[str | bytes]) -> list[Json]:
    return [{"text": m} if isinstance(m, str) else {"hex": m.hex()} for m in messages]


def _incoming_json(item: Incoming) -> Json:
    match item:
        case PlayAudio(pcm=pcm, rate=rate, segment=segment):
            out: Json = {"kind": "play_audio", "rate": rate, "pcm_hex": pcm.hex()}
            return out if segment is None else out | {"segment": segment}
        case ClearPlayout():
            return {"kind": "clear"}
        case CutAudio(samples=samples, rate=rate):
            return {"kind": "cut_audio", "samples": samples, "rate": rate}
        case SessionExpiring(within_s=within_s):
            return {"kind": "session_expiring", "within_s": within_s}
        case ToolCallIn(call_id=call_id, name=name, arguments_json=arguments):
            return {"kind": "tool_call", "call_id": call_id, "name": name, "arguments": arguments}
        case ToolCallCancelledIn(call_id=call_id, reason=reason):
            return {"kind": "tool_call_cancelled", "call_id": call_id, "reason": reason}
        case UserSpeaking(item=key):
            return {"kind": "user_speaking", "item": key}
        case Notice(event=event):
            line = json.loads(msgspec.json.encode(event))
            del line["ts_ms"]  # stamped when emitted, not part of the contract
            return {"kind": "notice", "event": line}
    raise AssertionError(item)


def run_vector(dialect: Dialect, case: Json) -> None:
    """Every step of one `session` case against a fresh session, in order."""
    session = dialect.session()
    for n, step in enumerate(case["steps"]):
        where = f"{case['name']} step {n} ({step['do']})"
        match step["do"]:
            case "opening":
                assert _wire_json(session.opening()) == step["wire"], where
            case "reconnect":
                # The same dialect (the same run): what the bot changed carries over.
                session = dialect.session()
                assert _wire_json(session.opening()) == step["wire"], where
            case "replies":
                assert _wire_json(session.replies()) == step["wire"], where
            case "keepalive":
                assert _wire_json(session.keepalive()) == step["wire"], where
            case "send":
                wire = session.wire(_item_from(step["item"]))
                assert _wire_json(wire) == step["wire"], where
            case "audio_ready":
                assert session.audio_ready is step["expect"], where
            case "reconnect_at_once":
                got = session.reconnect_at_once(step["code"], step["reason"])
                assert got is step["expect"], where
            case "receive":
                message = step["wire"]
                raw = message["text"] if "text" in message else bytes.fromhex(message["hex"])
                result = list(session.receive(raw))
                expected = step["expect"]
                if isinstance(expected, dict):
                    assert len(result) == 1 and isinstance(result[0], Invalid), where
                    error = result[0].error
                    assert error.code == expected["error"], where
                    assert error.trigger == expected["trigger"], where
                    assert expected.get("field", "") in error.message, where
                else:
                    assert [_incoming_json(i) for i in result] == expected, where
            case other:
                raise AssertionError(f"{where}: unknown step {other!r}")
