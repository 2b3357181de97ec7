"""Usage errors of `audio-sidecar` and its tools, as a user meets them: the real
command as a subprocess, exit status 2, a sentence naming what is wrong, and
never a traceback."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import tomllib
from functools import partial
from pathlib import Path

import pytest
import trio
from support import REPO
from test_tools_harness import ToolProcess, tool_env

from sidecar import cli
from sidecar.config import RANGE_OF, RANGES, Config


def refused(result: subprocess.CompletedProcess[bytes], *names: str) -> str:
    """Exit 2, no traceback, and every one of `names` in what was said."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


def python(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, cwd=REPO, env=tool_env(), timeout=60
    )


def test_an_old_python_gets_one_line_and_exit_2() -> None:
    pretend = (
        "import runpy, sys; sys.version_info = (3, 10, 13, 'final', 0); "
        "sys.argv = ['sidecar', '--version']; runpy.run_module('sidecar', run_name='__main__')"
    )
    err = refused(python("-c", pretend), "needs Python 3.11 or newer", "this is Python 3.10")
    assert err.count("\n") == 1


def test_the_guard_parses_on_old_pythons_and_agrees_with_pyproject() -> None:
    main = (REPO / "sidecar" / "__main__.py").read_text()
    init = (REPO / "sidecar" / "__init__.py").read_text()
    for source in (main, init):
        ast.parse(source, feature_version=(3, 4))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = next(
        node.value
        for node in ast.walk(ast.parse(main))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "MINIMUM" for t in node.targets)
    )
    assert requires == ">=" + ".".join(str(ast.literal_eval(n)) for n in minimum.elts)  # type: ignore[attr-defined]


async def test_ctrl_c_in_check_exits_130_quietly() -> None:
    accepted = trio.Event()

    async def mute(stream: trio.SocketStream) -> None:
        accepted.set()
        await trio.sleep_forever()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), mute, 0)
            port = listeners[0].socket.getsockname()[1]
            tool = ToolProcess(
                "check", f"ws://127.0.0.1:{port}/", "--connect-timeout", "60", own_group=True
            )
            await tool.start(nursery)
            await accepted.wait()
            assert await tool.ctrl_c() == 130
            nursery.cancel_scope.cancel()
    assert b"Traceback" not in tool.stderr, tool.stderr.decode()


async def test_ctrl_c_in_demo_exits_130_quietly_and_stops_its_sidecar(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            tool = ToolProcess(
                "demo", "--seconds", "20", "--out", str(tmp_path / "demo.wav"), own_group=True
            )
            await tool.start(nursery)
            await tool.wait_output(b"recording what comes back")
            pid = int(tool.stdout.split(b"sidecar       pid ")[1].split(b":")[0])
            assert await tool.ctrl_c() == 130
    assert b"Traceback" not in tool.stderr, tool.stderr.decode()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_second_serve_on_a_busy_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = python("-m", "sidecar", "serve", "--host", "127.0.0.1", "--port", port)
    refused(result, f"127.0.0.1:{port}", "already in use")


# -- files named on the command line ------------------------------------------------------

# Were any of these accepted, the run would give up at once: nothing listens on port 9.
RUN = (
    "-m", "sidecar", "run", "--audio-in", "/tmp/never-in", "--audio-out", "/tmp/never-out",
    "--max-retries", "1", "--retry-delay", "0.1",
)  # fmt: skip
OPENAI = (*RUN, "--protocol", "openai-realtime", "--url", "ws://127.0.0.1:9/v1/realtime")


def run_cli(
    *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        cwd=REPO,
        env=tool_env() if env is None else env,
        timeout=30,
    )


def test_a_header_file_with_a_byte_order_mark_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "headers.txt"
    path.write_bytes(b"\xef\xbb\xbfAuthorization: Bearer hush\n")
    err = refused(
        run_cli(*RUN, "--url", "ws://127.0.0.1:9/", "--header", f"@{path}"),
        f"--header @{path}",
        "byte order mark",
    )
    assert "hush" not in err


@pytest.mark.parametrize("form", ["@", ""])
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"instructions": "x"}\n{"voice": "\xff"}', "line 2: not UTF-8 text (byte offset 33)"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b'{"a": 1,\n "b": }', "not valid JSON: line 2: JSON is malformed"),
        (b" " * (1 << 20) + b"{}", "larger than the limit of 1048576 bytes"),
    ],
)
def test_unusable_session_files_name_the_file_and_what_is_wrong(
    tmp_path: Path, form: str, content: bytes, expected: str
) -> None:
    path = tmp_path / "session.json"
    path.write_bytes(content)
    refused(run_cli(*OPENAI, "--session", f"{form}{path}"), f"--session {form}{path}", expected)


@pytest.mark.parametrize("flag", ["--session", "--settings", "--header"])
def test_devices_and_fifos_are_refused_without_blocking(tmp_path: Path, flag: str) -> None:
    fifo = tmp_path / "nobody-writes"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        args = (*OPENAI, flag, f"@{path}") if flag != "--settings" else (*RUN, flag, f"@{path}")
        refused(run_cli(*args), f"{flag} @{path}", "not a regular file")


def test_neither_json_nor_a_file_is_said_in_plain_words() -> None:
    err = refused(
        run_cli(*OPENAI, "--session", "sesion.json"),
        "--session: the value is neither JSON",
        "nor the path of an existing file",
    )
    assert "sesion.json" not in err


def test_a_session_or_settings_file_may_be_given_as_a_plain_path(tmp_path: Path) -> None:
    session = tmp_path / "session.json"
    session.write_text('{"instructions": "be brief"}')
    settings = tmp_path / "settings.json"
    settings.write_text('{"audio": {"url": "ws://127.0.0.1:9/a", "sample_rate": 8000}}')
    config = build(*OPENAI[2:], "--session", str(session))
    assert config.session == {"instructions": "be brief"}
    config = build(*RUN[2:], "--settings", str(settings))
    assert (config.url, config.sample_rate) == ("ws://127.0.0.1:9/a", 8000)


def build(*argv: str, environ: dict[str, str] | None = None) -> Config:
    args = cli.parser().parse_args(argv)
    return cli.build_config(args, environ or {})


# -- the HTTP library's rules, at configuration time -----------------------------------------

LOCAL = (*RUN, "--url", "ws://127.0.0.1:9/a")
DEEPGRAM = '{"agent": {"think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}}}}'


@pytest.mark.parametrize("name", ["X(Y", "X/Y", "X\x7fY", "Säure"])
def test_header_names_must_be_http_tokens(name: str) -> None:
    refused(run_cli(*LOCAL, "--header", f"{name}: 1"), "--header", repr(name), "not a header name")


# h11 refuses NUL, CR, LF, VT and FF, and lets other control characters
# through: those are the rules, wherever a header comes from.
@pytest.mark.parametrize("char", ["\x0b", "\x0c"])
def test_control_characters_in_a_header_value_from_any_source(tmp_path: Path, char: str) -> None:
    value = f"Bearer hu{char}sh"
    err = refused(run_cli(*LOCAL, "--header", f"X-Key: {value}"), "--header X-Key", "U+00")
    assert "hu" not in err
    env = dict(tool_env(), SIDECAR_HEADERS=f"X-Ok: 1\nX-Key: {value}")
    err = refused(run_cli(*LOCAL, env=env), "SIDECAR_HEADERS, line 2: X-Key", "control character")
    assert "hu" not in err
    path = tmp_path / "headers"
    path.write_bytes(f"X-Key: {value}\n".encode())
    refused(run_cli(*LOCAL, "--header", f"@{path}"), f"@{path}, line 1: X-Key", "control")


def test_a_nul_in_a_header_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "headers"
    path.write_bytes(b"X-A: 1\nX-Key: hu\x00sh\n")
    err = refused(run_cli(*LOCAL, "--header", f"@{path}"), "line 2: X-Key", "U+0000")
    assert "hu" not in err


@pytest.mark.parametrize(
    ("variable", "protocol"),
    [
        ("OPENAI_API_KEY", "openai-realtime"),
        ("DEEPGRAM_API_KEY", "deepgram-agent"),
        ("TWILIO_AUTH_TOKEN", "twilio"),
    ],
)
@pytest.mark.parametrize("char", ["\r\nX-Injected: 1", "\n", "\x0b", "\x0c"])
def test_credentials_from_the_environment_follow_the_same_rules(
    variable: str, protocol: str, char: str
) -> None:
    env = dict(tool_env(), **{variable: f"sk-secret{char}tail"})
    session = ("--session", DEEPGRAM) if protocol == "deepgram-agent" else ()
    err = refused(run_cli(*LOCAL, "--protocol", protocol, *session, env=env), variable)
    assert "secret" not in err and "tail" not in err


@pytest.mark.parametrize(
    ("url", "suggested"),
    [
        ("ws://127.0.0.1:9/my agent", "ws://127.0.0.1:9/my%20agent"),
        ("ws://127.0.0.1:9/café", "ws://127.0.0.1:9/caf%C3%A9"),
        ("ws://127.0.0.1:9/a?room=b c&token=x", "ws://127.0.0.1:9/a?room=***&token=***"),
    ],
)
def test_a_url_that_no_request_line_can_carry_gets_its_encoded_form(
    url: str, suggested: str
) -> None:
    refused(run_cli(*RUN, "--url", url), "--url", "percent-encode", suggested)


def test_undecodable_bytes_in_dialect_flags_are_refused_at_the_start() -> None:
    twilio = (*LOCAL, "--protocol", "twilio")
    refused(run_cli(*twilio, "--stream-param", b"name=caf\xe9"), "--stream-param", "not UTF-8")
    refused(run_cli(*twilio, "--call-sid", b"CA\xff"), "--call-sid", "not UTF-8")


# -- numeric flags ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--jitter-ms", "-5"),
        ("--stats-interval", "-1"),
        ("--stats-interval", "0"),
        ("--error-replies-per-s", "-1"),
        ("--connect-timeout", "-1"),
        ("--max-message-bytes", "0"),
        ("--max-playout-ms", "-20"),
    ],
)
def test_numbers_that_make_no_sense_are_refused(flag: str, value: str) -> None:
    refused(run_cli(*LOCAL, flag, value), f"{flag} must be between", str(RANGE_OF[flag]).split()[0])


def test_help_shows_every_range() -> None:
    result = run_cli("-m", "sidecar", "run", "--help")
    assert result.returncode == 0
    # Each flag's help, from its name to the next flag's, in one line.
    helps = {
        "--" + block.split()[0]: " ".join(block.split())
        for block in result.stdout.decode().split("\n  --")[1:]
    }
    for bounds in RANGES:
        assert f"allowed: {bounds})" in helps[bounds.flag], helps[bounds.flag]


def test_attendees_per_participant_video_is_accepted_and_ignored_with_a_warning() -> None:
    settings = (
        '{"audio": {"url": "ws://127.0.0.1:9/a"}, '
        '"per_participant_video": {"url": "wss://example.com/video", "fps": 1}}'
    )
    config = build(*RUN[2:], "--settings", settings)
    assert config.url == "ws://127.0.0.1:9/a" and not config.per_participant
    assert any("per_participant_video is ignored" in w for w in config.warnings)


@pytest.mark.parametrize(("flag", "value"), [("--connect-timeout", "-1"), ("--quiet-after", "-1")])
def test_checks_timeouts_are_bounded_too(flag: str, value: str) -> None:
    refused(run_cli("-m", "sidecar", "check", "ws://127.0.0.1:9/", flag, value), flag)
