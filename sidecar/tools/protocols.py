"""The tools' `--protocol` flag, and what the chosen dialect makes of their options."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

from sidecar import dialects
from sidecar.config import DEFAULT_SAMPLE_RATE, Config, Endpoint, resolve_dialect
from sidecar.dialects.base import WireAudio
from sidecar.messages import MAX_MESSAGE_BYTES


def add_flag(parser: argparse.ArgumentParser, choices: Iterable[str], role: str) -> None:
    parser.add_argument(
        "--protocol",
        choices=tuple(choices),
        default=dialects.DEFAULT,
        help=f"the dialect spoken on the websocket, as its {role} [default: %(default)s]",
    )


def resolve(
    protocol: str,
    url: str,
    *,
    sample_rate: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    session: dict[str, object] | None = None,
    bot_id: str = "bot",
    chunk_ms: int = 20,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Config:
    """The settings a sidecar run with these flags would have, settled by the
    dialect exactly as `run` settles them (its wire rate, its credentials from
    the environment); raises ConfigError with the same words."""
    config = Config(
        url=url,
        audio_in=Endpoint(),
        audio_out=Endpoint(),
        bot_id=bot_id,
        sample_rate=sample_rate or DEFAULT_SAMPLE_RATE,
        chunk_ms=chunk_ms,
        headers=headers,
        max_message_bytes=max_message_bytes,
        protocol=protocol,
        session=session,
    )
    return resolve_dialect(config, rate_given=sample_rate is not None, environ=dict(os.environ))


def describe(wire: WireAudio) -> str:
    """`8000 Hz mu-law`, `16000 Hz`: the audio on the wire, in words."""
    return f"{wire.rate} Hz" + (" mu-law" if wire.encoding == "mulaw" else "")
