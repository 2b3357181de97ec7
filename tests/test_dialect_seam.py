"""The measure of the seam: a dialect is one class, registered in
`sidecar.dialects.DIALECTS`, and everything else derives from what it says of
itself. A throwaway dialect, registered for the test alone, shows up in
`run --help`, is validated by the configuration as it asks (its rates, its
flags, its credentials) and is one of `check --protocol`'s choices."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from sidecar import cli, dialects
from sidecar.config import Config, ConfigError, dialect_options
from sidecar.dialects.base import (
    MIXED,
    Dialect,
    DialectFlag,
    Encodable,
    Incoming,
    Session,
    Wire,
    WireAudio,
)
from sidecar.redact import Redactor
from sidecar.tools import check

NAME = "throwaway-test"
KEY = "throwaway-secret-key-0123456789"


class ThrowawaySession(Session):
    def __init__(self, room: str) -> None:
        self.room = room

    def opening(self) -> Sequence[Wire]:
        return (f'{{"join":"{self.room}"}}',)

    def encode(self, item: Encodable) -> Sequence[Wire]:
        return ()

    def receive(self, message: Wire) -> Sequence[Incoming]:
        return ()


class Throwaway(Dialect):
    name: ClassVar[str] = NAME
    summary: ClassVar[str] = "a dialect that exists for one test"
    default_url: ClassVar[str | None] = "wss://throwaway.example/v1/talk"
    auth_envs: ClassVar[tuple[str, ...]] = ("THROWAWAY_KEY", "THROWAWAY_TOKEN")
    auth_header: ClassVar[str] = "x-throwaway-key"
    auth_scheme: ClassVar[str] = ""
    flags: ClassVar[tuple[DialectFlag, ...]] = (
        DialectFlag("--session", "its opening object"),
        DialectFlag("--throwaway-room", "the room to join", "ROOM"),
    )
    sample_rates: ClassVar[tuple[int, ...]] = (22050, 44100)
    default_sample_rate: ClassVar[int] = 22050
    server_audio: ClassVar[str] = "speech.chunk"

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(self.options.sample_rate)

    def session(self, history: object = None) -> ThrowawaySession:
        return ThrowawaySession(self.options.extra.get("--throwaway-room", "lobby"))


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dialects.DIALECTS, NAME, Throwaway)


def _help(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.parser().parse_args([*argv, "--help"])
    # argparse wraps at hyphens too (`throwaway-` / `test`): compare without spaces.
    return "".join(out.getvalue().split())


def _says(text: str, phrase: str) -> bool:
    return "".join(phrase.split()) in text


def _build(tmp: Path, *flags: str, environ: dict[str, str] | None = None) -> Config:
    socks = ("--audio-in", str(tmp / "in.sock"), "--audio-out", str(tmp / "out.sock"))
    args = cli.parser().parse_args(["run", "--protocol", NAME, *socks, *flags])
    return cli.build_config(args, environ if environ is not None else {"THROWAWAY_KEY": KEY})


def test_run_help_shows_the_dialect_its_flags_rates_and_credentials() -> None:
    text = _help("run")
    assert _says(text, f"{NAME}: a dialect that exists for one test")
    assert _says(text, f"{NAME}: 22050 or 44100 (default: 22050)")
    assert _says(text, f"--throwaway-room ROOM {NAME}: the room to join")
    assert _says(text, f"{NAME}: its opening object")
    assert _says(text, f"THROWAWAY_TOKEN --protocol {NAME}: x-throwaway-key")


def test_the_configuration_validates_as_the_dialect_says(tmp_path: Path) -> None:
    config = _build(tmp_path, "--throwaway-room", "r1", "--sample-rate", "44100")
    assert config.url == Throwaway.default_url
    assert config.sample_rate == 44100
    assert ("x-throwaway-key", KEY) in config.headers
    assert dict(dialect_options(config).extra) == {"--throwaway-room": "r1"}
    assert dialects.make(NAME, dialect_options(config)).session().opening() == ('{"join":"r1"}',)
    # Its default rate, and its second credential variable.
    config = _build(tmp_path, environ={"THROWAWAY_TOKEN": KEY})
    assert config.sample_rate == 22050 and ("x-throwaway-key", KEY) in config.headers
    assert KEY not in Redactor.for_run((), {"THROWAWAY_TOKEN": KEY})(f"echo {KEY}")
    for flags, why in (
        (("--sample-rate", "16000"), f"must be 22050 or 44100 for --protocol {NAME}, not 16000"),
        (("--stream-param", "a=b"), f"--stream-param means nothing to --protocol {NAME}"),
        ((), "needs credentials: set THROWAWAY_KEY or THROWAWAY_TOKEN"),
    ):
        with pytest.raises(ConfigError, match=why):
            _build(tmp_path, *flags, environ={})
    # Its own flag is a usage error for every other dialect.
    socks = ("--audio-in", str(tmp_path / "i"), "--audio-out", str(tmp_path / "o"))
    args = cli.parser().parse_args(
        ["run", "--url", "ws://127.0.0.1:1/a", *socks, "--throwaway-room", "r1"]
    )
    with pytest.raises(ConfigError, match="--throwaway-room means nothing to --protocol attendee"):
        cli.build_config(args, {})


def test_a_dialect_with_public_endpoints_needs_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Throwaway, "auth_required", False)
    config = _build(tmp_path, environ={})
    assert config.url == Throwaway.default_url and config.headers == ()


def test_check_takes_it_as_a_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THROWAWAY_KEY", KEY)
    assert _says(_help("check"), NAME)
    args = cli.parser().parse_args(["check", "--protocol", NAME])
    options = check.options_from_args(args)
    assert options.protocol == NAME and options.sample_rate == 22050
    assert ("x-throwaway-key", KEY) in options.headers
    assert options.dialect().server_audio == "speech.chunk"
