"""A fake ElevenLabs Agents service, written from its contract, for tests.

- ElevenLabsServer: the Conversational AI websocket
  (/v1/convai/conversation?agent_id=ID). `conversation_initiation_client_data`
  first, answered with `conversation_initiation_metadata` naming the audio
  formats (any of ElevenLabs' seven, per `ElevenLabsConfig`); audio only
  after it; server VAD on the user's audio; replies as `agent_response` plus
  `audio` events at the announced output format, streamed faster than real
  time; `interruption` when the user speaks over a reply, after which some of
  that reply's audio is still sent (in flight, as with the real service: the
  SDK drops it by `event_id`), then `agent_response_correction` with the text
  cut; `ping` every `ping_every_s`, whose `pong` must carry its `event_id`;
  `client_tool_call` on cue, answered by `client_tool_result`;
  `user_message` answered; `contextual_update` recorded. A private agent
  (`private=True`) takes only a signed URL from `SignedUrlServer`, once
  (modelled: one conversation per signature), and never after it expired.
- SignedUrlServer: GET /v1/convai/conversation/get-signed-url?agent_id=ID with
  `xi-api-key`: 401 for a wrong key, else `{"signed_url": ...}` pointing at
  the websocket server, with a new signature each time.

Every message the sidecar sends is validated, strictly, with the `elevenlabs`
package's own conversation types: the initiation data with
`ConversationInitiationClientDataRequestInput` (a field it does not know is a
violation), every `type` against the SDK's `ClientToOrchestratorEvent`, a
pong with `PongPayload` and the `event_id` the SDK's ping handler echoes, and
the rest against the exact shape the SDK itself sends (`to_dict()` of its
event classes, its `client_tool_result`). The SDK has no models of the server's
messages; instead every message this server sends is read by the SDK's own
client code (`BaseConversation._handle_message_core`) before it goes, and one
it cannot read is a violation. Where the contract is silent (how a refused
signature answers, whether a signed URL serves twice) the behaviour is a
stated guess, marked "modelled".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pydantic
from agent_servers import Conn, Vad, _after, _FakeServer, tone, unknown_fields
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from sidecar.dialects.g711 import pcm16_from_ulaw, ulaw_from_pcm16

with warnings.catch_warnings():
    # The SDK's client imports websockets' legacy API, which warns; we use only its reader.
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs.conversational_ai.conversation import (
        BaseConversation,
        ClientToOrchestratorEvent,
        ContextualUpdateClientToOrchestratorEvent,
        UserMessageClientToOrchestratorEvent,
    )
    from elevenlabs.types import ConversationInitiationClientDataRequestInput, PongPayload

Json = dict[str, Any]

PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
CLIENT_TYPES = frozenset(e.value for e in ClientToOrchestratorEvent)
"""The SDK's own list of what a client may send (besides the typeless audio chunk)."""
SDK_TOOL_RESULT_KEYS = frozenset({"type", "tool_call_id", "result", "is_error"})
"""What the SDK's ClientTools.execute_tool sends as a client_tool_result."""


def _format_rate(name: str) -> tuple[int, bool]:
    kind, _, rate = name.partition("_")
    return int(rate), kind == "ulaw"


@dataclass
class ElevenLabsConfig:
    agent_id: str = "agent_test"
    private: bool = False
    """Only signed URLs from a SignedUrlServer are accepted."""
    input_format: str = "pcm_16000"
    output_format: str = "pcm_16000"
    reply_ms: int = 1500
    speed: float = 4.0
    chunk_ms: tuple[int, ...] = (60, 20, 140, 40, 100, 80)
    tone_hz: float = 523.0
    barge_in_at_ms: int | None = None
    """Pretend the user spoke once this much of the first reply was sent."""
    answer_barge_in: bool = True
    stale_chunks: int = 3
    """Audio events of a reply still sent after its interruption (in flight)."""
    ping_every_s: float | None = 0.5
    vad_threshold: float = 600.0
    silence_ms: float = 300.0
    calls: list[tuple[str, Json]] = field(default_factory=list)
    """The next user turns are answered with a client_tool_call for these
    (tool name, parameters) instead of speech, one turn each."""


@dataclass
class _State:
    initiation: Json | None = None
    rate: int = 16000
    mulaw_in: bool = False
    out_rate: int = 16000
    mulaw_out: bool = False
    vad: Vad | None = None
    ids: Any = field(default_factory=lambda: itertools.count(1))
    responding: threading.Event | None = None
    reply_id: int | None = None
    replies: int = 0
    pings: dict[int, float] = field(default_factory=dict)
    """Pings not yet answered: event_id -> when sent."""
    pongs: list[int] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)
    """client_tool_call ids not yet answered -> tool name."""
    results: list[tuple[str, str, bool]] = field(default_factory=list)
    user_messages: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    interruptions: list[int] = field(default_factory=list)
    chunk_arrivals: list[float] = field(default_factory=list)
    """time.monotonic() at each user_audio_chunk, in this process: the uplink's pace."""
    stale_sent: int = 0
    audio_samples_sent: int = 0
    """Audio events sent for a reply after its interruption."""
    sdk: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(_conversation_id=None, _last_interrupt_id=0)
    )
    """The SDK client's own state, as its reader of our messages keeps it."""


class _SdkHandler:
    """The handler interface BaseConversation._handle_message_core calls: it records
    what the SDK read, so a message the SDK cannot read fails here."""

    callback_audio_alignment = None
    callback_agent_response = True
    callback_agent_chat_response_part = None
    callback_agent_response_correction = True
    callback_user_transcript = True
    callback_latency_measurement = True

    def __init__(self) -> None:
        self.read: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("handle_"):
            raise AttributeError(name)
        return lambda *args: self.read.append(name)


def _validate(data: Json) -> list[str]:
    """What the elevenlabs SDK's types find wrong with one client message, strictly."""
    if "user_audio_chunk" in data:
        extra = set(data) - {"user_audio_chunk"}
        if extra:
            return [f"user_audio_chunk with other fields {sorted(extra)}"]
        try:
            base64.b64decode(data["user_audio_chunk"], validate=True)
        except (binascii.Error, TypeError):
            return ["user_audio_chunk is not base64"]
        return []
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        return [f"type {kind!r} is none of the SDK's ClientToOrchestratorEvent"]
    if kind == "conversation_initiation_client_data":
        body = {k: v for k, v in data.items() if k != "type"}
        try:
            model = ConversationInitiationClientDataRequestInput.model_validate(body)
        except pydantic.ValidationError as exc:
            return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return [f"unknown field {p}" for p in unknown_fields(model)]
    if kind == "pong":
        pong = PongPayload.model_validate(data)
        extras = dict(pong.__pydantic_extra__ or {})
        if set(extras) != {"event_id"} or type(extras["event_id"]) is not int:
            return [f"a pong echoes its ping's integer event_id and nothing else: {data}"]
        return []
    if kind == "client_tool_result":
        problems = []
        if set(data) != SDK_TOOL_RESULT_KEYS:
            problems.append(f"client_tool_result fields {sorted(data)}")
        if not isinstance(data.get("tool_call_id"), str):
            problems.append("client_tool_result.tool_call_id is not a string")
        if type(data.get("is_error")) is not bool:
            problems.append("client_tool_result.is_error is not a boolean")
        return problems
    sdk_events: dict[str, dict[str, Any]] = {
        "user_message": UserMessageClientToOrchestratorEvent("x").to_dict(),
        "contextual_update": ContextualUpdateClientToOrchestratorEvent("x").to_dict(),
    }
    if kind in sdk_events:
        keys = set(sdk_events[kind])
        if set(data) != keys or not isinstance(data.get("text"), str):
            return [f"{kind} must be exactly {sorted(keys)} with a string text: {data}"]
        return []
    return [f"{kind} is a message the sidecar never sends"]


class ElevenLabsServer(_FakeServer):
    def __init__(self, config: ElevenLabsConfig | None = None) -> None:
        self.config = config or ElevenLabsConfig()
        super().__init__(lambda _: True, "")
        self.states: dict[int, _State] = {}
        self.signatures: dict[str, bool] = {}
        """Signatures issued by a SignedUrlServer: -> still valid."""
        self.refusals: list[str] = []
        self._sig_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}?agent_id={self.config.agent_id}"

    def state(self, conn: Conn) -> _State:
        return self.states[id(conn)]

    # -- signatures ------------------------------------------------------------------

    def issue(self) -> str:
        """A new signed URL (for SignedUrlServer)."""
        signature = secrets.token_urlsafe(12)
        with self._sig_lock:
            self.signatures[signature] = True
        return f"{self.url}&conversation_signature={signature}"

    def expire(self) -> None:
        """Every signature issued so far expires (15 minutes pass)."""
        with self._sig_lock:
            for signature in self.signatures:
                self.signatures[signature] = False

    def _request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.handshakes += 1
        query = parse_qs(urlsplit(request.path).query)
        agent = query.get("agent_id", [""])[0]
        why = None
        if urlsplit(request.path).path != PATH:
            why = f"no such path {urlsplit(request.path).path}"
        elif agent != self.config.agent_id:
            why = f"no agent {agent!r}"
        elif self.config.private:
            signature = query.get("conversation_signature", [""])[0]
            with self._sig_lock:
                valid = self.signatures.get(signature)
                if valid:
                    # Modelled: one conversation per signature.
                    self.signatures[signature] = False
            if not valid:
                why = "the signature is unknown or expired"
        if why is None:
            return None
        with self._lock:
            self.rejected += 1
            self.refusals.append(why)
        # Modelled: the docs do not show how a refused conversation answers.
        response = ws.respond(403, json.dumps({"detail": {"status": "forbidden", "message": why}}))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # -- the conversation --------------------------------------------------------------

    def send(self, conn: Conn, message: Json) -> None:
        """One server message, read by the SDK's own client code before it goes."""
        state = self.state(conn)
        handler = _SdkHandler()
        with conn.lock:
            try:
                BaseConversation._handle_message_core(state.sdk, message, handler)  # type: ignore[no-untyped-call, arg-type]
            except Exception as exc:
                conn.violations.append(f"the SDK cannot read our {message.get('type')}: {exc!r}")
        conn.send(json.dumps(message))

    def opened(self, conn: Conn) -> None:
        self.states[id(conn)] = _State()
        if self.config.ping_every_s is not None:
            threading.Thread(target=self._ping, args=(conn,), daemon=True).start()

    def _ping(self, conn: Conn) -> None:
        assert self.config.ping_every_s is not None
        state = self.state(conn)
        while not conn.ended.wait(self.config.ping_every_s):
            with conn.lock:
                event_id = next(state.ids)
                state.pings[event_id] = time.monotonic()
            self.send(conn, {"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": 42}})

    def message(self, conn: Conn, raw: str | bytes) -> None:
        state = self.state(conn)
        if isinstance(raw, bytes):
            conn.violations.append("a binary message: the API takes JSON text only")
            return
        try:
            data = json.loads(raw)
        except ValueError:
            conn.violations.append(f"not JSON: {raw[:80]!r}")
            return
        if not isinstance(data, dict):
            conn.violations.append(f"not an object: {raw[:80]!r}")
            return
        if problems := _validate(data):
            conn.violations += problems
            return
        if "user_audio_chunk" not in data:
            conn.received.append(data)
        kind = data.get("type")
        if kind == "conversation_initiation_client_data":
            self._initiate(conn, data)
        elif state.initiation is None:
            conn.violations.append(f"{kind or 'user_audio_chunk'} before the initiation data")
        elif "user_audio_chunk" in data:
            with conn.lock:
                state.chunk_arrivals.append(time.monotonic())
            self._audio(conn, base64.b64decode(data["user_audio_chunk"]))
        elif kind == "pong":
            with conn.lock:
                if state.pings.pop(data["event_id"], None) is None:
                    conn.violations.append(f"a pong for no ping: {data}")
                state.pongs.append(data["event_id"])
        elif kind == "client_tool_result":
            with conn.lock:
                name = state.pending.pop(data["tool_call_id"], None)
                state.results.append((data["tool_call_id"], data["result"], data["is_error"]))
            if name is None:
                conn.violations.append(f"client_tool_result for no open call: {data}")
                return
            self.respond(conn, f"the answer is {data['result']}")
        elif kind == "user_message":
            with conn.lock:
                state.user_messages.append(data["text"])
            self._answer_turn(conn)
        elif kind == "contextual_update":
            with conn.lock:
                state.contexts.append(data["text"])
        else:
            conn.violations.append(f"unexpected {kind}")

    def _initiate(self, conn: Conn, data: Json) -> None:
        state = self.state(conn)
        if state.initiation is not None:
            conn.violations.append("a second conversation_initiation_client_data")
            return
        config = self.config
        state.initiation = data
        state.rate, state.mulaw_in = _format_rate(config.input_format)
        state.out_rate, state.mulaw_out = _format_rate(config.output_format)
        state.vad = Vad(state.rate, config.vad_threshold, config.silence_ms)
        event = {
            "conversation_id": f"conv_{secrets.token_hex(4)}",
            "agent_output_audio_format": config.output_format,
            "user_input_audio_format": config.input_format,
        }
        self.send(
            conn,
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": event,
            },
        )
        agent = (data.get("conversation_config_override") or {}).get("agent") or {}
        if isinstance(agent.get("first_message"), str):
            self.respond(conn, agent["first_message"])

    def _audio(self, conn: Conn, data: bytes) -> None:
        state = self.state(conn)
        assert state.vad is not None
        if state.mulaw_in:
            pcm = pcm16_from_ulaw(data)
        elif len(data) % 2:
            conn.violations.append(f"odd PCM chunk of {len(data)} bytes")
            return
        else:
            pcm = data
        conn.audio += pcm
        change = state.vad.feed(pcm)
        if change == "start":
            self.user_started_speaking(conn)
        elif change == "stop":
            self.user_stopped_speaking(conn)

    def user_started_speaking(self, conn: Conn) -> None:
        state = self.state(conn)
        with conn.lock:
            flag, reply_id = state.responding, state.reply_id
        if flag is not None and not flag.is_set() and reply_id is not None:
            with conn.lock:
                state.interruptions.append(reply_id)
            self.send(conn, {"type": "interruption", "interruption_event": {"event_id": reply_id}})
            flag.set()

    def user_stopped_speaking(self, conn: Conn) -> None:
        state = self.state(conn)
        with conn.lock:
            event_id = next(state.ids)
        self.send(
            conn,
            {
                "type": "user_transcript",
                "user_transcription_event": {
                    "user_transcript": "what the user said",
                    "event_id": event_id,
                },
            },
        )
        self._answer_turn(conn)

    def _answer_turn(self, conn: Conn) -> None:
        with conn.lock:
            call = self.config.calls.pop(0) if self.config.calls else None
        if call is not None:
            self.request_call(conn, *call)
        else:
            self.respond(conn, "the agent's answer")

    def request_call(self, conn: Conn, name: str, parameters: Json) -> str:
        state = self.state(conn)
        call_id = f"toolu_{secrets.token_hex(6)}"
        with conn.lock:
            state.pending[call_id] = name
            event_id = next(state.ids)
        call = {
            "tool_name": name,
            "tool_call_id": call_id,
            "parameters": parameters,
            "event_id": event_id,
        }
        self.send(conn, {"type": "client_tool_call", "client_tool_call": call})
        return call_id

    def respond(self, conn: Conn, text: str) -> None:
        state = self.state(conn)
        with conn.lock:
            previous = state.responding
        if previous is not None and not previous.is_set():
            previous.set()  # a new turn supersedes the reply in progress
        cancel = threading.Event()
        with conn.lock:
            state.responding = cancel
            state.reply_id = event_id = next(state.ids)
            state.replies += 1
            first = state.replies == 1
        args = (conn, cancel, text, event_id, first)
        threading.Thread(target=self._reply, args=args, daemon=True).start()

    def _chunk(self, state: _State, ms: int, start_ms: int) -> bytes:
        pcm = tone(self.config.tone_hz, ms, state.out_rate, start=start_ms * state.out_rate // 1000)
        return ulaw_from_pcm16(pcm) if state.mulaw_out else pcm

    def _audio_event(self, conn: Conn, data: bytes, event_id: int) -> None:
        state = self.state(conn)
        with conn.lock:
            state.audio_samples_sent += len(data) if state.mulaw_out else len(data) // 2
        event = {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id}
        self.send(conn, {"type": "audio", "audio_event": event})

    def _reply(
        self, conn: Conn, cancel: threading.Event, text: str, event_id: int, first: bool
    ) -> None:
        state, config = self.state(conn), self.config
        self.send(
            conn,
            {
                "type": "agent_response",
                "agent_response_event": {"agent_response": text, "event_id": event_id},
            },
        )
        sent_ms = 0
        for ms in itertools.cycle(config.chunk_ms):
            if cancel.is_set() or conn.ended.is_set() or sent_ms >= config.reply_ms:
                break
            ms = min(ms, config.reply_ms - sent_ms)
            self._audio_event(conn, self._chunk(state, ms, sent_ms), event_id)
            sent_ms += ms
            if first and config.barge_in_at_ms is not None and sent_ms >= config.barge_in_at_ms:
                self.user_started_speaking(conn)
                if config.answer_barge_in:
                    _after(conn, 0.2, lambda: self.user_stopped_speaking(conn))
                break
            cancel.wait(ms / 1000 / config.speed)
        if cancel.is_set() and not conn.ended.is_set():
            # In flight when the interruption was sent: the client must drop these.
            for _ in range(config.stale_chunks):
                self._audio_event(conn, self._chunk(state, 20, sent_ms), event_id)
                sent_ms += 20
                with conn.lock:
                    state.stale_sent += 1
            words = text.split()
            correction = {
                "original_agent_response": text,
                "corrected_agent_response": " ".join(words[: max(1, len(words) // 2)]),
                "event_id": event_id,
            }
            self.send(
                conn,
                {
                    "type": "agent_response_correction",
                    "agent_response_correction_event": correction,
                },
            )
        with conn.lock:
            if state.responding is cancel:
                state.responding = None


class SignedUrlServer:
    """get-signed-url on 127.0.0.1, port 0, for one ElevenLabsServer."""

    def __init__(self, agents: ElevenLabsServer, api_key: str = "xi-test") -> None:
        self.agents = agents
        self.api_key = api_key
        self.requests: list[tuple[str, str]] = []
        """(path, xi-api-key) of every request."""
        self.issued: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                key = self.headers.get("xi-api-key", "")
                outer.requests.append((self.path, key))
                parts = urlsplit(self.path)
                agent = parse_qs(parts.query).get("agent_id", [""])[0]
                if parts.path != SIGNED_URL_PATH:
                    self._answer(404, {"detail": "Not Found"})
                elif key != outer.api_key:
                    detail = {"status": "invalid_api_key", "message": "Invalid API key"}
                    self._answer(401, {"detail": detail})
                elif agent != outer.agents.config.agent_id:
                    self._answer(404, {"detail": {"status": "agent_not_found"}})
                else:
                    url = outer.agents.issue()
                    outer.issued.append(url)
                    self._answer(200, {"signed_url": url})

            def _answer(self, status: int, body: Json) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
