"""Run settings: from flags, the environment, and Attendee's `websocket_settings`.

Everything here is validated once, up front, so a mistake is reported as a
usage error naming the flag or field before any socket is opened.
"""

from __future__ import annotations

import codecs
import ipaddress
import math
import os
import re
import stat
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import h11
import msgspec

from sidecar import dialects
from sidecar.calls import TIMEOUT_S
from sidecar.dialects.base import Options
from sidecar.fill import HOLD_MS, HOLD_RANGE_MS
from sidecar.gate import MAX_THRESHOLD
from sidecar.memory import DEFAULT_MAX_CHARS, DEFAULT_MAX_TURNS
from sidecar.messages import (
    MAX_MESSAGE_BYTES,
    PARTICIPANT_SAMPLE_RATES,
    SAMPLE_RATES,
    ParticipantSampleRate,
    SampleRate,
    validation_parts,
)
from sidecar.resample import Quality
from sidecar.retry import RetryConfig


class ConfigError(Exception):
    """A setting is wrong; the message names it and says why."""


Url = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^wss?://")]

URL_ENV: Final = "SIDECAR_URL"
# Header lines in the environment: /proc/PID/environ is private to our user,
# /proc/PID/cmdline is not.
HEADERS_ENV: Final = "SIDECAR_HEADERS"
# Attendee's default, for --sample-rate and for websocket_settings alike.
DEFAULT_SAMPLE_RATE: Final = 16000


def one_of(choices: Sequence[object]) -> str:
    """`8000, 16000 or 24000`: the choices as a sentence says them."""
    words = [str(c) for c in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class AudioSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Url
    sample_rate: SampleRate = DEFAULT_SAMPLE_RATE
    # RMS (int16 units) of the meeting's audio at which the bot's output pauses.
    pause_threshold: Annotated[int, msgspec.Meta(ge=0, le=MAX_THRESHOLD)] | None = None


class ParticipantAudioSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Url
    sample_rate: ParticipantSampleRate = DEFAULT_SAMPLE_RATE


class WebsocketSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Attendee's `websocket_settings` object, verbatim."""

    audio: AudioSettings
    per_participant_audio: ParticipantAudioSettings | None = None
    # Attendee's own object may carry it; the sidecar has no video, so it is
    # taken as it comes (any shape), ignored, and a warning says so.
    per_participant_video: Any = None


_settings_decoder = msgspec.json.Decoder(WebsocketSettings)

InputFormat = Literal["audiosocket", "raw"]
ReconnectOnClose = Literal["auto", "always", "never"]
"""After a clean close (1000) from the server: auto = as the dialect says."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a Unix socket comes from: a path we listen on, or an inherited fd."""

    path: Path | None = None
    fd: int | None = None

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"fd:{self.fd}"


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    audio_in: Endpoint
    audio_out: Endpoint
    bot_id: str = field(default_factory=lambda: f"bot_{uuid.uuid4().hex[:16]}")
    sample_rate: int = DEFAULT_SAMPLE_RATE
    input_format: InputFormat = "audiosocket"
    input_rate: int = 48000
    output_rate: int = 48000
    chunk_ms: int = 20
    frame_ms: int = 20
    quality: Quality = "medium"
    retry: RetryConfig = field(default_factory=RetryConfig)
    reconnect_on_close: ReconnectOnClose = "auto"
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: Path | None = None
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    connect_timeout: float = 10.0
    send_timeout: float = 5.0
    close_timeout: float = 2.0
    replay_ms: int = 2000
    max_playout_ms: int = 60000
    jitter_ms: int = 40
    max_message_bytes: int = MAX_MESSAGE_BYTES
    error_replies_per_s: float = 5.0
    stats_interval: float = 5.0
    exit_on_stdin_eof: bool = False
    per_participant: bool = False
    per_participant_url: str | None = None
    per_participant_sample_rate: int = DEFAULT_SAMPLE_RATE
    max_participants: int = 32
    pause_threshold: int | None = None
    # Silence on the mixed stream while the bot writes nothing (sidecar/fill.py).
    fill_silence: bool = True
    fill_hold_ms: int = HOLD_MS
    protocol: str = dialects.DEFAULT
    stream_params: tuple[tuple[str, str], ...] = ()
    call_sid: str | None = None
    account_sid: str | None = None
    session: dict[str, object] | None = None
    """--session's object; None when not given."""
    dialect_flags: tuple[tuple[str, str], ...] = ()
    """The dialects' own flags given (`--agent-id`, value), for `Options.extra`."""
    control: Endpoint | None = None
    """The control socket (--control, --control-fd); None: none."""
    control_stdin: bool = False
    tool_timeout: float = TIMEOUT_S
    # The conversation record a new agent session is seeded with (sidecar/memory.py).
    memory: bool = True
    memory_turns: int = DEFAULT_MAX_TURNS
    memory_chars: int = DEFAULT_MAX_CHARS
    max_session_s: float | None = None
    """Move to a new agent session (at a quiet moment) after this long, if
    sooner than the dialect's own cap; None: the dialect's cap only."""
    warnings: tuple[str, ...] = ()


def dialect_options(config: Config) -> Options:
    """The part of the settings a dialect reads."""
    return Options(
        bot_id=config.bot_id,
        sample_rate=config.sample_rate,
        participant_sample_rate=config.per_participant_sample_rate,
        chunk_ms=config.chunk_ms,
        max_message_bytes=config.max_message_bytes,
        stream_params=config.stream_params,
        call_sid=config.call_sid,
        account_sid=config.account_sid,
        session=config.session or {},
        memory=config.memory,
        extra=dict(config.dialect_flags),
    )


MAX_FILE_BYTES: Final = 1 << 20
"""Of a file named on the command line (--session, --settings, --header @FILE):
no real one comes near it, and whatever it holds is kept for the whole run
(a session is sent on every connect)."""


def read_text_file(path: str, source: str) -> str:
    """The one reader of files named on the command line: a regular file of at
    most MAX_FILE_BYTES of UTF-8 text without a byte order mark. `source` (the
    flag and the path) begins every error."""
    try:
        # O_NONBLOCK: a FIFO nobody writes to opens at once (and is refused
        # below) instead of blocking start-up for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{source}: not a regular file")
        try:
            data = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the file: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{source}: larger than the limit of {MAX_FILE_BYTES} bytes "
            f"({MAX_FILE_BYTES >> 20} MiB)"
        )
    if data.startswith(codecs.BOM_UTF8):
        # Python and msgspec would read it as part of the first line (a header
        # name, a JSON value) and fail further on, less clearly.
        raise ConfigError(
            f"{source}: starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without one"
        )
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{source}, line {line}: not UTF-8 text (byte offset {exc.start})"
        ) from None


T = TypeVar("T")


class _NotJson(Exception):
    """Text that does not parse as JSON; the message says where and why."""


def _decode_json(decoder: msgspec.json.Decoder[T], text: str) -> T:
    """Decode; raises _NotJson (with the line of a byte offset) for bad JSON,
    msgspec.ValidationError for JSON of the wrong shape."""
    try:
        return decoder.decode(text)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        reason = str(exc)
        at = re.search(r"\(byte (\d+)\)", reason)
        if at is not None and "\n" in text:
            line = text.encode()[: int(at[1])].count(b"\n") + 1
            reason = f"line {line}: {reason}"
        raise _NotJson(reason) from None
    except RecursionError:
        raise _NotJson("nested too deeply for the JSON decoder (about 1000 levels)") from None


def _json_flag(decoder: msgspec.json.Decoder[T], text: str, flag: str) -> tuple[T, str]:
    """A JSON flag's value: inline, from `@FILE`, or from the path of an existing
    file; returns the value and its source (flag and path) for later errors.
    Raises ConfigError for anything but msgspec.ValidationError."""
    if text.startswith("@"):
        source = f"{flag} @{text[1:]}"
        try:
            return _decode_json(decoder, read_text_file(text[1:], source)), source
        except _NotJson as exc:
            raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    try:
        return _decode_json(decoder, text), flag
    except _NotJson as inline:
        if text.lstrip()[:1] in ("{", "["):
            raise ConfigError(f"{flag} is not valid JSON: {inline}") from None
        if not os.path.lexists(text):
            # The value itself is not echoed: it may hold a token.
            raise ConfigError(
                f"{flag}: the value is neither JSON ({inline}) nor the path of an existing "
                "file (give inline JSON, @FILE or FILE)"
            ) from None
    source = f"{flag} {text}"
    try:
        return _decode_json(decoder, read_text_file(text, source)), source
    except _NotJson as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None


def parse_settings(text: str) -> WebsocketSettings:
    """Decode Attendee's object: inline, `@FILE` or FILE."""
    try:
        settings, _ = _json_flag(_settings_decoder, text, "--settings")
    except msgspec.ValidationError as exc:
        fieldname, reason = _settings_error(str(exc))
        raise ConfigError(f"--settings: `{fieldname}`: {reason}") from None
    return settings


def _settings_error(text: str) -> tuple[str, str]:
    """msgspec's "<reason> - at `$.path`" as (dotted field name, plain reason)."""
    reason, path = validation_parts(text)
    # A missing or unknown key is reported at its parent; name the key itself.
    for prefix, plain in (
        ("Object missing required field ", "is required"),
        ("Object contains unknown field ", "is not a known field"),
    ):
        if reason.startswith(prefix):
            key = reason.removeprefix(prefix).strip("`")
            return (f"{path}.{key}" if path else key), plain
    if path.endswith("url"):
        reason = "must be a ws:// or wss:// URL"
    elif path.endswith("sample_rate") and reason.startswith("Invalid enum value"):
        rates = PARTICIPANT_SAMPLE_RATES if path.startswith("per_participant") else SAMPLE_RATES
        reason = f"must be {one_of(rates)}, not {reason.removeprefix('Invalid enum value ')}"
    return path or "(top level)", reason


_object_decoder = msgspec.json.Decoder(dict[str, object])


def parse_session(text: str) -> dict[str, object]:
    """--session: a JSON object, inline, `@FILE` or FILE."""
    try:
        return _json_flag(_object_decoder, text, "--session")[0]
    except msgspec.ValidationError:
        raise ConfigError("--session must be a JSON object ({...})") from None


def parse_stream_param(text: str) -> tuple[str, str]:
    wire_text(text, "--stream-param")
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--stream-param {text!r} must look like NAME=VALUE")
    return name.strip(), value


def resolve_dialect(config: Config, *, rate_given: bool, environ: dict[str, str]) -> Config:
    """Settle what depends on the dialect: its wire rate, its credentials, its checks."""
    config = replace(config, sample_rate=_rate(config, rate_given=rate_given))
    dialect = dialects.make(config.protocol, dialect_options(config))
    problems = list(dialect.problems())
    rate = dialect.uplink_audio().rate
    if rate_given and rate != config.sample_rate:
        problems.append(
            f"--protocol {config.protocol} sends audio at {rate} Hz; --sample-rate "
            f"{config.sample_rate} does not apply"
        )
    if config.per_participant and not dialect.per_participant:
        problems.append(f"--protocol {config.protocol} has no per-participant streams")
    given = {
        "--stream-param": bool(config.stream_params),
        "--call-sid": config.call_sid is not None,
        "--account-sid": config.account_sid is not None,
        "--session": config.session is not None,
        **{name: True for name, _ in config.dialect_flags},
    }
    for flag, present in given.items():
        if present and not dialect.takes(flag):
            problems.append(f"{flag} means nothing to --protocol {config.protocol}")
    if problems:
        raise ConfigError("; ".join(problems))
    headers = config.headers
    auth = dialect.auth_header

    carriers = {auth.lower(), *(name.lower() for name in dialect.auth_alternatives)}

    def authorized() -> bool:
        return any(name.lower() in carriers for name, _ in headers)

    envs = dialect.credential_envs()
    if not authorized():
        found = dialect.credential(environ)
        if found is not None:
            # Not a header we were given, but one made from it (or, for Twilio,
            # signed with it): held to the rules of a header value all the same.
            check_header_value(found[1], found[0])
        headers += dialect.auth_headers(environ, config.url)
        needed = envs and dialect.auth_required
        if config.url == dialect.default_url and needed and not authorized():
            raise ConfigError(
                f"--protocol {config.protocol} needs credentials: set {' or '.join(envs)} "
                f"or give --header '{auth}: ...'"
            )
    for url, flag in ((config.url, "--url"), (config.per_participant_url, "--per-participant-url")):
        if url is not None:
            check_request(url, headers, flag)
    return replace(
        config,
        sample_rate=rate,
        headers=headers,
        warnings=(*config.warnings, *dialect.warnings()),
    )


def _rate(config: Config, *, rate_given: bool) -> int:
    """The uplink rate as the dialect allows it: one of its `sample_rates` (its
    default when none was given), or its own rate (checked by the caller); the
    per-participant rate is checked here too."""
    cls = dialects.DIALECTS[config.protocol]
    rate = config.sample_rate
    if cls.sample_rates:
        if not rate_given:
            rate = cls.default_sample_rate
        elif config.sample_rate not in cls.sample_rates:
            raise ConfigError(
                f"--sample-rate must be {one_of(cls.sample_rates)} for --protocol "
                f"{config.protocol}, not {config.sample_rate}"
            )
    rates = cls.participant_sample_rates
    if config.per_participant and rates and config.per_participant_sample_rate not in rates:
        raise ConfigError(
            f"--per-participant-sample-rate must be {one_of(rates)} for --protocol "
            f"{config.protocol}, not {config.per_participant_sample_rate}"
        )
    return rate


def check_url(url: str, flag: str) -> str | None:
    """Validate a websocket URL; returns a warning for cleartext off-host."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ConfigError(f"{flag}: {redact_url(url)!r} must start with ws:// or wss://")
    if not parts.hostname:
        raise ConfigError(f"{flag}: {redact_url(url)!r} has no host")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{flag}: {redact_url(url)!r} has an invalid port") from None
    wire_text(url, flag)
    _resource(url, flag)
    if parts.scheme == "ws" and not _is_loopback(parts.hostname):
        return (
            f"{flag} uses cleartext ws:// to non-loopback host {parts.hostname}: "
            "audio and headers travel unencrypted"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the HTTP library's rules ------------------------------------------------------------
# The upgrade request is built by wsproto with h11, which raises on a header
# or request target it finds invalid: in the middle of a connection attempt,
# after `ready`. So every part of the request is put to h11 here, the same
# way (str parts as ASCII, header pairs as the UTF-8 bytes link.py sends).


def _h11_refuses(
    target: bytes = b"/", headers: Sequence[tuple[bytes, bytes]] = ((b"X", b"x"),)
) -> str | None:
    """h11's objection to a GET request of `target` with `headers`, or None."""
    try:
        h11.Request(method=b"GET", target=target, headers=[(b"Host", b"host"), *headers])
    except h11.LocalProtocolError as exc:
        return str(exc)
    return None


def wire_text(text: str, where: str) -> bytes:
    """`text` as the UTF-8 it is sent as; argv and the environment carry
    undecodable bytes as lone surrogates, which cannot be."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{where}: not UTF-8 text (an undecodable byte at character {exc.start + 1})"
        ) from None


def _control(text: str) -> str:
    """Where h11's objection to a header value lies, in words (h11 decides:
    it refuses NUL, CR, LF, VT and FF, and lets other control characters by)."""
    for index, char in enumerate(text, start=1):
        if char in "\x00\r\n\x0b\x0c":
            return f"control character U+{ord(char):04X} at character {index}"
    return "character HTTP forbids"


def check_header_value(value: str, where: str) -> None:
    """A header value h11 will send; the error never shows the value."""
    if any(c in value for c in "\r\n"):
        raise ConfigError(f"{where}: the value must not contain a line break")
    data = wire_text(value, where)
    if _h11_refuses(headers=((b"X", data),)) is not None:
        raise ConfigError(f"{where}: the value holds a {_control(value)} (not shown)")


def parse_header(text: str, where: str = "--header") -> tuple[str, str]:
    """`Name: value` as a pair; an error names `where` and never the value."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise ConfigError(f"{where} {redact_header(text)!r} must look like 'Name: value'")
    if not name.isascii() or _h11_refuses(headers=((name.encode(), b"x"),)) is not None:
        raise ConfigError(
            f"{where} {name!r} is not a header name: HTTP allows only letters, digits "
            "and !#$%&'*+-.^_`|~ in one"
        )
    value = value.strip()
    check_header_value(value, f"{where} {name}")
    return name, value


def check_request(url: str, headers: Sequence[tuple[str, str]], flag: str) -> None:
    """The whole upgrade request to `url`, as wsproto will make it, put to h11:
    what each header allows alone, together they may not (a second Host)."""
    parts = urlsplit(url)
    found = _h11_refuses(_resource(url, flag), [(n.encode(), v.encode()) for n, v in headers])
    if found is not None:
        # Only combinations are left (checked one by one, each was fine), and
        # h11 names those by header name: no value is shown.
        raise ConfigError(f"the handshake request to {flag} {redact_url(url)}: {found}")
    host, _ = request_target(url)
    if parts.hostname and not host.isascii():
        try:
            ascii_form = parts.hostname.encode("idna").decode()
        except UnicodeError:
            ascii_form = ""
        hint = f"; in its IDNA form: {ascii_form}" if ascii_form else ""
        raise ConfigError(
            f"{flag}: the host name holds non-ASCII text, which a Host header cannot "
            f"carry; give it in ASCII{hint}"
        )
    if not parts.hostname or _h11_refuses(headers=((b"X", host.encode()),)) is not None:
        raise ConfigError(f"{flag}: {redact_url(url)!r} has no valid host name")


def request_target(url: str) -> tuple[str, str]:
    """The Host header and request target the upgrade to `url` carries (the
    link, check and the checks above derive them here, so they agree)."""
    parts = urlsplit(url)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # netloc keeps an IPv6 literal's brackets, which the Host header needs.
    return parts.netloc.rpartition("@")[2], resource


def _resource(url: str, flag: str) -> bytes:
    """The request target link.py derives from `url`, as wsproto sends it."""
    parts = urlsplit(url)
    _, resource = request_target(url)
    if resource.isascii() and _h11_refuses(target=resource.encode()) is None:
        return resource.encode()
    # Refused rather than encoded for the user: whether `%` or `+` in it is
    # already an escape, only they know.
    safe = "/:@!$&'()*+,;=-._~%?"
    encoded = urlunsplit(
        parts._replace(path=quote(parts.path, safe), query=quote(parts.query, safe))
    )
    raise ConfigError(
        f"{flag}: the path or query holds a space, a control character or non-ASCII "
        f"text, which an HTTP request line cannot carry; percent-encode it: "
        f"{redact_url(encoded)}"
    )


def parse_header_lines(text: str, source: str) -> tuple[tuple[str, str], ...]:
    """One `Name: value` per line, as curl's `-H @file`; blank and `#` lines skipped."""
    found = []
    # splitlines() would also split at \x0b, \x1c, U+2028 ...: only a newline
    # (with an optional \r before it, from an editor on Windows) ends a line.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip() and not line.lstrip().startswith("#"):
            found.append(parse_header(line, f"{source}, line {number}:"))
    return tuple(found)


def read_header_file(name: str) -> tuple[tuple[str, str], ...]:
    """`--header @FILE`: the headers in FILE; errors name the file, never a value."""
    source = f"--header @{name}"
    if not name:
        raise ConfigError("--header @: give the file's path after the @")
    headers = parse_header_lines(read_text_file(name, source), source)
    if not headers:
        # Most likely the wrong key of the Secret, or an empty one: better now
        # than as a 401 from the server.
        raise ConfigError(f"{source}: the file holds no 'Name: value' line")
    return headers


def parse_header_arg(text: str) -> tuple[tuple[str, str], ...]:
    """One `--header` argument: `Name: value`, or `@FILE` holding such lines."""
    # '@' cannot start a header name (it is no token character in RFC 9110).
    return read_header_file(text[1:]) if text.startswith("@") else (parse_header(text),)


def headers_from(args: Iterable[str], environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """SIDECAR_HEADERS' lines, then every --header in order; all are sent."""
    found = parse_header_lines(environ.get(HEADERS_ENV, ""), HEADERS_ENV)
    return found + tuple(pair for arg in args for pair in parse_header_arg(arg))


def redact_url(url: str) -> str:
    """Hide credentials and query values; keep what helps debugging."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    # A component with no '=' is a value with no name (`?TOKEN`): hidden too.
    query = "&".join(
        f"{pair.partition('=')[0]}=***" if "=" in pair else "***"
        for pair in parts.query.split("&")
        if pair
    )
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{text}?{query}" if query else text


def secrets(config: Config) -> tuple[str, ...]:
    """Every configured string of `run` that must never be printed."""
    return request_secrets(config.headers, (config.url, config.per_participant_url))


def _query_values(query: str) -> list[str]:
    """Each component's value, or the bare component where it has none."""
    return [
        value if sep else name for name, sep, value in (p.partition("=") for p in query.split("&"))
    ]


# The query values of the vendors' own default URLs (`model=gpt-realtime`)
# are public: hiding them would mask the model's name in every event.
_PUBLIC_QUERY_VALUES: Final = frozenset(
    value
    for dialect in dialects.DIALECTS.values()
    if dialect.default_url is not None
    for value in _query_values(urlsplit(dialect.default_url).query)
)


def request_secrets(
    headers: Iterable[tuple[str, str]], urls: Iterable[str | None]
) -> tuple[str, ...]:
    """Header values, and the query values (bare components included) and
    credentials of the URLs: what `run` and `check` both send and never print."""
    found = [value for _, value in headers]
    for url in urls:
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        if parts.username:
            found.append(parts.username)
        found += [v for v in _query_values(parts.query) if v not in _PUBLIC_QUERY_VALUES]
    # A library may log the URL decoded: hide that spelling as well.
    found += [unquote_plus(s) for s in found]
    # Hiding "1" or "42" would garble every timestamp in the log; values that
    # short are no secret anyway.
    return tuple(dict.fromkeys(s for s in found if len(s) >= 4))


def redact_header(text: str) -> str:
    name, sep, _ = text.partition(":")
    return f"{name}: ***" if sep else "***"


def endpoint(path: str | None, fd: int | None, flag: str) -> Endpoint:
    if (path is None) == (fd is None):
        raise ConfigError(f"give exactly one of --{flag} PATH or --{flag}-fd N")
    if fd is not None:
        if fd < 0:
            raise ConfigError(f"--{flag}-fd must be a non-negative file descriptor")
        return Endpoint(fd=fd)
    assert path is not None
    return Endpoint(path=Path(path))


def control_endpoint(path: str | None, fd: int | None) -> Endpoint | None:
    """--control PATH or --control-fd N: at most one."""
    if path is not None and fd is not None:
        raise ConfigError("give --control PATH or --control-fd N, not both")
    if path is None and fd is None:
        return None
    return endpoint(path, fd, "control")


def env_url(environ: Mapping[str, str]) -> str | None:
    return environ.get(URL_ENV) or None


@dataclass(frozen=True, slots=True)
class Range:
    """The values a numeric flag may take, both ends included."""

    flag: str
    field: str
    """Where the value lives in Config (dotted for a nested one)."""
    low: float
    high: float

    def __str__(self) -> str:
        return f"{_number(self.low)} to {_number(self.high)}"

    def problem(self, value: float) -> str | None:
        if self.low <= value <= self.high:
            return None
        return f"{self.flag} must be between {_number(self.low)} and {_number(self.high)}, " + (
            f"not {_number(value)}"
        )


def _number(value: float) -> str:
    # argparse's float takes "nan" and "inf", which int() refuses.
    return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:g}"


RANGES: Final = (
    Range("--chunk-ms", "chunk_ms", 10, 1000),
    Range("--frame-ms", "frame_ms", 10, 100),
    Range("--jitter-ms", "jitter_ms", 0, 10_000),
    Range("--max-playout-ms", "max_playout_ms", 10, 600_000),
    Range("--replay-ms", "replay_ms", 0, 60_000),
    Range("--ping-interval", "ping_interval", 0.1, 3600),
    Range("--ping-timeout", "ping_timeout", 0.1, 3600),
    Range("--connect-timeout", "connect_timeout", 0.1, 3600),
    # Four times this is trio-websocket's hard cap on one message in memory.
    Range("--max-message-bytes", "max_message_bytes", 1024, 16 << 20),
    Range("--error-replies-per-s", "error_replies_per_s", 0, 1000),
    # Below this the stats event is most of the output (at 0, a busy loop).
    Range("--stats-interval", "stats_interval", 0.005, 86_400),
    Range("--max-participants", "max_participants", 1, 256),
    Range("--tool-timeout", "tool_timeout", 0.1, 3600),
    Range("--memory-turns", "memory_turns", 1, 10_000),
    Range("--memory-chars", "memory_chars", 1, 1_000_000),
    Range("--max-session-s", "max_session_s", 1, 86_400),
    Range("--pause-threshold", "pause_threshold", 0, MAX_THRESHOLD),
    Range("--fill-hold-ms", "fill_hold_ms", HOLD_RANGE_MS.start, HOLD_RANGE_MS.stop - 1),
    Range("--max-retries", "retry.max_retries", 0, 1_000_000),
    Range("--retry-delay", "retry.delay", 0, 3600),
    Range("--max-retry-delay", "retry.max_delay", 0, 3600),
    Range("--healthy-after", "retry.healthy_after", 0, 86_400),
)
"""Every numeric flag of `run` with its bounds: checked here, shown in --help."""

RANGE_OF: Final = {r.flag: r for r in RANGES}


def check_ranges(values: Mapping[str, float | None]) -> None:
    """Flag values (None: not given) against RANGES."""
    for flag, value in values.items():
        problem = None if value is None else RANGE_OF[flag].problem(value)
        if problem is not None:
            raise ConfigError(problem)


def validate(config: Config) -> Config:
    """Ranges, and cross-field checks that flags alone cannot express."""
    check_ranges({r.flag: attrgetter(r.field)(config) for r in RANGES})
    # The rates are the dialect's to allow (resolve_dialect).
    if config.max_playout_ms < config.frame_ms:
        raise ConfigError("--max-playout-ms must hold one frame")
    if config.output_rate * config.frame_ms % 1000:
        raise ConfigError("--output-rate times --frame-ms must be a whole number of samples")
    control = config.control
    if control is not None and control in (config.audio_in, config.audio_out):
        raise ConfigError(f"--control {control.describe()} is an audio socket already")
    if config.ca_file is not None and not config.ca_file.is_file():
        raise ConfigError(f"--ca-file {config.ca_file} is not a readable file")
    return config
