"""TLS as the link speaks it: a server-initiated TLS 1.2 renegotiation is refused.

Python's ssl module cannot start a renegotiation, so the server is OpenSSL's
own `openssl s_server` (on every Debian machine, the CI's included), told to
renegotiate with the `R` command: a client that refuses answers with a
no_renegotiation alert, which s_server ends the connection on.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trustme

from sidecar.fastpath import DirectStream
from sidecar.link import tls_context


def test_the_links_context_refuses_renegotiation_and_verifies() -> None:
    context = tls_context(None)
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


async def _lines_until(stream: trio.abc.ReceiveStream, pattern: str, seen: list[str]) -> str:
    buffer = b""
    while True:
        data = await stream.receive_some(4096)
        if not data:
            raise AssertionError(f"openssl s_server ended before {pattern!r}: {seen}")
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            seen.append(text)
            if re.search(pattern, text):
                return text


async def test_a_server_initiated_renegotiation_is_refused(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("this test needs the `openssl` command (Debian: apt-get install openssl)")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    ca_file.write_bytes(ca.cert_pem.bytes())
    seen: list[str] = []
    tls_files = ["-cert", str(chain), "-key", str(key)]
    with trio.fail_after(20):
        server = await trio.lowlevel.open_process(
            [openssl, "s_server", "-tls1_2", "-accept", "127.0.0.1:0", *tls_files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert server.stdin is not None and server.stdout is not None
        failures: list[BaseException] = []
        try:
            accept = await _lines_until(server.stdout, r"^ACCEPT ", seen)
            port = int(accept.rpartition(":")[2])
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            client = await DirectStream.open(tcp, tls_context(ca_file), "localhost")
            await server.stdin.send_all(b"R\n")  # s_server: send a HelloRequest

            async def read() -> None:
                try:
                    while await client.receive_some(4096):
                        pass
                except trio.BrokenResourceError as exc:
                    failures.append(exc)
                both.cancel_scope.cancel()

            async def write() -> None:
                # What the link does: audio goes on, and each write sends the
                # records a read made (the refusal's alert) ahead of it.
                try:
                    while True:
                        await client.send_all(b"audio\n")
                        await trio.sleep(0.02)
                except trio.BrokenResourceError as exc:
                    failures.append(exc)
                    both.cancel_scope.cancel()

            # Refused at once; the bound only ends a client that took part.
            with trio.move_on_after(5):
                async with trio.open_nursery() as both:
                    both.start_soon(read)
                    both.start_soon(write)
        finally:
            server.kill()
            await server.wait()
    assert failures, "the TLS renegotiation the server asked for was neither refused nor failed"
    cause = failures[0].__cause__
    assert isinstance(cause, ssl.SSLError) and "HANDSHAKE_FAILURE" in str(cause), (
        f"the client did not refuse the server's TLS renegotiation: {failures[0]!r}"
    )
