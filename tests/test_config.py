"""Settings: Attendee's object, flags, the environment, redaction. No I/O beyond tmp files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.config import (
    Config,
    ConfigError,
    WebsocketSettings,
    check_url,
    parse_header,
    parse_settings,
    redact_url,
    secrets,
)

# -- Attendee's websocket_settings ------------------------------------------------------


def test_settings_verbatim() -> None:
    settings = parse_settings(
        '{"audio": {"url": "wss://example.com/a", "sample_rate": 24000},'
        ' "per_participant_audio": {"url": "wss://example.com/p", "sample_rate": 8000}}'
    )
    assert isinstance(settings, WebsocketSettings)
    assert settings.audio.url == "wss://example.com/a"
    assert settings.audio.sample_rate == 24000
    assert settings.per_participant_audio is not None
    assert settings.per_participant_audio.sample_rate == 8000


def test_settings_default_sample_rate_is_attendees() -> None:
    assert parse_settings('{"audio": {"url": "ws://localhost/a"}}').audio.sample_rate == 16000


def test_settings_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"audio": {"url": "ws://localhost/a", "sample_rate": 8000}}')
    assert parse_settings(f"@{path}").audio.sample_rate == 8000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"audio": {"url": "ws://x/a"', "--settings is not valid JSON"),
        ("[]", "`(top level)`: Expected `object`"),
        ("{}", "`audio`: is required"),
        ('{"audio": {"sample_rate": 16000}}', "`audio.url`: is required"),
        ('{"audio": {"url": "ws://x/a", "sample_rate": 44100}}', "`audio.sample_rate`: must be"),
        ('{"audio": {"url": "ws://x/a", "sample_rate": "16000"}}', "`audio.sample_rate`: Expected"),
        ('{"audio": {"url": "ws://x/a", "rate": 1}}', "`audio.rate`: is not a known field"),
        ('{"audio": {"url": "ws://x/a"}, "video": {}}', "`video`: is not a known field"),
        ('{"audio": {"url": "https://x/a"}}', "`audio.url`: must be a ws:// or wss:// URL"),
        ('{"audio": {"url": ""}}', "`audio.url`: must be a ws:// or wss:// URL"),
        (
            '{"audio": {"url": "ws://x/a"}, "per_participant_audio": '
            '{"url": "ws://x/p", "sample_rate": 24000}}',
            "`per_participant_audio.sample_rate`: must be 8000 or 16000, not 24000",
        ),
        ('{"audio": {"url": "ws://x/a", "pause_threshold": -1}}', "`audio.pause_threshold`"),
    ],
)
def test_settings_errors_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text)
    assert expected in str(info.value)
    assert str(info.value).startswith("--settings")


def test_settings_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_settings(f"@{tmp_path / 'missing.json'}")


# -- URLs and headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("wss://h.example/a", "wss://h.example/a"),
        ("wss://h.example/a?token=abc&room=7", "wss://h.example/a?token=***&room=***"),
        ("wss://user:pw@h.example:8443/a?flag", "wss://***@h.example:8443/a?flag"),
        ("ws://127.0.0.1:9/a?&t=", "ws://127.0.0.1:9/a?t=***"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize("url", ["ws://127.0.0.1:1/a", "ws://localhost/a", "ws://[::1]:9/a"])
def test_cleartext_to_loopback_is_fine(url: str) -> None:
    assert check_url(url, "--url") is None


@pytest.mark.parametrize("url", ["wss://example.com/a", "wss://10.0.0.1/a"])
def test_tls_anywhere_is_fine(url: str) -> None:
    assert check_url(url, "--url") is None


@pytest.mark.parametrize("url", ["ws://example.com/a?token=hush", "ws://10.0.0.1:80/a"])
def test_cleartext_off_host_warns(url: str) -> None:
    warning = check_url(url, "--url")
    assert warning is not None
    assert "cleartext" in warning and "--url" in warning
    assert "hush" not in warning


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/a?token=hush", "must start with ws://"),
        ("ws:///a", "has no host"),
        ("ws://example.com:99999/a", "invalid port"),
    ],
)
def test_bad_urls(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        check_url(url, "--url")
    assert "hush" not in str(info.value)


def test_parse_header() -> None:
    assert parse_header("Authorization:  Bearer abc ") == ("Authorization", "Bearer abc")
    assert parse_header("X-Empty:") == ("X-Empty", "")
    assert parse_header("X-Colons: a:b:c") == ("X-Colons", "a:b:c")


@pytest.mark.parametrize(
    "text", ["Authorization Bearer hush", ": hush", "Bad Name: hush", "X-Split: hu\r\nsh"]
)
def test_bad_headers_are_refused_without_echoing_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="--header") as info:
        parse_header(text)
    assert "hush" not in str(info.value) and "hu\r\nsh" not in str(info.value)


# -- flags -> Config ------------------------------------------------------------------------


def build(*argv: str, environ: dict[str, str] | None = None) -> Config:
    args = cli.parser().parse_args(["run", *argv])
    return cli.build_config(args, environ or {})


SOCKETS = ("--audio-in", "/tmp/x-in.sock", "--audio-out", "/tmp/x-out.sock")


def test_flags_make_a_config() -> None:
    config = build(
        "--url",
        "wss://example.com/a?key=secret-value",
        *SOCKETS,
        "--sample-rate",
        "8000",
        "--header",
        "Authorization: Bearer token-123",
    )
    assert config.sample_rate == 8000
    assert config.headers == (("Authorization", "Bearer token-123"),)
    assert config.bot_id.startswith("bot_")
    assert config.warnings == ()
    assert set(secrets(config)) == {"Bearer token-123", "secret-value"}


def test_url_comes_from_the_environment() -> None:
    config = build(*SOCKETS, environ={"SIDECAR_URL": "ws://127.0.0.1:1/a"})
    assert config.url == "ws://127.0.0.1:1/a"


def test_flag_beats_the_environment() -> None:
    config = build("--url", "ws://127.0.0.1:2/a", *SOCKETS, environ={"SIDECAR_URL": "ws://x/a"})
    assert config.url == "ws://127.0.0.1:2/a"


def test_settings_set_url_rate_and_pause_threshold() -> None:
    config = build(
        "--settings",
        '{"audio": {"url": "ws://127.0.0.1:1/a", "sample_rate": 24000, "pause_threshold": 10}}',
        *SOCKETS,
    )
    assert (config.url, config.sample_rate) == ("ws://127.0.0.1:1/a", 24000)
    assert config.pause_threshold == 10
    assert config.warnings == ()
    assert build("--url", "ws://127.0.0.1/a", *SOCKETS).pause_threshold is None
    flag = build("--url", "ws://127.0.0.1/a", *SOCKETS, "--pause-threshold", "1800")
    assert flag.pause_threshold == 1800


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--audio-in-fd", "3"), "one of --audio-in"),
        (("--url", "ws://127.0.0.1/a", "--audio-in", "/tmp/a"), "exactly one of --audio-out"),
        (SOCKETS, "no server"),
        (
            ("--url", "ws://127.0.0.1/a", "--settings", '{"audio": {"url": "ws://x/a"}}', *SOCKETS),
            "not both",
        ),
        (
            ("--url", "ws://127.0.0.1/a", "--audio-in", "/tmp/s", "--audio-out", "/tmp/s"),
            "different paths",
        ),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--audio-out-fd", "-1"), "exactly one"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--frame-ms", "5"), "--frame-ms"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--max-playout-ms", "10"), "--max-playout-ms"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--ping-timeout", "0"), "--ping-timeout"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--max-retries", "-1"), "retry settings"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--ca-file", "/nonexistent.pem"), "--ca-file"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--pause-threshold", "40000"), "0-32767"),
        (
            (
                *SOCKETS,
                *("--settings", '{"audio": {"url": "ws://x/a", "pause_threshold": 5}}'),
                *("--pause-threshold", "7"),
            ),
            "^give --settings' audio.pause_threshold or --pause-threshold, not both$",
        ),
        (
            ("--url", "ws://127.0.0.1/a", *SOCKETS, "--per-participant-url", "ws://127.0.0.1/p"),
            "^without --per-participant these would be ignored: --per-participant-url$",
        ),
        (
            (
                *SOCKETS,
                "--settings",
                '{"audio": {"url": "ws://x/a"}, "per_participant_audio": {"url": "ws://x/p"}}',
                "--per-participant-sample-rate",
                "8000",
            ),
            "^give --settings' per_participant_audio or --per-participant-sample-rate, not both$",
        ),
        (
            (
                *("--url", "ws://127.0.0.1/a", *SOCKETS),
                *("--per-participant-sample-rate", "8000", "--max-participants", "4"),
            ),
            "ignored: --per-participant-sample-rate, --max-participants$",
        ),
    ],
)
def test_usage_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(*argv)


def test_per_participant_flags() -> None:
    config = build("--url", "ws://127.0.0.1/a", *SOCKETS, "--per-participant")
    assert (config.per_participant_sample_rate, config.max_participants) == (16000, 32)
    config = build(
        *("--url", "ws://127.0.0.1/a", *SOCKETS, "--per-participant"),
        *("--per-participant-sample-rate", "8000", "--max-participants", "4"),
        *("--per-participant-url", "ws://127.0.0.1/p"),
    )
    assert (config.per_participant_sample_rate, config.max_participants) == (8000, 4)
    assert config.per_participant_url == "ws://127.0.0.1/p"
    # Attendee's settings turn it on; the limit is ours to set beside them.
    config = build(
        *SOCKETS,
        "--settings",
        '{"audio": {"url": "ws://127.0.0.1/a"}, "per_participant_audio": {"url": "ws://127.0.0.1/p"}}',
        "--max-participants",
        "4",
    )
    assert (config.per_participant, config.max_participants) == (True, 4)


def test_usage_error_exit_code_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--settings", '{"audio": {"url": "ws://x/a", "rate": 1}}', *SOCKETS])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("audio-sidecar run: error: --settings: `audio.rate`")


def test_log_formatter_redacts_secrets() -> None:
    formatter = cli._RedactingFormatter("%(message)s", ("token-123", "token-123456"))
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "GET /a?t=%s and %s", ("token-123456", "token-123"), None
    )
    assert formatter.format(record) == "GET /a?t=*** and ***"
