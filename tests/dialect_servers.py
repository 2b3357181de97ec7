"""Fake servers for the Twilio and Vonage dialects, written from the public docs.

Each plays a user's server that was written for Twilio Media Streams or for
Vonage's Voice API websockets: it records everything the sidecar sends, checks
it against the rules those docs state (recorded as `violations`, so a test
asserts the list is empty rather than a server thread crashing), can send
audio, marks/notifies and clears, and can echo the caller's audio back.

They deliberately use nothing from `sidecar`: `json`, `base64` and `audioop`
only, so a test that passes against them checks the dialects against the
docs, not against themselves. Threaded `websockets` servers on 127.0.0.1,
port 0, like support.WsServer.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Self

from twilio.request_validator import RequestValidator
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Json = dict[str, Any]
DTMF_DIGITS = set("0123456789*#ABCD")


@dataclass
class Connection:
    ws: ServerConnection
    request_headers: Headers
    raw: list[str | bytes] = field(default_factory=list)
    """Every message received, as received."""
    arrivals: list[float] = field(default_factory=list)
    """time.monotonic() at which each of `raw` was read."""
    texts: list[Json] = field(default_factory=list)
    """The JSON text messages, parsed."""
    violations: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    close_code: int | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: str | bytes | Json) -> None:
        data = json.dumps(message) if isinstance(message, dict) else message
        with self.send_lock:  # the echo runs in the connection's thread, tests in theirs
            self.ws.send(data)


class _DocServer:
    """The threaded server; subclasses implement `on_message` per their docs."""

    path = "/stream"

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.connections: list[Connection] = []
        self._states: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = int(self._server.socket.getsockname()[1])
        return f"ws://127.0.0.1:{port}{self.path}"

    def start(self) -> Self:
        self._server = serve(
            self._handle, "127.0.0.1", 0, max_size=None, process_request=self._request
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
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
    def current(self) -> Connection:
        with self._lock:
            return self.connections[-1]

    def texts(self, conn: Connection | None = None) -> list[Json]:
        """The JSON messages of `conn` (by default the latest connection; none yet: [])."""
        with self._lock:
            if conn is None and not self.connections:
                return []
            return list((conn or self.connections[-1]).texts)

    def events(self, name: str, conn: Connection | None = None) -> list[Json]:
        return [m for m in self.texts(conn) if m.get("event") == name]

    def violations(self) -> list[str]:
        with self._lock:
            return [v for c in self.connections for v in c.violations]

    def _request(self, ws: ServerConnection, request: Request) -> Response | None:
        """The upgrade request, judged before it is accepted (None: accept)."""
        return None

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = Connection(ws, ws.request.headers)
        state = self.new_state()
        with self._lock:
            self.connections.append(conn)
            self._states[id(conn)] = state
        try:
            for message in ws:
                conn.arrivals.append(time.monotonic())
                conn.raw.append(message)
                try:
                    self.on_message(conn, state, message)
                except ConnectionClosed:
                    # A reply (an echo) racing the sidecar's close: not a
                    # finding, and what the sidecar sent before closing is
                    # still queued here, to be read and checked.
                    continue
                except Exception as exc:  # a shape the checks did not foresee is a finding too
                    conn.violations.append(f"unreadable message {message[:80]!r}: {exc!r}")
        except Exception:  # a dropped connection ends the handler, however it drops
            pass
        finally:
            conn.close_code = ws.close_code
            self.on_close(conn, state)
            conn.closed.set()

    def new_state(self) -> Any:
        raise NotImplementedError

    def on_message(self, conn: Connection, state: Any, message: str | bytes) -> None:
        raise NotImplementedError

    def on_close(self, conn: Connection, state: Any) -> None:
        pass


def _json(conn: Connection, message: str | bytes) -> Json | None:
    if isinstance(message, bytes):
        conn.violations.append(f"binary frame of {len(message)} bytes; JSON text expected")
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        conn.violations.append(f"not JSON: {message[:80]!r}")
        return None
    if not isinstance(parsed, dict):
        conn.violations.append(f"not a JSON object: {message[:80]!r}")
        return None
    conn.texts.append(parsed)
    return parsed


# -- Twilio Media Streams ----------------------------------------------------------------------

SID = {prefix: re.compile(prefix + r"[0-9a-f]{32}") for prefix in ("MZ", "CA", "AC")}
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


@dataclass
class _TwilioState:
    start: Json | None = None
    sequence: int = 0
    chunk: int = 0
    timestamp: int = -1
    marks_pending: list[str] = field(default_factory=list)
    stopped: bool = False


class TwilioServer(_DocServer):
    """A server for Twilio's bidirectional Media Streams (`<Connect><Stream>`).

    Checks, per "Media Streams - WebSocket Messages": `connected` first, then
    `start` with sequenceNumber "1" and the ids in Twilio's shapes; every
    later message's sequenceNumber (a string) one more than the last, the
    same streamSid; `media` on track "inbound" with `chunk` counting from "1",
    `timestamp` (a string) never going back, `payload` of `media_bytes`
    mu-law bytes; `dtmf` on "inbound_track"; a `mark` echoed only for a mark
    the server sent and not echoed yet, in order; `stop` with the start's
    ids, last.
    """

    def __init__(
        self, echo: bool = False, media_bytes: int | None = 160, auth_token: str | None = None
    ) -> None:
        super().__init__(echo)
        self.media_bytes = media_bytes
        # As Twilio's docs tell a Media Streams server to: the upgrade must
        # carry X-Twilio-Signature, checked with Twilio's own validator.
        self._validator = None if auth_token is None else RequestValidator(auth_token)
        self.refused = 0

    def _request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self._validator is None:
            return None
        signature = request.headers.get("X-Twilio-Signature", "")
        if self._validator.validate(self.url, {}, signature):
            return None
        with self._lock:
            self.refused += 1
        return ws.respond(403, "X-Twilio-Signature does not match\n")

    def new_state(self) -> _TwilioState:
        return _TwilioState()

    def _state(self, conn: Connection | None) -> _TwilioState:
        state = self._states[id(conn or self.current)]
        assert isinstance(state, _TwilioState)
        return state

    def on_message(self, conn: Connection, state: Any, message: str | bytes) -> None:
        assert isinstance(state, _TwilioState)
        msg = _json(conn, message)
        if msg is None:
            return
        bad = conn.violations.append
        event = msg.get("event")
        if state.stopped:
            bad(f"{event!r} after stop")
        if len(conn.texts) == 1:
            if msg != {"event": "connected", "protocol": "Call", "version": "1.0.0"}:
                bad(f"first message is not Twilio's connected: {msg}")
            return
        state.sequence += 1
        if msg.get("sequenceNumber") != str(state.sequence):
            bad(f"sequenceNumber {msg.get('sequenceNumber')!r}, expected {str(state.sequence)!r}")
        if len(conn.texts) == 2:
            self._check_start(conn, state, msg)
            return
        if state.start is None:
            return
        if msg.get("streamSid") != state.start["streamSid"]:
            bad(f"streamSid {msg.get('streamSid')!r} is not the stream's")
        if event == "media":
            self._check_media(conn, state, msg)
        elif event == "dtmf":
            dtmf = msg.get("dtmf", {})
            if dtmf.get("track") != "inbound_track" or dtmf.get("digit") not in DTMF_DIGITS:
                bad(f"bad dtmf: {msg}")
        elif event == "mark":
            name = msg.get("mark", {}).get("name")
            if not state.marks_pending or state.marks_pending[0] != name:
                bad(f"mark {name!r} echoed, pending were {state.marks_pending}")
            else:
                state.marks_pending.pop(0)
        elif event == "stop":
            info = state.start["start"]
            expect = {"accountSid": info["accountSid"], "callSid": info["callSid"]}
            if msg.get("stop") != expect:
                bad(f"stop {msg.get('stop')} does not name the start's call {expect}")
            state.stopped = True
        else:
            bad(f"unknown event {event!r}")

    def _check_start(self, conn: Connection, state: _TwilioState, msg: Json) -> None:
        bad = conn.violations.append
        info = msg.get("start")
        if msg.get("event") != "start" or not isinstance(info, dict):
            bad(f"second message is not start: {msg}")
            return
        state.start = msg
        for key, prefix in (("streamSid", "MZ"), ("callSid", "CA"), ("accountSid", "AC")):
            if not SID[prefix].fullmatch(str(info.get(key))):
                bad(f"start.{key} {info.get(key)!r} is not in Twilio's shape")
        if msg.get("streamSid") != info.get("streamSid"):
            bad("streamSid differs from start.streamSid")
        if info.get("tracks") != ["inbound"]:
            bad(f"tracks {info.get('tracks')}")
        if info.get("mediaFormat") != MEDIA_FORMAT:
            bad(f"mediaFormat {info.get('mediaFormat')}")
        if not isinstance(info.get("customParameters"), dict):
            bad("customParameters is not an object")

    def _check_media(self, conn: Connection, state: _TwilioState, msg: Json) -> None:
        bad = conn.violations.append
        media = msg.get("media", {})
        state.chunk += 1
        if media.get("track") != "inbound":
            bad(f"media track {media.get('track')!r}")
        if media.get("chunk") != str(state.chunk):
            bad(f"chunk {media.get('chunk')!r}, expected {str(state.chunk)!r}")
        timestamp = media.get("timestamp")
        if not isinstance(timestamp, str) or not timestamp.isdigit():
            bad(f"timestamp {timestamp!r} is not a string of digits")
        elif int(timestamp) < state.timestamp:
            bad(f"timestamp {timestamp} went back from {state.timestamp}")
        else:
            state.timestamp = int(timestamp)
        try:
            payload = base64.b64decode(media.get("payload", ""), validate=True)
        except ValueError:
            bad("payload is not base64")
            return
        if self.media_bytes is not None and len(payload) != self.media_bytes:
            bad(f"payload of {len(payload)} bytes, Twilio sends {self.media_bytes}")
        if self.echo:
            self.send_media(payload, conn)

    # -- what the server sends -----------------------------------------------------------

    def stream_sid(self, conn: Connection | None = None) -> str:
        conn = conn or self.current
        start = self._state(conn).start
        assert start is not None, "no start received yet"
        sid: str = start["streamSid"]
        return sid

    def send_media(self, mulaw: bytes, conn: Connection | None = None) -> None:
        conn = conn or self.current
        payload = base64.b64encode(mulaw).decode()
        conn.send(
            {"event": "media", "streamSid": self.stream_sid(conn), "media": {"payload": payload}}
        )

    def send_pcm(self, pcm: bytes, conn: Connection | None = None) -> None:
        """s16le at 8 kHz, sent as one media message of mu-law."""
        self.send_media(audioop.lin2ulaw(pcm, 2), conn)

    def send_mark(self, name: str, conn: Connection | None = None) -> None:
        conn = conn or self.current
        self._state(conn).marks_pending.append(name)
        conn.send({"event": "mark", "streamSid": self.stream_sid(conn), "mark": {"name": name}})

    def send_clear(self, conn: Connection | None = None) -> None:
        conn = conn or self.current
        conn.send({"event": "clear", "streamSid": self.stream_sid(conn)})

    # -- views ---------------------------------------------------------------------------

    def inbound_mulaw(self, conn: Connection | None = None) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.events("media", conn))

    def inbound_pcm(self, conn: Connection | None = None) -> bytes:
        return audioop.ulaw2lin(self.inbound_mulaw(conn), 2)

    def marks_pending(self, conn: Connection | None = None) -> list[str]:
        return list(self._state(conn).marks_pending)


# -- Vonage Voice API websockets -----------------------------------------------------------

CONTENT_TYPE = re.compile(r"audio/l16;rate=(8000|16000)")


@dataclass
class _VonageState:
    rate: int | None = None
    notifies_pending: list[Any] = field(default_factory=list)
    clears_pending: int = 0


class VonageServer(_DocServer):
    """A server for Vonage's Voice API websockets (NCCO `connect` to a websocket).

    Checks, per "WebSockets in the Vonage Voice API": the first message is the
    text `websocket:connected` with `content-type` `audio/l16;rate=8000|16000`;
    every binary frame is exactly 20 ms of 16-bit PCM at that rate; a
    `websocket:notify` answers a notify sent and not answered yet, in order,
    with the same payload; `websocket:cleared` answers a clear.
    """

    def __init__(self, echo: bool = False) -> None:
        super().__init__(echo)

    def new_state(self) -> _VonageState:
        return _VonageState()

    def _state(self, conn: Connection | None) -> _VonageState:
        state = self._states[id(conn or self.current)]
        assert isinstance(state, _VonageState)
        return state

    def on_message(self, conn: Connection, state: Any, message: str | bytes) -> None:
        assert isinstance(state, _VonageState)
        bad = conn.violations.append
        if len(conn.raw) == 1:
            self._check_connected(conn, state, message)
            return
        if isinstance(message, bytes):
            if state.rate is not None and len(message) != state.rate // 50 * 2:
                bad(
                    f"binary frame of {len(message)} bytes; 20 ms at {state.rate} Hz is "
                    f"{state.rate // 50 * 2}"
                )
            if self.echo:
                conn.send(message)
            return
        msg = _json(conn, message)
        if msg is None:
            return
        event = msg.get("event")
        if event == "websocket:notify":
            payload = msg.get("payload")
            if not state.notifies_pending or state.notifies_pending[0] != payload:
                bad(f"notify {payload!r} answered, pending were {state.notifies_pending}")
            else:
                state.notifies_pending.pop(0)
        elif event == "websocket:cleared":
            if state.clears_pending <= 0:
                bad("websocket:cleared without a clear")
            state.clears_pending -= 1
        elif event == "websocket:dtmf":
            if msg.get("digit") not in DTMF_DIGITS:
                bad(f"bad dtmf {msg}")
        else:
            bad(f"unknown event {event!r}")

    def _check_connected(self, conn: Connection, state: _VonageState, message: str | bytes) -> None:
        msg = _json(conn, message)
        if msg is None:
            return
        match = CONTENT_TYPE.fullmatch(str(msg.get("content-type")))
        if msg.get("event") != "websocket:connected" or match is None:
            conn.violations.append(f"first message is not websocket:connected: {msg}")
            return
        state.rate = int(match.group(1))

    # -- what the server sends -----------------------------------------------------------

    def rate(self, conn: Connection | None = None) -> int:
        rate = self._state(conn).rate
        assert rate is not None, "no websocket:connected received yet"
        return rate

    def headers(self, conn: Connection | None = None) -> Json:
        """The custom headers: websocket:connected's fields beyond Vonage's own."""
        first = (conn or self.current).texts[0]
        return {k: v for k, v in first.items() if k not in ("event", "content-type")}

    def send_audio(self, pcm: bytes, conn: Connection | None = None) -> None:
        (conn or self.current).send(pcm)

    def send_clear(self, conn: Connection | None = None) -> None:
        conn = conn or self.current
        self._state(conn).clears_pending += 1
        conn.send({"action": "clear"})

    def send_notify(self, payload: Any, conn: Connection | None = None) -> None:
        conn = conn or self.current
        self._state(conn).notifies_pending.append(payload)
        conn.send({"action": "notify", "payload": payload})

    # -- views ---------------------------------------------------------------------------

    def inbound_pcm(self, conn: Connection | None = None) -> bytes:
        return b"".join(m for m in list((conn or self.current).raw)[1:] if isinstance(m, bytes))

    def notifies_pending(self, conn: Connection | None = None) -> list[Any]:
        return list(self._state(conn).notifies_pending)
