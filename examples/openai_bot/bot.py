#!/usr/bin/env python3
"""A meeting bot whose voice is OpenAI Realtime, through audio-sidecar: no server of yours.

Standard library only, so it can be copied into any bot. It:

1. creates two Unix socketpairs, one for the meeting's audio going up
   (audio-in) and one for the agent's answers coming down (audio-out);
2. spawns `audio-sidecar run --protocol openai-realtime --session @session.json`
   with the far ends inherited as file descriptors. The sidecar reads the API
   key from OPENAI_API_KEY itself: the key is never on a command line;
3. streams "the meeting" into audio-in at real time as 48 kHz AudioSocket
   frames: a WAV file (someone asking a question) or a generated tone, then
   silence, as a meeting would, so the service's VAD sees the turn end;
4. reads the agent's answer from audio-out (48 kHz frames, paced in real
   time), plays it with aplay/paplay/sox if asked to, and writes it to a WAV;
5. prints the live captions from the sidecar's JSON-lines events:
   `transcript` (who said what), `playout_cleared` (a barge-in) and
   `agent_error`;
6. talks to the agent over the control channel, commands as JSON lines on
   the sidecar's stdin (`--control-stdin`): greets the room with `say` once
   connected, and answers the agent's calls of the `meeting_clock` tool
   (declared in session.json) with `tool_result`;
7. stops once the agent has answered and gone quiet, by closing the sidecar's
   stdin (`--exit-on-stdin-eof`).

For real, from the repository root:

    export OPENAI_API_KEY=sk-...
    .venv/bin/python examples/openai_bot/bot.py question.wav --out answer.wav

The sidecar is started as `<this python> -m sidecar`; set SIDECAR_CMD (for
example to `audio-sidecar`) to start it another way.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import itertools
import json
import math
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HERE = Path(__file__).resolve().parent
RATE = 48000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
# AudioSocket frame kinds (1-byte kind, 2-byte big-endian length, payload).
KIND_TERMINATE = 0x00
KIND_AUDIO_48K = 0x16
KIND_ERROR = 0xFF
AUDIO_KINDS = range(0x10, 0x19)  # 8 kHz ... 192 kHz; the sidecar sends 0x16 (48 kHz)

# Local players that take raw s16le mono at 48 kHz on stdin, tried in order.
PLAYERS = {
    "aplay": ["-q", "-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c", "1", "-"],
    "paplay": ["--raw", "--format=s16le", f"--rate={RATE}", "--channels=1"],
    "play": ["-q", "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1", "-"],
}

GREETING = "Hello everyone, I'm the meeting's assistant. Ask me anything, or what time it is."

_print_lock = threading.Lock()


def say(line: str, file: IO[str] | None = None) -> None:
    with _print_lock:
        print(line, file=file or sys.stdout, flush=True)


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


# -- the meeting's audio -----------------------------------------------------------------


def to_le16(samples: array.array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array.array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def tone(freq: float, seconds: float, level: float = 0.3) -> bytes:
    """A tone with 10 ms fades: a stand-in for someone speaking."""
    n = round(seconds * RATE)
    fade = RATE // 100
    out = array.array("h", bytes(2 * n))
    for i in range(n):
        envelope = min(1.0, i / fade, (n - 1 - i) / fade)
        out[i] = round(level * envelope * 32767 * math.sin(2 * math.pi * freq * i / RATE))
    return to_le16(out)


def read_wav(path: Path) -> bytes:
    """A PCM WAV (8/16/24/32-bit, any rate, any channels) as 48 kHz s16le mono."""
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:  # unsigned 8-bit
        values = [(b - 128) << 8 for b in raw]
    elif width == 2:
        values = list(struct.unpack(f"<{len(raw) // 2}h", raw[: len(raw) // 2 * 2]))
    elif width == 3:
        values = [
            int.from_bytes(raw[i + 1 : i + 3], "little", signed=True)
            for i in range(0, len(raw) - 2, 3)
        ]
    elif width == 4:
        values = [v >> 16 for v in struct.unpack(f"<{len(raw) // 4}i", raw[: len(raw) // 4 * 4])]
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported")
    if channels > 1:  # the meeting's mix is mono
        values = [
            sum(values[i : i + channels]) // channels
            for i in range(0, len(values) - channels + 1, channels)
        ]
    if rate != RATE:
        values = resample(values, rate)
    return to_le16(array.array("h", values))


def resample(values: list[int], rate: int) -> list[int]:
    """Linear interpolation to 48 kHz: enough for speech in an example. (Give a
    48 kHz WAV for the best quality: the sidecar's own resampler does the rest.)"""
    if not values:
        return []
    n = len(values) * RATE // rate
    last = len(values) - 1
    out = []
    for i in range(n):
        pos = i * rate / RATE
        j = min(int(pos), last)
        frac = pos - j
        nxt = values[min(j + 1, last)]
        out.append(round(values[j] + (nxt - values[j]) * frac))
    return out


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)


# -- the agent's voice ---------------------------------------------------------------------


def open_player() -> subprocess.Popen[bytes] | None:
    for name, args in PLAYERS.items():
        path = shutil.which(name)
        if path is not None:
            return subprocess.Popen([path, *args], stdin=subprocess.PIPE)
    return None


class Speaker(threading.Thread):
    """Reads audio-out: the agent's voice, which a real bot plays into the meeting."""

    def __init__(self, sock: socket.socket, player: subprocess.Popen[bytes] | None) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.player = player
        self.pcm = bytearray()
        self.frames = 0
        self.last_frame_at = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while len(buffer) >= 3:
                kind, length = struct.unpack_from(">BH", buffer)
                if len(buffer) < 3 + length:
                    break
                payload, buffer = buffer[3 : 3 + length], buffer[3 + length :]
                if kind in AUDIO_KINDS:
                    self.heard(payload)
                elif kind == KIND_ERROR:
                    self.errors.append(payload[1:].decode("utf-8", "replace"))

    def heard(self, payload: bytes) -> None:
        # A real bot hands `payload` (20 ms of 48 kHz s16le mono) to the meeting here.
        self.pcm += payload
        self.frames += 1
        self.last_frame_at = time.monotonic()
        if self.player is not None and self.player.stdin is not None:
            try:
                self.player.stdin.write(payload)
                self.player.stdin.flush()
            except OSError:  # the player went away: keep collecting
                self.player = None


# -- the bot's side of the conversation: its tools and its commands -----------------------------


class MeetingClock:
    """The `meeting_clock` tool (session.json declares it): the time now, in the
    timezone the agent asks for, and how long the meeting has run. A real bot
    would answer from the meeting's own start; this one's meeting starts with it."""

    name = "meeting_clock"

    def __init__(self) -> None:
        self.started = datetime.now(UTC)
        self.started_at = time.monotonic()

    def __call__(self, arguments: Any) -> dict[str, Any]:
        # The arguments are null when the agent's text was not JSON: UTC then.
        zone_name = arguments.get("timezone") if isinstance(arguments, dict) else None
        zone_name = zone_name or "UTC"
        try:
            zone = ZoneInfo(str(zone_name))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            return {"error": f"unknown timezone {zone_name!r}: use an IANA name like Europe/Paris"}
        elapsed = time.monotonic() - self.started_at
        now = self.started + timedelta(seconds=elapsed)
        return {
            "timezone": str(zone_name),
            "now": now.astimezone(zone).isoformat(timespec="seconds"),
            "started": self.started.astimezone(zone).isoformat(timespec="seconds"),
            "elapsed_minutes": int(elapsed // 60),
        }


class Control:
    """Our end of the control channel: one command per line on the sidecar's
    stdin (`--control-stdin`); each is answered by a `command_result` event."""

    def __init__(self, stdin: IO[str]) -> None:
        self.stdin = stdin
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def send(self, command: str, **fields: Any) -> str:
        """Sends one command; returns its `id`, which its answer echoes."""
        ident = f"{command}-{next(self.ids)}"
        line = json.dumps({"command": command, "id": ident, **fields})
        # Closed or broken: the sidecar is gone, and its exit status says why.
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.stdin.write(line + "\n")
            self.stdin.flush()
        return ident

    def close(self) -> None:
        """With --exit-on-stdin-eof, a clean stop."""
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.stdin.close()


# -- the sidecar's events --------------------------------------------------------------------


class Events(threading.Thread):
    """Reads the sidecar's stdout, one JSON object per line, and prints the captions."""

    def __init__(
        self, stream: IO[str], start: float, control: Control, greeting: str | None
    ) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.start_at = start
        self.control = control
        self.greeting = greeting
        self.tools = {MeetingClock.name: MeetingClock()}
        self.tool_calls = 0
        self.refused = 0
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.transcripts: list[dict[str, Any]] = []
        self.last_reply_at = 0.0
        """When the agent's latest reply was final (monotonic): its transcript came."""
        self.barge_ins = 0
        self.errors = 0
        self.last_stats: dict[str, Any] = {}
        self.stopped: dict[str, Any] = {}
        self.gave_up: dict[str, Any] = {}

    def run(self) -> None:
        try:
            for line in self.stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.handle(event)
        finally:
            self.ended.set()

    def caption(self, text: str) -> None:
        say(f"[{time.monotonic() - self.start_at:6.1f}s] {text}")

    def handle(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "transcript":
            self.transcripts.append(event)
            if event["role"] == "assistant":
                self.last_reply_at = time.monotonic()
            self.caption(f"{event['role']}: {event['text']}")
        elif name == "playout_cleared":
            # Every time the service hears the meeting speak, the sidecar clears the
            # agent's playout; a clear that dropped nothing was no interruption.
            if event["dropped_ms"] > 0:
                self.barge_ins += 1
                heard = event["heard_ms"]
                of_reply = "" if heard is None else f" after {heard} ms of its reply"
                self.caption(
                    f"barge-in: the agent was cut off{of_reply}; "
                    f"{event['dropped_ms']} ms of its audio dropped"
                )
        elif name == "agent_error":
            self.errors += 1
            code = f" ({event['code']})" if event.get("code") else ""
            self.caption(f"agent error: {event['message']}{code}")
        elif name == "tool_call":
            self.answer(event)
        elif name == "tool_call_cancelled":
            self.caption(f"tool: call {event['call_id']} cancelled ({event['reason']})")
        elif name == "command_result":
            if not event["ok"]:
                self.refused += 1
                error = event["error"]
                say(
                    f"bot: the sidecar refused {event['command']} ({event['id']}): "
                    f"{error['code']}: {error['message']}",
                    sys.stderr,
                )
        elif name == "connected":
            say(f"bot: connected to {event['url']} (attempt {event['attempt']})")
            if not self.connected.is_set() and self.greeting:
                # Once, not after every reconnect: the room has been greeted.
                self.control.send("say", text=self.greeting)
                say(f"bot: greeting the room: {self.greeting}")
            self.connected.set()
        elif name == "disconnected":
            say(f"bot: disconnected: {event['reason']}")
        elif name == "retrying":
            say(f"bot: reconnecting in {event['delay']:g} s: {event['reason']}")
        elif name == "gave_up":
            self.gave_up = event
            say(f"bot: the sidecar gave up: {event['reason']}", sys.stderr)
        elif name in ("warning", "agent_warning", "invalid_message", "invalid_frame"):
            say(f"bot: sidecar {name}: {event['message']}", sys.stderr)
        elif name == "stats":
            self.last_stats = event
        elif name == "stopped":
            self.stopped = event
        # Other events (ready, bot_connected, agent_speaking, ...) and unknown ones:
        # nothing to show.

    def answer(self, call: dict[str, Any]) -> None:
        """Runs the tool the agent called and answers with its output."""
        tool = self.tools.get(call["name"])
        output: dict[str, Any]
        if tool is None:  # the session declares no such tool: say so, or the agent waits
            output = {"error": f"no tool named {call['name']!r}"}
        else:
            try:
                output = tool(call["arguments"])
            except Exception as exc:  # a bug in a tool must not stop the events
                output = {"error": f"{call['name']} failed: {exc}"}
        self.control.send("tool_result", call_id=call["call_id"], output=output)
        self.tool_calls += 1
        self.caption(f"tool: {call['name']}({call['arguments_json']}) -> {json.dumps(output)}")


# -- the bot ---------------------------------------------------------------------------------


def sidecar_command(args: argparse.Namespace, in_fd: int, out_fd: int) -> list[str]:
    base = shlex.split(os.environ.get("SIDECAR_CMD", "")) or [sys.executable, "-m", "sidecar"]
    command = [
        *base,
        "run",
        "--protocol",
        "openai-realtime",
        "--session",
        f"@{args.session}",
        "--audio-in-fd",
        str(in_fd),
        "--audio-out-fd",
        str(out_fd),
        "--control-stdin",
        "--exit-on-stdin-eof",
        "--log-level",
        args.log_level,
    ]
    if args.url:
        command += ["--url", args.url]
    for header in args.header:
        command += ["--header", header]
    return command


def shown(command: list[str]) -> str:
    """The command for humans, with header values hidden (they may hold a token)."""
    out = list(command)
    for i, word in enumerate(out[:-1]):
        value = out[i + 1]
        if word == "--header" and not value.startswith("@"):
            out[i + 1] = value.partition(":")[0] + ": ***"
    return shlex.join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "wav", nargs="?", type=Path, help="what the meeting says (a PCM WAV); default: a tone"
    )
    parser.add_argument(
        "--session",
        type=Path,
        default=HERE / "session.json",
        help="the Realtime session object (default: session.json beside this file)",
    )
    parser.add_argument(
        "--url",
        help="another endpoint (a proxy, a test server); default: the sidecar's, OpenAI's",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="extra handshake header for the sidecar, 'Name: value' or @FILE (repeatable). "
        "The key belongs in OPENAI_API_KEY (or an @FILE): arguments are visible to others",
    )
    parser.add_argument(
        "--greeting",
        default=GREETING,
        help="what the agent says to the room once connected (the `say` command); "
        "'' for nothing (default: %(default)r)",
    )
    parser.add_argument("--seconds", type=float, default=1.5, help="length of the tone")
    parser.add_argument("--freq", type=float, default=300.0, help="tone frequency (Hz)")
    parser.add_argument("--out", type=Path, help="write the agent's voice to this WAV (48 kHz)")
    parser.add_argument(
        "--play", action="store_true", help="play the agent's voice with aplay, paplay or sox"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=2.0,
        help="stop once the agent has answered and been quiet this long (s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="give up this long after the audio ended (s)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="the sidecar's log level on stderr (default: %(default)s)",
    )
    args = parser.parse_args()
    if not args.session.is_file():
        parser.error(f"no session file at {args.session}")
    args.session = args.session.resolve()
    if args.wav is not None and not args.wav.is_file():
        parser.error(f"no such WAV file: {args.wav}")
    return args


class Mic:
    """Our end of audio-in: what the meeting says goes up here."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.audio_bytes = 0
        """How much of the WAV or tone was sent (the silence after it not counted)."""

    def send(self, pcm: bytes, silence: bool = False) -> None:
        self.sock.sendall(frame(KIND_AUDIO_48K, pcm))
        if not silence:
            self.audio_bytes += len(pcm)

    def terminate(self) -> None:
        """Ends the stream: the sidecar sends its last chunk at once."""
        self.sock.sendall(frame(KIND_TERMINATE))


def stream_meeting(
    mic: Mic, pcm: bytes, events: Events, speaker: Speaker, args: argparse.Namespace
) -> bool:
    """The meeting's audio, then silence, at real time, until the agent has answered.

    True when it answered. A meeting never stops sending audio: the silence
    after the question is what lets the service's VAD end the user's turn.
    """
    start = time.monotonic()
    spoken_until = start + len(pcm) / (2 * RATE)
    n = 0
    while not events.ended.is_set():
        # An absolute schedule: sleep overshoot never accumulates.
        time.sleep(max(0.0, start + n * FRAME_MS / 1000 - time.monotonic()))
        offset = n * FRAME_BYTES
        try:
            if offset < len(pcm):
                mic.send(pcm[offset : offset + FRAME_BYTES])
            else:
                mic.send(bytes(FRAME_BYTES), silence=True)
        except OSError:
            return False
        n += 1
        now = time.monotonic()
        if now < spoken_until:
            continue
        # A reply that came after the meeting spoke (not the greeting) is the answer.
        answered = speaker.frames > 0 and events.last_reply_at > spoken_until
        if answered and now - speaker.last_frame_at >= args.linger:
            return True
        if now - spoken_until >= args.timeout:
            say(f"bot: no answer within {args.timeout:g} s of the end of the audio", sys.stderr)
            return False
    return False


def main() -> int:
    args = parse_args()
    pcm = read_wav(args.wav) if args.wav is not None else tone(args.freq, args.seconds)
    what = str(args.wav) if args.wav is not None else f"a {args.freq:g} Hz tone"
    player = open_player() if args.play else None
    if args.play and player is None:
        say("bot: --play needs aplay, paplay or sox's play on PATH", sys.stderr)
        return 2

    mic_sock, mic_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    speaker_sock, speaker_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    command = sidecar_command(args, mic_child.fileno(), speaker_child.fileno())
    say(f"bot: starting {shown(command)}")
    started = time.monotonic()
    # OPENAI_API_KEY reaches the sidecar in its environment, inherited from ours.
    sidecar = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(mic_child.fileno(), speaker_child.fileno()),
        text=True,
    )
    # The child has its own copies; ours would keep the sockets open after it exits.
    mic_child.close()
    speaker_child.close()
    assert sidecar.stdout is not None and sidecar.stdin is not None

    control = Control(sidecar.stdin)
    events = Events(sidecar.stdout, started, control, args.greeting)
    events.start()
    speaker = Speaker(speaker_sock, player)
    speaker.start()

    answered = False
    mic = Mic(mic_sock)
    try:
        deadline = time.monotonic() + 20
        while not events.connected.wait(0.1):
            if events.ended.is_set() or time.monotonic() > deadline:
                say("bot: the sidecar did not connect to the service", sys.stderr)
                break
        else:
            say(f"bot: the meeting says {what} ({len(pcm) / (2 * RATE):.1f} s), then silence")
            answered = stream_meeting(mic, pcm, events, speaker, args)
            mic.terminate()
    except KeyboardInterrupt:
        say("bot: interrupted")
    except OSError as exc:
        say(f"bot: audio-in failed: {exc}", sys.stderr)

    control.close()  # --exit-on-stdin-eof: a clean stop
    try:
        code = sidecar.wait(timeout=15)
    except subprocess.TimeoutExpired:
        sidecar.kill()
        code = sidecar.wait()
    events.join(timeout=5)
    mic_sock.close()
    speaker_sock.close()
    speaker.join(timeout=5)
    if player is not None and player.stdin is not None:
        player.stdin.close()
        player.wait(timeout=30)

    for error in speaker.errors:
        say(f"bot: the sidecar reported an error on audio-out: {error}", sys.stderr)
    if args.out is not None:
        write_wav(args.out, bytes(speaker.pcm))
        say(f"bot: wrote the agent's voice to {args.out}")
    # What a barge-in drops is expected (and shown above); anything else is worth a look.
    dropped = dict(events.last_stats.get("dropped") or {})
    dropped.pop("downlink_cleared", None)
    if dropped:
        say(f"bot: the sidecar dropped samples: {json.dumps(dropped)}", sys.stderr)
    say(
        f"done: sent {mic.audio_bytes / (2 * RATE):.2f} s of audio, received "
        f"{len(speaker.pcm) / (2 * RATE):.2f} s of the agent's voice at {RATE} Hz, "
        f"{len(events.transcripts)} transcripts, {events.barge_ins} barge-ins, "
        f"{events.errors} agent errors, {events.tool_calls} tool calls answered, "
        f"{events.refused} commands refused, sidecar exited with {code}"
    )
    if code != 0:
        return code
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
