"""`audio-sidecar`: the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from sidecar import __version__, frames, service
from sidecar.config import (
    Config,
    ConfigError,
    check_url,
    endpoint,
    env_url,
    parse_header,
    parse_settings,
    validate,
)
from sidecar.retry import RetryConfig
from sidecar.sockets import SocketPathError

Handler = Callable[[argparse.Namespace], int]

INPUT_RATES = sorted(frames.AUDIO_RATES.values())


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the sidecar: bot sockets <-> websocket",
        description="Stream a bot's audio to a websocket server and play its answers back.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ws = p.add_argument_group("websocket")
    ws.add_argument("--url", help="ws:// or wss:// URL of your server (env SIDECAR_URL)")
    ws.add_argument(
        "--settings",
        metavar="JSON|@FILE",
        help="Attendee's websocket_settings object, instead of --url/--sample-rate",
    )
    ws.add_argument("--bot-id", help="bot_id sent in every message (default: generated)")
    ws.add_argument(
        "--sample-rate",
        type=int,
        choices=(8000, 16000, 24000),
        default=None,
        help="rate of the audio sent to the server [default: 16000]",
    )
    ws.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra handshake header, e.g. Authorization (repeatable)",
    )
    ws.add_argument("--ca-file", type=Path, help="PEM bundle of a private CA to trust")
    ws.add_argument("--max-retries", type=int, default=30, help="0 = retry forever")
    ws.add_argument("--retry-delay", type=float, default=2.0, help="seconds between retries")
    ws.add_argument("--backoff", choices=("fixed", "exponential"), default="fixed")
    ws.add_argument(
        "--max-retry-delay", type=float, default=30.0, help="cap for exponential backoff (seconds)"
    )
    ws.add_argument(
        "--healthy-after",
        type=float,
        default=10.0,
        help="seconds a connection must last to reset the retry count",
    )
    ws.add_argument("--ping-interval", type=float, default=10.0, help="seconds between pings")
    ws.add_argument("--ping-timeout", type=float, default=5.0, help="seconds to wait for a pong")
    ws.add_argument("--connect-timeout", type=float, default=10.0, help="handshake bound (s)")
    ws.add_argument(
        "--replay-ms",
        type=int,
        default=2000,
        help="newest audio kept while disconnected, sent on reconnect",
    )
    ws.add_argument(
        "--max-message-bytes",
        type=int,
        default=1 << 20,
        help="largest message accepted from the server",
    )
    ws.add_argument(
        "--error-replies-per-s",
        type=float,
        default=5.0,
        help="rate limit of realtime_audio.error replies",
    )

    io = p.add_argument_group("bot sockets")
    io.add_argument("--audio-in", metavar="PATH", help="listen here for the bot's audio")
    io.add_argument("--audio-in-fd", type=int, metavar="N", help="inherited connected socket")
    io.add_argument("--audio-out", metavar="PATH", help="listen here for the bot's speaker")
    io.add_argument("--audio-out-fd", type=int, metavar="N", help="inherited connected socket")
    io.add_argument("--input-format", choices=("audiosocket", "raw"), default="audiosocket")
    io.add_argument(
        "--input-rate", type=int, choices=INPUT_RATES, default=48000, help="rate of raw input"
    )
    io.add_argument(
        "--output-rate",
        type=int,
        choices=INPUT_RATES,
        default=48000,
        help="rate of frames written to audio-out",
    )
    io.add_argument("--chunk-ms", type=int, default=20, help="audio per outgoing message")
    io.add_argument("--frame-ms", type=int, default=20, help="duration of each audio-out frame")
    io.add_argument("--jitter-ms", type=int, default=40, help="playout jitter buffer")
    io.add_argument(
        "--max-playout-ms",
        type=int,
        default=60000,
        help="cap on queued bot output; the excess is dropped",
    )
    io.add_argument(
        "--quality",
        choices=("fastest", "medium", "best"),
        default="medium",
        help="libsamplerate converter",
    )

    pp = p.add_argument_group("per-participant audio")
    pp.add_argument(
        "--per-participant",
        action="store_true",
        help="accept UUID-tagged connections as per-participant streams",
    )
    pp.add_argument("--per-participant-url", help="separate server for per-participant audio")
    pp.add_argument("--per-participant-sample-rate", type=int, choices=(8000, 16000), default=16000)
    pp.add_argument("--max-participants", type=int, default=32)

    life = p.add_argument_group("lifecycle")
    life.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (portable parent-death detection)",
    )
    life.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats")
    life.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=_run)


def build_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    warnings: list[str] = []
    url = args.url or None
    sample_rate = args.sample_rate
    per_participant_url = args.per_participant_url
    per_participant_rate = args.per_participant_sample_rate
    per_participant = args.per_participant
    if args.settings is not None:
        if url is not None or sample_rate is not None:
            raise ConfigError("give --settings or --url/--sample-rate, not both")
        settings = parse_settings(args.settings)
        url, sample_rate = settings.audio.url, settings.audio.sample_rate
        if settings.audio.pause_threshold is not None:
            warnings.append("websocket_settings.audio.pause_threshold is not implemented; ignored")
        if settings.per_participant_audio is not None:
            per_participant = True
            per_participant_url = settings.per_participant_audio.url
            per_participant_rate = settings.per_participant_audio.sample_rate
    url = url or env_url(environ)
    if url is None:
        raise ConfigError("no server: give --url, --settings or set SIDECAR_URL")
    for candidate, flag in ((url, "--url"), (per_participant_url, "--per-participant-url")):
        if candidate is not None:
            warning = check_url(candidate, flag)
            if warning:
                warnings.append(warning)
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
    extra = {"bot_id": args.bot_id} if args.bot_id else {}
    config = Config(
        url=url,
        audio_in=endpoint(args.audio_in, args.audio_in_fd, "audio-in"),
        audio_out=endpoint(args.audio_out, args.audio_out_fd, "audio-out"),
        sample_rate=sample_rate or 16000,
        input_format=args.input_format,
        input_rate=args.input_rate,
        output_rate=args.output_rate,
        chunk_ms=args.chunk_ms,
        frame_ms=args.frame_ms,
        jitter_ms=args.jitter_ms,
        quality=args.quality,
        retry=retry,
        headers=tuple(parse_header(h) for h in args.header),
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
        per_participant=per_participant,
        per_participant_url=per_participant_url,
        per_participant_sample_rate=per_participant_rate,
        max_participants=args.max_participants,
        warnings=tuple(warnings),
        **extra,
    )
    if config.audio_in.path is not None and config.audio_in.path == config.audio_out.path:
        raise ConfigError("--audio-in and --audio-out must be different paths")
    return validate(config)


def _run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"audio-sidecar run: error: {exc}", file=sys.stderr)
        return service.EXIT_USAGE
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    service.die_with_parent()
    try:
        return trio.run(service.main, config)
    except SocketPathError as exc:
        print(f"audio-sidecar run: error: {exc}", file=sys.stderr)
        return service.EXIT_USAGE


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
        return 130


if __name__ == "__main__":
    sys.exit(main())
