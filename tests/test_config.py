"""Settings: Attendee's object, flags, the environment, redaction. No I/O beyond tmp files."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.config import (
    Config,
    ConfigError,
    Endpoint,
    WebsocketSettings,
    check_url,
    parse_header,
    parse_header_lines,
    parse_settings,
    read_header_file,
    redact_url,
    secrets,
)
from sidecar.dialects.twilio import request_signature
from sidecar.messages import PARTICIPANT_SAMPLE_RATES, SAMPLE_RATES
from sidecar.redact import Redactor
from sidecar.retry import RetryConfig

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
        ("wss://user:pw@h.example:8443/a?flag", "wss://***@h.example:8443/a?***"),
        ("ws://127.0.0.1:9/a?&t=", "ws://127.0.0.1:9/a?t=***"),
        # A bare component is a value without a name: a token, often.
        ("wss://host/agent?BARETOKEN", "wss://host/agent?***"),
        ("wss://host/agent?BARETOKEN&room=7", "wss://host/agent?***&room=***"),
        ("wss://host/agent?room=7&BARE%2FTOKEN#frag", "wss://host/agent?room=***&***"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_secrets_cover_bare_query_components_in_both_spellings() -> None:
    config = Config(
        url="wss://host/agent?BARETOKEN&x=a%2Bb%20c",
        audio_in=Endpoint(fd=3),
        audio_out=Endpoint(fd=4),
        per_participant_url="wss://host/p?OTHER-TOKEN",
    )
    assert set(secrets(config)) == {"BARETOKEN", "a%2Bb%20c", "a+b c", "OTHER-TOKEN"}


def test_a_bare_token_is_hidden_from_the_log_formatter() -> None:
    config = build("--url", "wss://host/agent?BARETOKEN", *SOCKETS)
    formatter = cli._RedactingFormatter("%(message)s", Redactor(secrets(config)))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GET %s", (config.url,), None)
    assert formatter.format(record) == "GET wss://host/agent?***"


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


# -- headers from a file and from the environment ---------------------------------------


def test_header_lines_skip_blanks_and_comments_and_accept_crlf() -> None:
    text = "# the bot's credentials\r\n\r\nAuthorization: Bearer abc\r\n  # indented\n X-Room : 7\n"
    assert parse_header_lines(text, "f") == (("Authorization", "Bearer abc"), ("X-Room", "7"))
    assert parse_header_lines("", "f") == ()


@pytest.mark.parametrize(
    ("text", "where", "shown"),
    [
        ("X-Ok: 1\nBearer hush\n", "line 2:", "'***' must look like 'Name: value'"),
        ("\n\n# c\nBad Name: hush", "line 4:", "'Bad Name: ***' must look like"),
        ("X-Split: hu\rsh\n", "line 1:", "X-Split: the value must not contain a line break"),
    ],
)
def test_header_file_errors_name_file_and_line_not_value(
    tmp_path: Path, text: str, where: str, shown: str
) -> None:
    path = tmp_path / "headers"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_header_file(str(path))
    message = str(info.value)
    assert message.startswith(f"--header @{path}, {where} ")
    assert shown in message
    assert "hush" not in message and "hu\rsh" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the file: No such file or directory"),
        (b"# only a comment\n\n", "the file holds no 'Name: value' line"),
        (b"X-A: 1\nX-B: h\xffush\n", "line 2: not UTF-8 text"),
    ],
)
def test_unusable_header_files(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "headers"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^--header @{path}") as info:
        read_header_file(str(path))
    assert expected in str(info.value)
    assert "ush" not in str(info.value)


def test_header_at_with_no_path() -> None:
    with pytest.raises(ConfigError, match="give the file's path"):
        build("--url", "ws://127.0.0.1/a", *SOCKETS, "--header", "@")


def test_headers_come_from_the_environment_files_and_flags_in_that_order(tmp_path: Path) -> None:
    path = tmp_path / "headers"
    path.write_text("Authorization: Bearer from-a-file\nX-Tenant: acme-corp\n")
    config = build(
        *("--url", "ws://127.0.0.1/a", *SOCKETS),
        *("--header", "X-First: flag-value", "--header", f"@{path}"),
        environ={"SIDECAR_HEADERS": "# set by the pod\nX-Env: env-secret\n"},
    )
    assert config.headers == (
        ("X-Env", "env-secret"),
        ("X-First", "flag-value"),
        ("Authorization", "Bearer from-a-file"),
        ("X-Tenant", "acme-corp"),
    )
    # Wherever a header came from, its value is kept out of the logs.
    assert {"env-secret", "flag-value", "Bearer from-a-file", "acme-corp"} <= set(secrets(config))


def test_environment_header_errors_name_the_variable_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        build(
            *("--url", "ws://127.0.0.1/a", *SOCKETS),
            environ={"SIDECAR_HEADERS": "X-Ok: 1\nAuthorization Bearer hush"},
        )
    assert str(info.value) == "SIDECAR_HEADERS, line 2: '***' must look like 'Name: value'"


def test_an_empty_environment_variable_means_no_headers() -> None:
    config = build("--url", "ws://127.0.0.1/a", *SOCKETS, environ={"SIDECAR_HEADERS": ""})
    assert config.headers == ()


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


def test_unset_flags_take_configs_own_defaults() -> None:
    """Each default is defined once: the flags left out give Config's defaults."""
    config = build("--url", "ws://127.0.0.1/a", *SOCKETS)
    expected = Config(url=config.url, audio_in=config.audio_in, audio_out=config.audio_out)
    assert dataclasses.replace(config, bot_id=expected.bot_id) == expected
    assert config.retry == RetryConfig()


def test_rate_choices_are_the_protocols() -> None:
    for flag, rates in (
        ("--sample-rate", SAMPLE_RATES),
        ("--per-participant-sample-rate", PARTICIPANT_SAMPLE_RATES),
    ):
        extra = ("--per-participant",) if "participant" in flag else ()
        for rate in rates:
            build("--url", "ws://127.0.0.1/a", *SOCKETS, *extra, flag, str(rate))
        with pytest.raises(ConfigError, match=f"{flag} must be .* for --protocol attendee, not"):
            build("--url", "ws://127.0.0.1/a", *SOCKETS, *extra, flag, "44100")


def test_rates_are_each_dialects_own() -> None:
    """Attendee's 24 kHz is Attendee's: Vonage refuses it; a dialect with a rate
    of its own takes no other; one that lets the rate be chosen has a default."""
    url = ("--url", "ws://127.0.0.1/a", *SOCKETS)
    with pytest.raises(ConfigError, match="must be 8000 or 16000 for --protocol vonage, not 24000"):
        build(*url, "--protocol", "vonage", "--sample-rate", "24000")
    assert build(*url, "--protocol", "vonage").sample_rate == 16000
    assert build(*url, "--protocol", "twilio").sample_rate == 8000
    with pytest.raises(ConfigError, match="sends audio at 8000 Hz"):
        build(*url, "--protocol", "twilio", "--sample-rate", "16000")


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


def test_fill_is_on_by_default_and_both_its_flags_reach_the_config() -> None:
    default = build("--url", "ws://127.0.0.1/a", *SOCKETS)
    assert (default.fill_silence, default.fill_hold_ms) == (True, 100)
    given = build(
        "--url", "ws://127.0.0.1/a", *SOCKETS, "--fill-silence", "off", "--fill-hold-ms", "250"
    )
    assert (given.fill_silence, given.fill_hold_ms) == (False, 250)


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
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--max-retries", "-1"), "--max-retries must be"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--ca-file", "/nonexistent.pem"), "--ca-file"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--pause-threshold", "40000"), "and 32767"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--ping-interval", "nan"), "not nan$"),
        (("--url", "ws://127.0.0.1/a", *SOCKETS, "--retry-delay", "inf"), "not inf$"),
        (("--url", "ws://bücher.example:8080/a", *SOCKETS), "IDNA form: xn--bcher-kva.example$"),
        (
            ("--url", "ws://127.0.0.1/a", *SOCKETS, "--fill-hold-ms", "10"),
            "^--fill-hold-ms must be between 20 and 5000, not 10$",
        ),
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
    formatter = cli._RedactingFormatter("%(message)s", Redactor(("token-123", "token-123456")))
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "GET /a?t=%s and %s", ("token-123456", "token-123"), None
    )
    assert formatter.format(record) == "GET /a?t=*** and ***"


# -- dialects --------------------------------------------------------------------------


def dialect(*argv: str, environ: dict[str, str] | None = None) -> Config:
    return build(*SOCKETS, *argv, environ=environ)


def test_the_wire_rate_is_the_dialects() -> None:
    url = ("--url", "ws://127.0.0.1:9/x")
    assert dialect(*url).sample_rate == 16000
    assert dialect(*url, "--protocol", "twilio").sample_rate == 8000
    assert dialect(*url, "--protocol", "vonage", "--sample-rate", "8000").sample_rate == 8000
    session = ("--session", "{}")
    assert dialect(*url, "--protocol", "openai-realtime", *session).sample_rate == 24000


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--protocol", "twilio", "--sample-rate", "16000"), "sends audio at 8000 Hz"),
        (("--protocol", "vonage", "--sample-rate", "24000"), "8000 or 16000"),
        (("--protocol", "twilio", "--per-participant"), "no per-participant streams"),
        (("--session", "{}"), "--session means nothing to --protocol attendee"),
        (("--protocol", "vonage", "--call-sid", "CA1"), "--call-sid means nothing"),
        (("--stream-param", "a=b"), "--stream-param means nothing to --protocol attendee"),
        (("--protocol", "twilio", "--stream-param", "novalue"), "must look like NAME=VALUE"),
        (("--protocol", "openai-realtime", "--session", "[1]"), "must be a JSON object"),
        (("--protocol", "openai-realtime", "--session", "{"), "not valid JSON"),
    ],
)
def test_dialect_flags_are_checked_against_the_protocol(
    argv: tuple[str, ...], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        dialect("--url", "ws://127.0.0.1:9/x", *argv)


def test_a_session_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    path.write_text('{"instructions": "Be brief."}')
    config = dialect(
        "--url", "ws://127.0.0.1:9/x", "--protocol", "openai-realtime", "--session", f"@{path}"
    )
    assert config.session == {"instructions": "Be brief."}


def test_the_vendors_url_and_key_are_defaults_and_a_missing_key_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="set OPENAI_API_KEY"):
        dialect("--protocol", "openai-realtime")
    config = dialect("--protocol", "openai-realtime", environ={"OPENAI_API_KEY": "sk-1234"})
    assert config.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert ("Authorization", "Bearer sk-1234") in config.headers
    settings = '{"agent": {"think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}}}}'
    config = dialect(
        "--protocol",
        "deepgram-agent",
        "--session",
        settings,
        environ={"DEEPGRAM_API_KEY": "dg-1234"},
    )
    assert config.url == "wss://agent.deepgram.com/v1/agent/converse"
    assert ("Authorization", "Token dg-1234") in config.headers
    # A header of the user's wins over the environment.
    config = dialect(
        "--protocol",
        "openai-realtime",
        "--header",
        "Authorization: Bearer mine",
        environ={"OPENAI_API_KEY": "sk-1234"},
    )
    assert [v for k, v in config.headers if k == "Authorization"] == ["Bearer mine"]


def test_twilio_signs_the_url_from_the_environment_unless_given_a_signature() -> None:
    url = "wss://bot.example.com/stream?tenant=7"
    config = dialect("--url", url, "--protocol", "twilio", environ={"TWILIO_AUTH_TOKEN": "tok"})
    (signature,) = [v for k, v in config.headers if k == "X-Twilio-Signature"]
    assert signature == request_signature("tok", url)
    assert signature in secrets(config)  # a credential: never printed
    mine = dialect(
        "--url",
        url,
        "--protocol",
        "twilio",
        "--header",
        "x-twilio-signature: given",
        environ={"TWILIO_AUTH_TOKEN": "tok"},
    )
    assert [v for k, v in mine.headers if k.lower() == "x-twilio-signature"] == ["given"]
    # No token, no signature, and no error: most Twilio-dialect servers check none.
    assert not any(
        k == "X-Twilio-Signature" for k, _ in dialect("--url", url, "--protocol", "twilio").headers
    )
