"""A fake Gemini Live API (BidiGenerateContent), written from Google's docs, for tests.

Every message it receives is validated with google-genai's own types, strictly
(`LiveClientMessage`, whose models forbid unknown fields, read from the
camelCase JSON the way the SDK's aliases spell it), then put through the
SDK's Gemini-API converter (`_LiveClientMessage_to_mldev`), which refuses what
only Vertex takes (`sessionResumption.transparent`, `explicitVadSignal`).
One exception, stated: the SDK's `LiveClientSetup` model lacks
`realtimeInputConfig`, which its own `LiveConnectConfig` converter puts in
the setup on the wire; that field is validated as `RealtimeInputConfig`.
Every message it sends is built with the SDK's server types
(`LiveServerMessage`...) and sent as the service does, JSON in a binary frame.

It follows the protocol as documented: nothing before `setup`, `setupComplete`
after it and nothing else from the client before that; with
`historyConfig.initialHistoryInClientContent`, the `clientContent` turns up
to `turnComplete` are history and get no reply. Server VAD on the 16 kHz
audio: the user's speech is transcribed (`inputTranscription`, in pieces),
and its end is answered by a reply streamed faster than real time, several
audio parts per message at 24 kHz, with `outputTranscription` pieces, then
`generationComplete` and `turnComplete`; speech during a reply (or a cue,
`barge_in_at_ms`) interrupts it (`interrupted`, then `turnComplete`). Replies
may call functions instead (`calls`), answered by `toolResponse`, and a
barge-in cancels an open call (`toolCallCancellation`). After every turn a
`sessionResumptionUpdate` hands out a new handle (`resumable` false, no
handle, while a reply runs); a setup naming a handle resumes that
conversation. `go_away_after_s`: a `goAway` with `timeLeft`, then the close
users report, 1011 "Deadline expired before operation could complete.".
A wrong key is refused at the handshake (modelled: 401 without a
credential, 403 with a wrong one, Google's error JSON).
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import pydantic
from agent_servers import Conn, Json, Vad, _after, _FakeServer, tone
from google.genai import _api_client, _live_converters, types
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

RATE_IN = 16000
RATE_OUT = 24000
DEADLINE = "Deadline expired before operation could complete."
_converter_client = _api_client.BaseApiClient(api_key="validation-only")


def validate_client_message(raw: str | bytes) -> tuple[types.LiveClientMessage | None, list[str]]:
    """(model, problems): one client message as google-genai reads it, strictly."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None, [f"not JSON: {raw[:80]!r}"]
    if not isinstance(data, dict):
        return None, ["not a JSON object"]
    problems: list[str] = []
    setup = data.get("setup")
    if isinstance(setup, dict) and "realtimeInputConfig" in setup:
        setup = dict(setup)
        try:
            types.RealtimeInputConfig.model_validate(setup.pop("realtimeInputConfig"))
        except pydantic.ValidationError as exc:
            problems += _errors(exc, "setup.realtimeInputConfig.")
        data = {**data, "setup": setup}
    try:
        model = types.LiveClientMessage.model_validate_json(json.dumps(data))
    except pydantic.ValidationError as exc:
        return None, problems + _errors(exc)
    fields = [name for name in type(model).model_fields if getattr(model, name) is not None]
    if len(fields) != 1:
        problems.append(f"a client message carries exactly one field, not {fields}")
    try:
        _live_converters._LiveClientMessage_to_mldev(_converter_client, model)
    except ValueError as exc:
        problems.append(f"the Gemini API refuses it: {exc}")
    return model, problems


def _errors(exc: pydantic.ValidationError, prefix: str = "") -> list[str]:
    return [f"{prefix}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]


@dataclass
class GeminiConfig:
    api_key: str = "gm-test"
    reply_ms: int = 1500
    speed: float = 4.0
    """How much faster than real time replies are streamed."""
    message_ms: tuple[int, ...] = (60, 120, 40, 200, 80)
    """Audio per server message, cycling; each message is split in `parts_per_message`."""
    parts_per_message: int = 3
    tone_hz: float = 550.0
    barge_in_at_ms: int | None = None
    """Pretend the user spoke once this much of the first reply was sent."""
    answer_barge_in: bool = True
    vad_threshold: float = 600.0
    silence_ms: float = 300.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    """The next user turns are answered with a toolCall (name, arguments JSON)."""
    go_away_after_s: float | None = None
    """Each connection: a goAway this long after setupComplete, then the close."""
    go_away_left_s: float = 0.5
    handles_expire: bool = False
    """Every handle is refused as expired (valid 2 hours): the close modelled as 1007."""


@dataclass
class _State:
    setup: Json | None = None
    ready: bool = False
    history_open: bool = False
    """initialHistoryInClientContent: clientContent is history until turnComplete."""
    history: list[tuple[str, str]] = field(default_factory=list)
    """(role, text) of the conversation: history given, user turns, replies."""
    resumed_from: str | None = None
    vad: Vad = field(default_factory=lambda: Vad(RATE_IN))
    responding: threading.Event | None = None
    thread: threading.Thread | None = None
    replies: int = 0
    pending: dict[str, str] = field(default_factory=dict)
    """Calls made and not yet answered or cancelled: id -> name."""
    answers: list[tuple[str, str, Json]] = field(default_factory=list)
    """(id, name, response) of every functionResponse received."""
    instructions: list[str] = field(default_factory=list)
    """The text of every contextUpdate's systemInstruction."""
    user_texts: list[str] = field(default_factory=list)
    audio_messages: int = 0


def _texts(content: types.Content) -> str:
    return "".join(part.text or "" for part in content.parts or [])


class GeminiServer(_FakeServer):
    def __init__(self, config: GeminiConfig | None = None) -> None:
        self.config = config or GeminiConfig()
        super().__init__(lambda _: True, "")
        self.states: dict[int, _State] = {}
        self.handles: dict[str, list[tuple[str, str]]] = {}
        """Every handle issued, with the conversation it resumes."""
        self._handle_ids = (f"handle-{n}" for n in itertools.count(1))
        self._call_ids = (f"call-{n}" for n in itertools.count(1))

    @property
    def url(self) -> str:
        return (
            f"ws://127.0.0.1:{self.port}/ws/google.ai.generativelanguage.v1beta."
            "GenerativeService.BidiGenerateContent"
        )

    def state(self, conn: Conn) -> _State:
        return self.states[id(conn)]

    def _request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.handshakes += 1
        key = request.headers.get("x-goog-api-key")
        bearer = request.headers.get("Authorization", "")
        if key == self.config.api_key or bearer == f"Bearer {self.config.api_key}":
            return None
        with self._lock:
            self.rejected += 1
        if key is None and not bearer:
            status, code, text = 401, "UNAUTHENTICATED", "Method doesn't allow unregistered callers"
        else:
            status, code, text = (
                403,
                "PERMISSION_DENIED",
                "API key not valid. Please pass a valid API key.",
            )
        body = json.dumps({"error": {"code": status, "message": text, "status": code}})
        response = ws.respond(status, body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def send(self, conn: Conn, message: types.LiveServerMessage) -> None:
        conn.send(message.model_dump_json(by_alias=True, exclude_none=True).encode())

    def content(self, conn: Conn, **fields: Any) -> None:
        self.send(conn, types.LiveServerMessage(server_content=types.LiveServerContent(**fields)))

    # -- the client's messages ----------------------------------------------------------

    def opened(self, conn: Conn) -> None:
        state = self.states[id(conn)] = _State()
        state.vad = Vad(RATE_IN, self.config.vad_threshold, self.config.silence_ms)

    def message(self, conn: Conn, raw: str | bytes) -> None:
        model, problems = validate_client_message(raw)
        if isinstance(raw, str) and model is not None:
            conn.received.append(json.loads(raw))
        if problems or model is None:
            conn.violations += problems or ["invalid message"]
            conn.close(1007, "Request contains an invalid argument.")
            return
        state = self.state(conn)
        if model.setup is not None:
            self._setup(conn, json.loads(raw)["setup"])
        elif not state.ready:
            conn.violations.append(f"a message before setupComplete: {raw[:80]!r}")
        elif model.realtime_input is not None:
            self._realtime(conn, model.realtime_input)
        elif model.client_content is not None:
            self._client_content(conn, model.client_content)
        elif model.tool_response is not None:
            self._tool_response(conn, model.tool_response)
        elif model.context_update is not None:
            instruction = model.context_update.system_instruction
            if not isinstance(instruction, types.Content):
                conn.violations.append(f"contextUpdate without a Content: {instruction!r}")
                return
            with conn.lock:
                state.instructions.append(_texts(instruction))

    def _setup(self, conn: Conn, setup: Json) -> None:
        state = self.state(conn)
        if state.setup is not None:
            conn.violations.append("a second setup")
            return
        state.setup = setup
        model = setup.get("model", "")
        if not isinstance(model, str) or not model.startswith("models/"):
            conn.violations.append(f"model {model!r} is not models/NAME")
        if setup.get("generationConfig", {}).get("responseModalities") != ["AUDIO"]:
            conn.violations.append("responseModalities is not [AUDIO]")
        for key in ("inputAudioTranscription", "outputAudioTranscription"):
            if key not in setup:
                conn.violations.append(f"no {key}")
        handle = setup.get("sessionResumption", {}).get("handle")
        if handle is not None:
            if self.config.handles_expire:
                # Modelled: the docs do not say how an expired handle is refused.
                conn.close(1007, "Request contains an invalid argument.")
                return
            if handle not in self.handles:
                # Modelled: the docs do not say how a bad handle is refused.
                conn.violations.append(f"unknown handle {handle!r}")
                conn.close(1007, "Request contains an invalid argument.")
                return
            state.resumed_from = handle
            state.history = list(self.handles[handle])
        if setup.get("historyConfig", {}).get("initialHistoryInClientContent"):
            if handle is not None:
                conn.violations.append("initial history in a resumed session")
            state.history_open = True
        state.ready = True
        self.send(
            conn,
            types.LiveServerMessage(
                setup_complete=types.LiveServerSetupComplete(session_id=str(uuid.uuid4()))
            ),
        )
        if self.config.go_away_after_s is not None:
            _after(conn, self.config.go_away_after_s, lambda: self.go_away(conn))

    def go_away(self, conn: Conn) -> None:
        left = self.config.go_away_left_s
        self.send(
            conn, types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left=f"{left}s"))
        )
        _after(conn, left, lambda: conn.close(1011, DEADLINE))

    def _realtime(self, conn: Conn, realtime: types.LiveClientRealtimeInput) -> None:
        state = self.state(conn)
        if state.history_open:
            conn.violations.append("realtime input before the initial history's turnComplete")
        blob = realtime.audio
        if blob is None or blob.data is None:
            conn.violations.append(f"realtimeInput without audio: {realtime!r}")
            return
        if blob.mime_type != f"audio/pcm;rate={RATE_IN}":
            conn.violations.append(f"audio mimeType {blob.mime_type!r}")
        if len(blob.data) % 2:
            conn.violations.append("odd audio length")
        with conn.lock:
            conn.audio += blob.data
            state.audio_messages += 1
        change = state.vad.feed(blob.data)
        if change == "start":
            self.user_started(conn)
        elif change == "stop":
            self.user_stopped(conn)

    def _client_content(self, conn: Conn, content: types.LiveClientContent) -> None:
        state = self.state(conn)
        turns = [(turn.role or "user", _texts(turn)) for turn in content.turns or []]
        with conn.lock:
            state.history += turns
        if state.history_open:
            if content.turn_complete:
                state.history_open = False  # the history: no model call
            return
        with conn.lock:
            state.user_texts += [text for role, text in turns if role == "user"]
        if content.turn_complete:
            self._answer(conn)

    def _tool_response(self, conn: Conn, response: types.LiveClientToolResponse) -> None:
        state = self.state(conn)
        for answer in response.function_responses or []:
            with conn.lock:
                name = state.pending.pop(answer.id or "", None)
                state.answers.append((answer.id or "", answer.name or "", answer.response or {}))
            if name is None or name != answer.name:
                conn.violations.append(f"functionResponse for no open call: {answer!r}")
                return
            self.respond(conn, f"the answer is {json.dumps(answer.response)}")

    # -- the user's turn ----------------------------------------------------------------

    def user_started(self, conn: Conn) -> None:
        state = self.state(conn)
        flag = state.responding
        if flag is not None and not flag.is_set():
            flag.set()  # the reply's thread sends interrupted
        with conn.lock:
            pending, state.pending = state.pending, {}
        if pending:
            self.send(
                conn,
                types.LiveServerMessage(
                    tool_call_cancellation=types.LiveServerToolCallCancellation(ids=list(pending))
                ),
            )

    def user_stopped(self, conn: Conn) -> None:
        for piece in ("what the ", "user ", "said"):
            self.content(conn, input_transcription=types.Transcription(text=piece))
        with conn.lock:
            self.state(conn).history.append(("user", "what the user said"))
        self._answer(conn)

    def _answer(self, conn: Conn) -> None:
        with conn.lock:
            call = self.config.calls.pop(0) if self.config.calls else None
        if call is not None:
            self.call(conn, *call)
        else:
            self.respond(conn, "the agent's answer")

    def call(self, conn: Conn, name: str, arguments: str) -> str:
        call_id = next(self._call_ids)
        with conn.lock:
            self.state(conn).pending[call_id] = name
        function = types.FunctionCall(id=call_id, name=name, args=json.loads(arguments))
        self.send(
            conn,
            types.LiveServerMessage(tool_call=types.LiveServerToolCall(function_calls=[function])),
        )
        return call_id

    # -- the model's turn ---------------------------------------------------------------

    def respond(self, conn: Conn, text: str) -> None:
        state = self.state(conn)
        previous = state.thread
        if previous is not None and previous.is_alive():
            if state.responding is not None:
                state.responding.set()
            previous.join(timeout=5)
        with conn.lock:
            state.responding = threading.Event()
            state.replies += 1
            first = state.replies == 1
        args = (conn, state.responding, text, first)
        state.thread = threading.Thread(target=self._reply, args=args, daemon=True)
        state.thread.start()

    def _reply(self, conn: Conn, cancel: threading.Event, text: str, first: bool) -> None:
        config, state = self.config, self.state(conn)
        self.send(
            conn,
            types.LiveServerMessage(
                session_resumption_update=types.LiveServerSessionResumptionUpdate(resumable=False)
            ),
        )
        words = [f"{word} " for word in text.split()]
        sent_ms, interrupted = 0, False
        for n, ms in enumerate(itertools.cycle(config.message_ms)):
            if conn.ended.is_set() or sent_ms >= config.reply_ms:
                break
            if cancel.is_set():
                interrupted = True
                break
            ms = min(ms, config.reply_ms - sent_ms)
            pcm = tone(config.tone_hz, ms, RATE_OUT, start=sent_ms * RATE_OUT // 1000)
            step = -(-len(pcm) // config.parts_per_message // 2) * 2
            parts = [
                types.Part(
                    inline_data=types.Blob(
                        data=pcm[i : i + step], mime_type=f"audio/pcm;rate={RATE_OUT}"
                    )
                )
                for i in range(0, len(pcm), step)
            ]
            fields: dict[str, Any] = {"model_turn": types.Content(role="model", parts=parts)}
            if n < len(words):
                fields["output_transcription"] = types.Transcription(text=words[n])
            self.content(conn, **fields)
            sent_ms += ms
            if first and config.barge_in_at_ms is not None and sent_ms >= config.barge_in_at_ms:
                interrupted = True
                break
            cancel.wait(ms / 1000 / config.speed)
        if conn.ended.is_set():
            return
        said = "".join(words[: n + 1] if interrupted else words).strip()
        if interrupted:
            self.content(conn, interrupted=True)
        else:
            rest = "".join(words[n + 1 :]) if n + 1 < len(words) else ""
            if rest:
                self.content(conn, output_transcription=types.Transcription(text=rest))
            self.content(conn, generation_complete=True)
        self.content(conn, turn_complete=True)
        with conn.lock:
            state.history.append(("model", said))
            handle = next(self._handle_ids)
            self.handles[handle] = list(state.history)
            state.responding = None
        self.send(
            conn,
            types.LiveServerMessage(
                session_resumption_update=types.LiveServerSessionResumptionUpdate(
                    new_handle=handle, resumable=True
                )
            ),
        )
        if interrupted and first and config.answer_barge_in:
            _after(conn, 0.2, lambda: self.user_stopped(conn))
