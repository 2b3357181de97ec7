"""Security: secrets stay out of output, TLS is verified, cleartext is flagged."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme
from support import SidecarProcess, WsServer, sidecar_args

SECRET_QUERY = "tok3n-SECRET-q"
SECRET_HEADER = "hdr-SECRET-value"


async def test_secrets_never_reach_stdout_or_stderr(tmp_path: Path) -> None:
    with WsServer() as server:
        url = f"{server.url}?token={SECRET_QUERY}&room=1"
        args = sidecar_args(
            url,
            tmp_path,
            "--header",
            f"Authorization: Bearer {SECRET_HEADER}",
            "--log-level",
            "debug",
            "--max-retries",
            "1",
            "--retry-delay",
            "0.1",
        )
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                sidecar = await SidecarProcess(args).start(nursery)
                await sidecar.wait_event("connected")
                # A drop and a failed retry exercise every place a URL is logged.
                server.stop()
                await sidecar.wait_event("retrying")
                assert await sidecar.wait(15) == 3
                nursery.cancel_scope.cancel()
        # The server did receive the real credentials: redaction is output-only.
        assert server.connections[0].request_headers["Authorization"] == f"Bearer {SECRET_HEADER}"
    output = sidecar.stdout + sidecar.stderr
    assert output, "the run produced no output to check"
    assert b"token=***" in sidecar.stdout
    for secret in (SECRET_QUERY, SECRET_HEADER):
        assert secret.encode() not in output


SECRET_BARE = "bare-SECRET-tok"
SECRET_FILE = "file-SECRET-value"
SECRET_ENV = "env-SECRET-value"


async def test_bare_query_tokens_and_headers_from_a_file_or_the_environment_stay_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = tmp_path / "headers"
    headers.write_text(f"# a mounted Secret\nAuthorization: Bearer {SECRET_FILE}\n")
    monkeypatch.setenv("SIDECAR_HEADERS", f"X-Tenant: {SECRET_ENV}\n")
    with WsServer() as server:
        plain_url = server.url
        args = sidecar_args(
            f"{plain_url}?{SECRET_BARE}",
            tmp_path,
            "--header",
            f"@{headers}",
            "--log-level",
            "debug",
        )
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                sidecar = await SidecarProcess(args).start(nursery)
                connected = await sidecar.wait_event("connected")
                assert await sidecar.stop() == 0
                nursery.cancel_scope.cancel()
        # The server got all three: only the output is redacted.
        conn = server.connections[0]
        assert conn.request_headers["Authorization"] == f"Bearer {SECRET_FILE}"
        assert conn.request_headers["X-Tenant"] == SECRET_ENV
        assert conn.ws.request is not None and conn.ws.request.path.endswith(f"?{SECRET_BARE}")
    ready = sidecar.named("ready")[0]
    assert ready["url"] == connected["url"] == f"{plain_url}?***"
    output = sidecar.stdout + sidecar.stderr
    for secret in (SECRET_BARE, SECRET_FILE, SECRET_ENV):
        assert secret.encode() not in output


async def test_header_value_is_redacted_in_usage_errors(tmp_path: Path) -> None:
    args = sidecar_args("ws://127.0.0.1:9/x", tmp_path, "--header", f"Bad Name: {SECRET_HEADER}")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(args).start(nursery, wait_ready=False)
            assert await sidecar.wait(15) == 2
            nursery.cancel_scope.cancel()
    assert b"Name: value" in sidecar.stderr
    assert SECRET_HEADER.encode() not in sidecar.stderr + sidecar.stdout


def _tls_server(tmp_path: Path) -> tuple[WsServer, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return WsServer(ssl_context=context), ca_file


async def test_self_signed_certificate_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    server, _ = _tls_server(tmp_path)
    with server, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path)).start(nursery)
            assert await sidecar.wait(15) == 4
            nursery.cancel_scope.cancel()
        assert not server.connections
    gave_up = sidecar.named("gave_up")
    assert gave_up and "certificate" in gave_up[0]["reason"]
    assert b"--ca-file" in sidecar.stderr


async def test_private_ca_is_accepted_with_ca_file(tmp_path: Path) -> None:
    server, ca_file = _tls_server(tmp_path)
    with server, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            args = sidecar_args(server.url, tmp_path, "--ca-file", str(ca_file))
            sidecar = await SidecarProcess(args).start(nursery)
            await sidecar.wait_event("connected")
            assert await sidecar.stop() == 0
            nursery.cancel_scope.cancel()
    assert server.connections
    assert sidecar.named("warning") == []


async def test_cleartext_to_a_non_loopback_host_warns(tmp_path: Path) -> None:
    with WsServer() as server:
        # An IPv4-mapped IPv6 address is not a loopback address by the letter
        # of the standard library's check, yet it routes to this machine.
        url = f"ws://[::ffff:127.0.0.1]:{server.port}/audio"
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                args = sidecar_args(url, tmp_path, "--max-retries", "1", "--retry-delay", "0.1")
                sidecar = await SidecarProcess(args).start(nursery)
                warning = await sidecar.wait_event("warning")
                sidecar.kill()
                nursery.cancel_scope.cancel()
    assert "cleartext" in warning["message"]


async def test_cleartext_to_loopback_does_not_warn(tmp_path: Path) -> None:
    with WsServer() as server, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path)).start(nursery)
            await sidecar.wait_event("connected")
            assert await sidecar.stop() == 0
            nursery.cancel_scope.cancel()
    assert sidecar.named("warning") == []
