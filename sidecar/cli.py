"""`audio-sidecar`: the command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, get_args

import trio

from sidecar import __version__, commands, dialects, events, frames, service
from sidecar.config import (
    HEADERS_ENV,
    MAX_FILE_BYTES,
    RANGE_OF,
    RANGES,
    URL_ENV,
    Config,
    ConfigError,
    InputFormat,
    ReconnectOnClose,
    check_ranges,
    check_url,
    control_endpoint,
    endpoint,
    env_url,
    headers_from,
    one_of,
    parse_session,
    parse_settings,
    parse_stream_param,
    resolve_dialect,
    secrets,
    validate,
    wire_text,
)
from sidecar.dialects.base import SHARED_FLAGS
from sidecar.redact import Redactor
from sidecar.resample import Quality
from sidecar.retry import Backoff, RetryConfig
from sidecar.sockets import SocketPathError

Handler = Callable[[argparse.Namespace], int]

INPUT_RATES = sorted(frames.AUDIO_RATES.values())


def _defaults(cls: type[Any]) -> dict[str, Any]:
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


# Each default is written once, in the dataclass; the flags and their help read it here.
DEFAULT: Final = _defaults(Config)
RETRY_DEFAULT: Final = _defaults(RetryConfig)


# Derived, so that a new event or dialect shows up here by itself.
EVENT_NAMES = textwrap.fill(
    ", ".join(str(event.__struct_config__.tag) for event in get_args(events.Event)),
    width=78,
    initial_indent="  ",
    subsequent_indent="  ",
)
COMMAND_NAMES = textwrap.fill(
    ", ".join(commands.NAMES), width=78, initial_indent="  ", subsequent_indent="  "
)


def _vendor_dialects() -> tuple[str, ...]:
    return tuple(name for name, d in dialects.DIALECTS.items() if d.default_url)


def _credential_envs() -> str:
    return "\n".join(
        f"  {env}\n{'':19}--protocol {name}: {d.auth_header} (a --header wins)"
        for name, d in dialects.DIALECTS.items()
        for env in d.credential_envs()
    )


def _protocols() -> str:
    return "; ".join(
        f"{name}: {d.summary}" if d.summary else name for name, d in dialects.DIALECTS.items()
    )


def _stop_on_close() -> tuple[str, ...]:
    return tuple(n for n, d in dialects.DIALECTS.items() if not d.reconnect_on_clean_close)


def _takers(flag: str) -> list[tuple[str, str]]:
    """(dialect, what `flag` means to it) for every dialect that takes `flag`."""
    return [
        (name, f.help)
        for name, d in dialects.DIALECTS.items()
        for f in d.accepted_flags()
        if f.name == flag
    ]


def _flag_help(flag: str, tail: str = "") -> str:
    """`twilio: ...; vonage: ...`: a dialect flag's help, from the dialects."""
    text = "; ".join(f"{name}: {meaning}" for name, meaning in _takers(flag))
    return f"{text}{tail}" if text else f"taken by no dialect{tail}"


def _own_flags() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """The dialects' own flags (not in SHARED_FLAGS): name -> (metavar, takers)."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for name, d in dialects.DIALECTS.items():
        for f in d.accepted_flags():
            if f.name not in SHARED_FLAGS:
                found.setdefault(f.name, (f.metavar, []))[1].append((name, f.help))
    return found


def _rate_help() -> str:
    choosers = [(n, d) for n, d in dialects.DIALECTS.items() if d.sample_rates]
    fixed = [n for n, d in dialects.DIALECTS.items() if not d.sample_rates]
    text = "; ".join(
        f"{n}: {one_of(d.sample_rates)} (default: {d.default_sample_rate})" for n, d in choosers
    )
    return f"rate of the audio sent to the server, {text}" + (
        f"; {', '.join(fixed)} send at their own rate" if fixed else ""
    )


def _participant_rates() -> tuple[int, ...]:
    return tuple(
        sorted({r for d in dialects.DIALECTS.values() for r in d.participant_sample_rates})
    )


def _run_epilog() -> str:
    return f"""\
Either --url or --settings names the server; with neither, {URL_ENV} is used.
Give one of --audio-in/--audio-in-fd and one of --audio-out/--audio-out-fd.
The bot's commands come on --control, --control-fd or --control-stdin, each
answered by one command_result event:
{COMMAND_NAMES}.

keeping secrets out of the arguments, which every process that can list ours
may read (/proc/PID/cmdline):
  --header @FILE   reads 'Name: value' lines from FILE (a mounted Secret, say);
                   blank lines and lines starting with # are skipped
  {HEADERS_ENV}  the same lines in an environment variable, sent before the
                   --header ones
  {URL_ENV}      the URL, for one with a token in its query
{_credential_envs()}

events (stdout, one JSON object per line, each with "event" and "ts_ms"):
{EVENT_NAMES}.
  Logs for humans go to stderr. URL query values, credentials and header
  values never appear in either.

exit codes:
  0  stopped cleanly (SIGTERM, SIGINT, SIGHUP, stdin closed, parent died), or
     the server ended the call (a clean close, see --reconnect-on-close)
  1  internal error
  2  usage or configuration error; also after ready, when what the sidecar
     would send can never be sent (the upgrade request, the opening message)
  3  gave up: the last of --max-retries failed
  4  rejected: a 4xx handshake answer or an untrusted certificate (no retry)
"""


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the sidecar: bot sockets <-> websocket",
        description="Stream a bot's audio to a websocket server and play its answers back.",
        epilog=_run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ws = p.add_argument_group("websocket server")
    ws.add_argument(
        "--protocol",
        choices=tuple(dialects.DIALECTS),
        default=dialects.DEFAULT,
        help=f"the dialect spoken on the websocket: {_protocols()} (default: %(default)s)",
    )
    ws.add_argument(
        "--url",
        metavar="URL",
        help=f"ws:// or wss:// URL of your server (or env {URL_ENV}; "
        f"{' and '.join(_vendor_dialects())} default to the vendor's)",
    )
    ws.add_argument(
        "--settings",
        metavar="JSON|FILE",
        help="Attendee's websocket_settings object, inline or from a file (FILE or @FILE: "
        f"a regular file, UTF-8, at most {MAX_FILE_BYTES >> 20} MiB); replaces --url and "
        "--sample-rate",
    )
    ws.add_argument(
        "--bot-id", metavar="ID", help="bot_id sent in every message (default: a random one)"
    )
    ws.add_argument(
        "--sample-rate",
        type=int,
        default=None,
        metavar="HZ",
        help=_rate_help(),
    )
    ws.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'|@FILE",
        help="extra handshake header, e.g. 'Authorization: Bearer ...', or @FILE: one "
        f"such line per line of FILE (repeatable; see also {HEADERS_ENV} below; "
        "values are never printed)",
    )
    ws.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="PEM bundle of a private CA to trust besides the system's; "
        "certificates are always verified",
    )
    ws.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT["max_message_bytes"],
        metavar="N",
        help="largest message accepted from the server; a larger one gets an "
        "error reply (default: %(default)s)",
    )
    ws.add_argument(
        "--error-replies-per-s",
        type=float,
        default=DEFAULT["error_replies_per_s"],
        metavar="N",
        help="rate limit of realtime_audio.error replies; the excess is counted, "
        "not sent (default: %(default)s)",
    )

    dia = p.add_argument_group("dialect settings")
    dia.add_argument(
        "--stream-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=_flag_help("--stream-param", " (repeatable)"),
    )
    dia.add_argument("--call-sid", metavar="SID", help=_flag_help("--call-sid"))
    dia.add_argument("--account-sid", metavar="SID", help=_flag_help("--account-sid"))
    dia.add_argument(
        "--session",
        metavar="JSON|FILE",
        help=_flag_help(
            "--session",
            "; inline or from a file (FILE or @FILE), as --settings (the sidecar sets "
            "the audio formats)",
        ),
    )
    for flag, (metavar, takers) in _own_flags().items():
        dia.add_argument(
            flag,
            metavar=metavar,
            dest=_own_dest(flag),
            help="; ".join(f"{name}: {meaning}" for name, meaning in takers),
        )

    retry = p.add_argument_group("reconnecting")
    retry.add_argument(
        "--max-retries",
        type=int,
        default=RETRY_DEFAULT["max_retries"],
        metavar="N",
        help="retries after a failed or dropped connection before giving up "
        "with exit code 3; 0 = forever (default: %(default)s)",
    )
    retry.add_argument(
        "--retry-delay",
        type=float,
        default=RETRY_DEFAULT["delay"],
        metavar="SECONDS",
        help="wait between retries (default: %(default)s)",
    )
    retry.add_argument(
        "--backoff",
        choices=get_args(Backoff),
        default=RETRY_DEFAULT["backoff"],
        help="fixed: always --retry-delay; exponential: doubling from --retry-delay "
        "up to --max-retry-delay, with full jitter (default: %(default)s)",
    )
    retry.add_argument(
        "--reconnect-on-close",
        choices=get_args(ReconnectOnClose),
        default="auto",
        help="after the server closes cleanly (1000): reconnect, or stop with exit 0 "
        f"(the call ended); auto: stop for {' and '.join(_stop_on_close()) or 'none'}, whose "
        "servers close so at the end of the call, reconnect for the rest "
        "(default: %(default)s)",
    )
    retry.add_argument(
        "--max-retry-delay",
        type=float,
        default=RETRY_DEFAULT["max_delay"],
        metavar="SECONDS",
        help="cap of exponential backoff (default: %(default)s)",
    )
    retry.add_argument(
        "--healthy-after",
        type=float,
        default=RETRY_DEFAULT["healthy_after"],
        metavar="SECONDS",
        help="a connection that lasted this long resets the retry count (default: %(default)s)",
    )
    retry.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT["connect_timeout"],
        metavar="SECONDS",
        help="bound on TCP, TLS and websocket handshakes together (default: %(default)s)",
    )
    retry.add_argument(
        "--ping-interval",
        type=float,
        default=DEFAULT["ping_interval"],
        metavar="SECONDS",
        help="websocket ping period, to detect a dead server (default: %(default)s)",
    )
    retry.add_argument(
        "--ping-timeout",
        type=float,
        default=DEFAULT["ping_timeout"],
        metavar="SECONDS",
        help="no pong within this time: the connection is dropped and replaced "
        "(default: %(default)s)",
    )
    retry.add_argument(
        "--replay-ms",
        type=int,
        default=DEFAULT["replay_ms"],
        metavar="MS",
        help="newest audio kept while disconnected, sent first on reconnect with its "
        "original timestamps; older audio is dropped and counted (default: %(default)s)",
    )

    io = p.add_argument_group("bot sockets")
    io.add_argument(
        "--audio-in",
        metavar="PATH",
        help="Unix socket to listen on for the bot's audio (mode 0600, removed on exit)",
    )
    io.add_argument(
        "--audio-in-fd",
        type=int,
        metavar="N",
        help="instead of --audio-in: an inherited connected socket (one end of a socketpair)",
    )
    io.add_argument(
        "--audio-out",
        metavar="PATH",
        help="Unix socket to listen on for the bot's speaker (mode 0600, removed on exit)",
    )
    io.add_argument(
        "--audio-out-fd",
        type=int,
        metavar="N",
        help="instead of --audio-out: an inherited connected socket",
    )
    io.add_argument(
        "--input-format",
        choices=get_args(InputFormat),
        default=DEFAULT["input_format"],
        help="audiosocket: AudioSocket frames, each with its rate; raw: bare s16le "
        "mono PCM at --input-rate (default: %(default)s)",
    )
    io.add_argument(
        "--input-rate",
        type=int,
        choices=INPUT_RATES,
        default=DEFAULT["input_rate"],
        metavar="HZ",
        help="rate of raw input (default: %(default)s)",
    )
    io.add_argument(
        "--output-rate",
        type=int,
        choices=INPUT_RATES,
        default=DEFAULT["output_rate"],
        metavar="HZ",
        help="rate of the frames written to audio-out (default: %(default)s)",
    )
    io.add_argument(
        "--chunk-ms",
        type=int,
        default=DEFAULT["chunk_ms"],
        metavar="MS",
        help="audio per message sent to the server (default: %(default)s)",
    )
    io.add_argument(
        "--frame-ms",
        type=int,
        default=DEFAULT["frame_ms"],
        metavar="MS",
        help="audio per frame written to audio-out, one frame per period (default: %(default)s)",
    )
    io.add_argument(
        "--jitter-ms",
        type=int,
        default=DEFAULT["jitter_ms"],
        metavar="MS",
        help="bot output buffered before playback starts (default: %(default)s)",
    )
    io.add_argument(
        "--max-playout-ms",
        type=int,
        default=DEFAULT["max_playout_ms"],
        metavar="MS",
        help="cap on queued bot output; the excess is dropped and counted (default: %(default)s)",
    )
    io.add_argument(
        "--pause-threshold",
        type=int,
        metavar="RMS",
        help="pause bot output for 0.8 s whenever a frame of the meeting's audio has this RMS "
        "or more (int16 units; Attendee's pause_threshold): the bot "
        "does not talk over people. Paused audio is held, not dropped (default: off)",
    )
    io.add_argument(
        "--fill-silence",
        choices=("on", "off"),
        default="on" if DEFAULT["fill_silence"] else "off",
        help="while the bot writes nothing for --fill-hold-ms, send silence on the 20 ms "
        "grid, as a phone line does, so agents with server-side VAD hear a turn end "
        "(default: %(default)s)",
    )
    io.add_argument(
        "--fill-hold-ms",
        type=int,
        default=DEFAULT["fill_hold_ms"],
        metavar="MS",
        help="quiet time before the fill starts (default: %(default)s)",
    )
    io.add_argument(
        "--quality",
        choices=get_args(Quality),
        default=DEFAULT["quality"],
        help="libsamplerate converter for both directions (default: %(default)s)",
    )

    pp = p.add_argument_group("per-participant audio")
    pp.add_argument(
        "--per-participant",
        action="store_true",
        help="accept audio-in connections that open with a UUID frame as one "
        "participant's stream (realtime_audio.per_participant)",
    )
    pp.add_argument(
        "--per-participant-url",
        metavar="URL",
        help="separate server for per-participant audio (default: --url)",
    )
    pp.add_argument(
        "--per-participant-sample-rate",
        type=int,
        metavar="HZ",
        help=f"rate of per-participant audio: {one_of(_participant_rates())} "
        f"(default: {DEFAULT['per_participant_sample_rate']})",
    )
    pp.add_argument(
        "--max-participants",
        type=int,
        metavar="N",
        help="participant streams at once; more are refused "
        f"(default: {DEFAULT['max_participants']})",
    )

    ctl = p.add_argument_group("control channel (the bot's commands; see the README)")
    ctl.add_argument(
        "--control",
        metavar="PATH",
        help="Unix socket to listen on for one client (mode 0600, removed on exit): it "
        "writes commands as JSON lines and reads every event line, as stdout has them",
    )
    ctl.add_argument(
        "--control-fd",
        type=int,
        metavar="N",
        help="instead of --control: an inherited connected socket",
    )
    ctl.add_argument(
        "--control-stdin",
        action="store_true",
        help="read commands as JSON lines on stdin too (without it, stdin is never read "
        "but for --exit-on-stdin-eof, which still applies)",
    )
    ctl.add_argument(
        "--tool-timeout",
        type=float,
        default=DEFAULT["tool_timeout"],
        metavar="SECONDS",
        help="a tool call the bot has not answered in this time is answered by the sidecar "
        "with an error output, and a warning says so (default: %(default)s)",
    )

    mem = p.add_argument_group("meetings that outlast agent sessions")
    mem.add_argument(
        "--memory",
        choices=("on", "off"),
        default="on" if DEFAULT["memory"] else "off",
        help="keep the conversation as the meeting heard it and give it to every new "
        "agent session (default: %(default)s)",
    )
    mem.add_argument(
        "--memory-turns",
        type=int,
        default=DEFAULT["memory_turns"],
        metavar="N",
        help="turns kept, the oldest dropped first (default: %(default)s)",
    )
    mem.add_argument(
        "--memory-chars",
        type=int,
        default=DEFAULT["memory_chars"],
        metavar="N",
        help="characters of text kept, the oldest turns dropped first (default: %(default)s)",
    )
    mem.add_argument(
        "--max-session-s",
        type=float,
        default=DEFAULT["max_session_s"],
        metavar="SECONDS",
        help="move to a new agent session at the first quiet moment after this long, "
        "if sooner than the vendor's cap (default: the vendor's cap)",
    )

    life = p.add_argument_group("lifecycle and output")
    life.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes: portable parent-death detection (on Linux "
        "the sidecar also stops when its parent dies)",
    )
    life.add_argument(
        "--stats-interval",
        type=float,
        default=DEFAULT["stats_interval"],
        metavar="SECONDS",
        help="period of the stats event (default: %(default)s)",
    )
    life.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="stderr log level (default: %(default)s)",
    )
    _show_ranges(p)
    p.set_defaults(handler=_run)


def _show_ranges(p: argparse.ArgumentParser) -> None:
    """Each numeric flag's help ends with its RANGES entry."""
    for action in p._actions:
        bounds = next((RANGE_OF[f] for f in action.option_strings if f in RANGE_OF), None)
        if bounds is None or action.help is None:
            continue
        if action.help.endswith(")"):
            action.help = f"{action.help[:-1]}; allowed: {bounds})"
        else:
            action.help += f" (allowed: {bounds})"


def _own_dest(flag: str) -> str:
    return "dialect_" + flag.removeprefix("--").replace("-", "_")


def _own_values(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The dialects' own flags given, as (flag, value), each checked as wire text."""
    found = []
    for flag in _own_flags():
        value = getattr(args, _own_dest(flag), None)
        if value is not None:
            found.append((flag, value))
            wire_text(value, flag)
    return tuple(found)


def build_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    warnings: list[str] = []
    # Sent in the dialects' messages; a byte that is not UTF-8 would end the
    # first connection instead of the start.
    for flag, text in (
        ("--bot-id", args.bot_id),
        ("--call-sid", args.call_sid),
        ("--account-sid", args.account_sid),
    ):
        if text is not None:
            wire_text(text, flag)
    url = args.url or None
    sample_rate = args.sample_rate
    per_participant_url = args.per_participant_url
    per_participant_rate = args.per_participant_sample_rate
    per_participant = args.per_participant
    pause_threshold = args.pause_threshold
    # These only mean something with per-participant audio on; ignoring them
    # silently would hide a forgotten flag until the meeting.
    given = [
        flag
        for flag, value in (
            ("--per-participant-url", per_participant_url),
            ("--per-participant-sample-rate", per_participant_rate),
            ("--max-participants", args.max_participants),
        )
        if value is not None
    ]
    if args.settings is not None:
        if url is not None or sample_rate is not None:
            raise ConfigError("give --settings or --url/--sample-rate, not both")
        settings = parse_settings(args.settings)
        url, sample_rate = settings.audio.url, settings.audio.sample_rate
        if settings.per_participant_video is not None:
            warnings.append(
                "--settings: per_participant_video is ignored: the sidecar carries audio only"
            )
        if settings.audio.pause_threshold is not None:
            if pause_threshold is not None:
                raise ConfigError(
                    "give --settings' audio.pause_threshold or --pause-threshold, not both"
                )
            pause_threshold = settings.audio.pause_threshold
        if settings.per_participant_audio is not None:
            overridden = [f for f in given if f != "--max-participants"]
            if overridden:
                raise ConfigError(
                    f"give --settings' per_participant_audio or {', '.join(overridden)}, not both"
                )
            per_participant = True
            per_participant_url = settings.per_participant_audio.url
            per_participant_rate = settings.per_participant_audio.sample_rate
    if given and not per_participant:
        raise ConfigError(f"without --per-participant these would be ignored: {', '.join(given)}")
    dialect = dialects.DIALECTS[args.protocol]
    url = url or env_url(environ) or dialect.default_url
    if url is None:
        raise ConfigError(f"no server: give --url, --settings or set {URL_ENV}")
    for candidate, flag in ((url, "--url"), (per_participant_url, "--per-participant-url")):
        if candidate is not None:
            warning = check_url(candidate, flag)
            if warning:
                warnings.append(warning)
    # Before anything is built from them (RetryConfig refuses some itself, in
    # other words); validate() holds the whole Config to RANGES again.
    check_ranges({r.flag: getattr(args, r.flag[2:].replace("-", "_")) for r in RANGES})
    try:
        retry = RetryConfig(
            max_retries=args.max_retries,
            delay=args.retry_delay,
            backoff=args.backoff,
            max_delay=args.max_retry_delay,
            healthy_after=args.healthy_after,
        )
    except ValueError as exc:
        raise ConfigError(f"retry settings: {exc}") from None
    # Unset, these take Config's defaults.
    extra: dict[str, Any] = {"bot_id": args.bot_id} if args.bot_id else {}
    if sample_rate is not None:
        extra["sample_rate"] = sample_rate
    if per_participant_rate is not None:
        extra["per_participant_sample_rate"] = per_participant_rate
    if args.max_participants is not None:
        extra["max_participants"] = args.max_participants
    config = Config(
        url=url,
        audio_in=endpoint(args.audio_in, args.audio_in_fd, "audio-in"),
        audio_out=endpoint(args.audio_out, args.audio_out_fd, "audio-out"),
        input_format=args.input_format,
        input_rate=args.input_rate,
        output_rate=args.output_rate,
        chunk_ms=args.chunk_ms,
        frame_ms=args.frame_ms,
        jitter_ms=args.jitter_ms,
        quality=args.quality,
        retry=retry,
        reconnect_on_close=args.reconnect_on_close,
        headers=headers_from(args.header, environ),
        ca_file=args.ca_file,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        connect_timeout=args.connect_timeout,
        replay_ms=args.replay_ms,
        max_playout_ms=args.max_playout_ms,
        max_message_bytes=args.max_message_bytes,
        error_replies_per_s=args.error_replies_per_s,
        stats_interval=args.stats_interval,
        exit_on_stdin_eof=args.exit_on_stdin_eof,
        control=control_endpoint(args.control, args.control_fd),
        control_stdin=args.control_stdin,
        tool_timeout=args.tool_timeout,
        memory=args.memory == "on",
        memory_turns=args.memory_turns,
        memory_chars=args.memory_chars,
        max_session_s=args.max_session_s,
        per_participant=per_participant,
        per_participant_url=per_participant_url,
        pause_threshold=pause_threshold,
        fill_silence=args.fill_silence == "on",
        fill_hold_ms=args.fill_hold_ms,
        protocol=args.protocol,
        stream_params=tuple(parse_stream_param(p) for p in args.stream_param),
        call_sid=args.call_sid,
        account_sid=args.account_sid,
        session=None if args.session is None else parse_session(args.session),
        dialect_flags=_own_values(args),
        warnings=tuple(warnings),
        **extra,
    )
    config = resolve_dialect(config, rate_given=sample_rate is not None, environ=environ)
    if config.audio_in.path is not None and config.audio_in.path == config.audio_out.path:
        raise ConfigError("--audio-in and --audio-out must be different paths")
    return validate(config)


class _RedactingFormatter(logging.Formatter):
    """The events' redactor, for every log line: ours and the libraries'."""

    def __init__(self, fmt: str, redact: Redactor) -> None:
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


log = logging.getLogger("sidecar")


def _run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"audio-sidecar run: error: {exc}", file=sys.stderr)
        return service.EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s",
            Redactor.for_run(secrets(config), os.environ),
        )
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    parent = os.getppid()
    try:
        return trio.run(service.main, config, None, parent)
    except SocketPathError as exc:
        print(f"audio-sidecar run: error: {exc}", file=sys.stderr)
        return service.EXIT_USAGE
    except Exception:
        # Through the logger, so even a traceback is redacted.
        log.exception("internal error")
        return service.EXIT_INTERNAL


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="audio-sidecar",
        description="Realtime audio sidecar for meeting bots.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    from sidecar import tools

    tools.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return service.EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        # trio delivers Ctrl-C to whichever task was running: inside a nursery
        # it arrives grouped, with the cancellations it caused.
        _, rest = group.split((KeyboardInterrupt, trio.Cancelled))
        if rest is None and group.subgroup(KeyboardInterrupt) is not None:
            return service.EXIT_INTERRUPTED
        raise


if __name__ == "__main__":
    sys.exit(main())
