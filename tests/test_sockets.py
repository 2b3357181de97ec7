"""The bot-facing socket files and inherited fds: in-process, then through the
real sidecar process (exit codes, cleanup, a stale file left by a killed one)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import resource
import select
import signal
import socket
import stat
from pathlib import Path

import pytest
import trio
from e2e_bots import open_bot
from e2e_peers import open_speaker, until_connected
from support import (
    SidecarProcess,
    WsServer,
    bot_output,
    open_sidecar,
    sidecar_args,
    tone,
    wait_until,
)

from sidecar import frames, sockets
from sidecar.sockets import (
    ACCEPT_RETRY_S,
    REFUSE_TIMEOUT_S,
    SocketPathError,
    WaitFirstStream,
    adopt_fd,
    open_unix_listener,
    peer_hung_up,
    refuse,
    serve_unix_listener,
    wait_first,
)

EXIT_USAGE = 2


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a crashed process leaves it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


# -- in-process ----------------------------------------------------------------


async def test_listener_is_private_and_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "in.sock"
    old = os.umask(0o022)
    try:
        with trio.fail_after(10):
            async with open_unix_listener(path) as listener:
                st = path.lstat()
                assert stat.S_ISSOCK(st.st_mode)
                assert stat.S_IMODE(st.st_mode) == 0o600
                client = await trio.open_unix_socket(str(path))
                server = await listener.accept()
                await client.send_all(b"hi")
                assert await server.receive_some(10) == b"hi"
                await client.aclose()
                await server.aclose()
        # The process umask is restored.
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)
    assert not path.exists()


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "in.sock"
    stale_socket(path)
    with trio.fail_after(10):
        async with open_unix_listener(path):
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
            client = await trio.open_unix_socket(str(path))
            await client.aclose()


def _regular(path: Path) -> None:
    path.write_text("precious")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("precious")


def _symlink(path: Path) -> None:
    target = path.parent / "target.sock"
    stale_socket(target)
    path.symlink_to(target)


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


def _snapshot(path: Path) -> tuple[int, int, float, str]:
    st = path.lstat()
    link = os.readlink(path) if path.is_symlink() else ""
    return (st.st_mode, st.st_ino, st.st_mtime, link)


OCCUPANTS = {
    "regular file": (_regular, "is not a socket"),
    "directory": (_directory, "is not a socket"),
    "symlink": (_symlink, "symbolic link"),
    "dangling symlink": (_dangling_symlink, "symbolic link"),
}


@pytest.mark.parametrize("kind", sorted(OCCUPANTS))
async def test_other_files_are_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "in.sock"
    make, words = OCCUPANTS[kind]
    make(path)
    before = _snapshot(path)
    with trio.fail_after(10), pytest.raises(SocketPathError, match=words):
        async with open_unix_listener(path):
            pass
    assert _snapshot(path) == before
    if kind == "symlink":
        assert stat.S_ISSOCK((tmp_path / "target.sock").lstat().st_mode)


async def test_a_live_socket_is_in_use(tmp_path: Path) -> None:
    path = tmp_path / "in.sock"
    with trio.fail_after(10):
        async with open_unix_listener(path):
            with pytest.raises(SocketPathError, match="in use"):
                async with open_unix_listener(path):
                    pass
            # The refused second listener did not take the first one's file.
            client = await trio.open_unix_socket(str(path))
            await client.aclose()


async def test_unusable_paths_are_explained(tmp_path: Path) -> None:
    with trio.fail_after(10):
        with pytest.raises(SocketPathError, match="No such file or directory"):
            async with open_unix_listener(tmp_path / "missing" / "in.sock"):
                pass
        long_path = tmp_path / ("x" * 120) / "in.sock"
        long_path.parent.mkdir()
        with pytest.raises(SocketPathError, match="too long") as info:
            async with open_unix_listener(long_path):
                pass
        assert "None" not in str(info.value)


async def test_file_replaced_by_a_successor_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "in.sock"
    with trio.fail_after(10):
        async with open_unix_listener(path):
            # Someone else took over the path while we were running.
            path.unlink()
            stale_socket(path)
            successor = path.lstat().st_ino
        assert path.lstat().st_ino == successor


async def test_adopt_fd_of_a_socketpair(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, trio.fail_after(10):
        stream = adopt_fd(theirs.detach())
        async with stream:
            ours.sendall(b"ping")
            assert await stream.receive_some(10) == b"ping"


def test_adopt_fd_refusals() -> None:
    with pytest.raises(SocketPathError, match="not a usable socket"):
        adopt_fd(_closed_fd())
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(SocketPathError, match="not a usable socket"):
            adopt_fd(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
        with pytest.raises(SocketPathError, match="not a stream socket"):
            adopt_fd(dgram.fileno())
        # The parent's fd is left open.
        os.fstat(dgram.fileno())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        listening.bind("")  # an abstract address: no file to clean up
        listening.listen()
        with pytest.raises(SocketPathError, match="listening socket"):
            adopt_fd(listening.fileno())
        os.fstat(listening.fileno())


def _closed_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


# -- through the sidecar process -------------------------------------------------


async def test_sidecar_socket_files(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            ready = sidecar.named("ready")[0]
            assert ready["audio_in"] == str(tmp_path / "in.sock")
            assert ready["audio_out"] == str(tmp_path / "out.sock")
            for name in ("in.sock", "out.sock"):
                st = (tmp_path / name).lstat()
                assert stat.S_ISSOCK(st.st_mode)
                assert stat.S_IMODE(st.st_mode) == 0o600
            assert await sidecar.stop() == 0
    assert not (tmp_path / "in.sock").exists()
    assert not (tmp_path / "out.sock").exists()


async def test_files_left_by_a_killed_sidecar_are_replaced(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path)
        async with open_sidecar(args) as first:
            assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        assert stat.S_ISSOCK((tmp_path / "in.sock").lstat().st_mode)
        async with open_sidecar(args) as second:
            await second.wait_event("connected")
            bot = await open_bot(tmp_path / "in.sock")
            await bot.send_all(frames.encode_audio(tone(1000, 0.2), 48000))
            await bot.send_all(frames.encode_terminate())
            await wait_until(lambda: len(server.audio()) >= 2 * 3200)
            assert await second.stop() == 0
    assert not (tmp_path / "in.sock").exists()


@pytest.mark.parametrize("kind", ["regular file", "directory", "symlink"])
async def test_sidecar_refuses_other_files(tmp_path: Path, kind: str) -> None:
    make, words = OCCUPANTS[kind]
    path = tmp_path / "out.sock"
    make(path)
    before = _snapshot(path)
    with trio.fail_after(30):
        async with open_sidecar(
            sidecar_args("ws://127.0.0.1:9/audio", tmp_path), wait_ready=False
        ) as s:
            assert await s.wait(15) == EXIT_USAGE
            await trio.sleep(0.1)
    stderr = s.stderr.decode()
    assert str(path) in stderr and words in stderr, stderr
    assert "Traceback" not in stderr
    assert not s.named("ready")
    assert _snapshot(path) == before
    # The in-socket, opened first, was cleaned up on the way out.
    assert not (tmp_path / "in.sock").exists()


async def test_sidecar_refuses_a_path_in_use(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path)
        async with open_sidecar(args) as first:
            async with open_sidecar(args, wait_ready=False) as second:
                assert await second.wait(15) == EXIT_USAGE
                await trio.sleep(0.1)
            assert "in use by another running process" in second.stderr.decode()
            # The first one still owns its files and works.
            bot = await open_bot(tmp_path / "in.sock")
            await bot.send_all(frames.encode_audio(tone(1000, 0.1), 48000))
            await first.stats(lambda e: e["samples_in"] >= 4800)
            assert await first.stop() == 0


async def test_sidecar_refuses_a_bad_fd(tmp_path: Path) -> None:
    fd = _closed_fd()
    args = ["--url", "ws://127.0.0.1:9/audio", "--audio-in-fd", str(fd)]
    args += ["--audio-out", str(tmp_path / "out.sock")]
    with trio.fail_after(30):
        async with open_sidecar(args, wait_ready=False) as sidecar:
            assert await sidecar.wait(15) == EXIT_USAGE
            await trio.sleep(0.1)
    stderr = sidecar.stderr.decode()
    assert f"fd {fd}" in stderr and "Traceback" not in stderr, stderr


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_running_out_of_file_descriptors_is_survived(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            assert sidecar.process is not None
            pid = sidecar.process.pid
            limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            # Room for one more connection, then accept() fails with EMFILE.
            in_use = len(os.listdir(f"/proc/{pid}/fd"))
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 1, limits[1]))
            bots = [await open_bot(tmp_path / "in.sock") for _ in range(3)]
            await wait_until(lambda: b"cannot accept" in sidecar.stderr)
            assert sidecar.process.returncode is None
            for bot in bots:
                await bot.aclose()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
            # The connections that waited are served once there is room, and
            # new ones work.
            bot = await open_bot(tmp_path / "in.sock")
            await bot.send_all(frames.encode_audio(tone(1000, 0.2), 48000))
            await bot.send_all(frames.encode_terminate())
            await wait_until(lambda: len(server.audio()) >= 2 * 3200)
            assert await sidecar.stop() == 0


def _limit_fds(pid: int, spare: int) -> tuple[int, int]:
    """Leave the process `spare` more descriptors; returns the old limits."""
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + spare, limits[1]))
    return limits


async def _until_logged(sidecar: SidecarProcess, text: bytes) -> None:
    def logged() -> bool:
        assert sidecar.process is not None
        assert sidecar.process.returncode is None, sidecar.stderr.decode(errors="replace")
        return text in sidecar.stderr

    await wait_until(logged)


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_out_of_file_descriptors_on_audio_out_is_survived(tmp_path: Path) -> None:
    with trio.fail_after(40), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            assert sidecar.process is not None
            limits = _limit_fds(sidecar.process.pid, 2)
            # Idle bots on audio-in take every descriptor left.
            idle = [await open_bot(tmp_path / "in.sock") for _ in range(3)]
            await _until_logged(sidecar, b"audio-in: cannot accept")
            async with trio.open_nursery() as nursery:
                speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
                await _until_logged(sidecar, b"audio-out: cannot accept")
                for bot in idle:
                    await bot.aclose()
                resource.prlimit(sidecar.process.pid, resource.RLIMIT_NOFILE, limits)
                # The bot that waited in the kernel's queue is served once there is room.
                await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
                server.send(bot_output(tone(1000, 0.2, 16000), 16000))
                await wait_until(lambda: len(speaker.pcm) >= 2 * round(0.2 * 48000))
                nursery.cancel_scope.cancel()
            assert await sidecar.stop() == 0


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_a_bot_accepted_with_the_last_descriptor_on_audio_out_is_served(
    tmp_path: Path,
) -> None:
    with trio.fail_after(40), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            assert sidecar.process is not None
            # The accept takes the last descriptor: nothing is left for the
            # clock's second handle on the socket, which is only a shortcut.
            limits = _limit_fds(sidecar.process.pid, 1)
            async with trio.open_nursery() as nursery:
                speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
                await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
                server.send(bot_output(tone(1000, 0.2, 16000), 16000))
                await wait_until(lambda: len(speaker.pcm) >= 2 * round(0.2 * 48000))
                nursery.cancel_scope.cancel()
            assert sidecar.process.returncode is None
            resource.prlimit(sidecar.process.pid, resource.RLIMIT_NOFILE, limits)
            assert await sidecar.stop() == 0


# -- what both bot sockets share: the accept loop, the refusal, a peer that left ----


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """accept() fails `failures` times (EMFILE), then hands out `streams`."""

    def __init__(self, failures: int, streams: list[trio.abc.Stream]) -> None:
        self.failures = failures
        self.streams = streams

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        if self.streams:
            return self.streams.pop(0)
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_the_accept_loop_retries_failures_and_says_so_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = trio.testing.memory_stream_pair()
    served: list[trio.abc.Stream] = []

    async def handler(stream: trio.abc.Stream) -> None:
        served.append(stream)
        await trio.sleep_forever()

    listener = FlakyListener(5, [first, second])
    with caplog.at_level(logging.INFO, logger="sidecar.sockets"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(serve_unix_listener, listener, handler, name="audio-test")
            )
            await trio.sleep(5 * ACCEPT_RETRY_S + 1)
            nursery.cancel_scope.cancel()
    # Each connection in a task of its own: the first did not hold up the second.
    assert served == [first, second]
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "cannot accept" in m]) == 1
    assert "audio-test: cannot accept a connection: Too many open files" in said[0]
    assert "audio-test: accepting connections again" in said


async def test_a_refusal_is_an_error_frame_naming_the_problem() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        await refuse(ours, frames.ErrorCode.BUSY, "somebody else is here")
        decoder = frames.FrameDecoder()
        decoder.feed(bytes(await theirs.receive_some()))
    assert list(decoder) == [frames.ErrorFrame(frames.ErrorCode.BUSY, "somebody else is here")]


async def test_a_refusal_never_waits_long_for_a_bot_that_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()  # nobody reads the other end
    start = trio.current_time()
    await refuse(ours, frames.ErrorCode.BUSY, "busy")
    assert trio.current_time() - start == pytest.approx(REFUSE_TIMEOUT_S)


async def test_a_refusal_to_a_bot_that_is_gone_is_no_error() -> None:
    ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    with trio.fail_after(5):
        async with trio.SocketStream(ours) as stream:
            await refuse(stream, frames.ErrorCode.BUSY, "busy")
            await stream.aclose()
            await refuse(stream, frames.ErrorCode.BUSY, "busy")


def _peer(how: str) -> tuple[trio.SocketStream, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    if "unread" in how:
        theirs.sendall(b"audio the sidecar has not read yet")
    if how.startswith("closed"):
        theirs.close()
    elif how == "shut its sending side":
        theirs.shutdown(socket.SHUT_WR)
    elif how == "shut its reading side":
        theirs.shutdown(socket.SHUT_RD)
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


HANG_UPS = {
    "open": False,
    "open, unread data": False,
    "shut its reading side": False,
    "closed": True,
    "closed, unread data": True,
    "shut its sending side": True,
}


@pytest.mark.skipif(not hasattr(select, "POLLRDHUP"), reason="Linux's POLLRDHUP")
@pytest.mark.parametrize("how", sorted(HANG_UPS))
def test_a_peer_that_hung_up_is_told_apart(how: str) -> None:
    stream, theirs = _peer(how)
    with theirs, stream.socket:
        assert peer_hung_up(stream) is HANG_UPS[how]
        if "unread" in how:
            # The probe consumed nothing.
            assert os.read(stream.socket.fileno(), 100) == b"audio the sidecar has not read yet"


@pytest.mark.parametrize("how", sorted(HANG_UPS))
def test_without_pollrdhup_only_a_peer_with_nothing_unread_is_seen_to_leave(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sockets, "_POLLRDHUP", 0)
    stream, theirs = _peer(how)
    with theirs, stream.socket:
        assert peer_hung_up(stream) is (HANG_UPS[how] and "unread" not in how)
        # The probe left the descriptor open, and non-blocking for trio.
        assert not os.get_blocking(stream.socket.fileno())


def test_a_stream_that_is_not_a_socket_never_counts_as_hung_up() -> None:
    ours, _ = trio.testing.memory_stream_pair()
    assert peer_hung_up(ours) is False


# -- WaitFirstStream: reads as trio's SocketStream does, waiting before the read --

STREAM_KINDS = ["trio", "wait-first"]


def _pair(kind: str) -> tuple[trio.abc.HalfCloseableStream, socket.socket]:
    """Our end as a stream of `kind`, and the peer's plain blocking socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    return (stream if kind == "trio" else WaitFirstStream(stream)), theirs


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_wait_first_reads_what_arrives_then_the_end(kind: str) -> None:
    stream, theirs = _pair(kind)
    with theirs, trio.fail_after(5):
        async with stream:
            async with trio.open_nursery() as nursery:
                # The reader waits before anything was sent.
                got: list[bytes | bytearray] = []

                async def read() -> None:
                    got.append(await stream.receive_some(100))

                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
                assert got == []
                theirs.sendall(b"first")
            assert got == [b"first"]
            theirs.sendall(b"0123456789")
            assert await stream.receive_some(4) == b"0123"
            assert await stream.receive_some() == b"456789"
            theirs.shutdown(socket.SHUT_WR)
            assert await stream.receive_some(100) == b""
            assert await stream.receive_some(100) == b""
            # Half-closed: the peer still reads what we send (why it was refused).
            await stream.send_all(b"bye")
            assert theirs.recv(100) == b"bye"
            await stream.send_eof()
            assert theirs.recv(100) == b""


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_wait_first_is_a_checkpoint_even_with_data_waiting(kind: str) -> None:
    stream, theirs = _pair(kind)
    with theirs, trio.fail_after(5):
        async with stream:
            theirs.sendall(b"ready")
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.receive_some(100)
            assert scope.cancelled_caught
            # Nothing was consumed by the cancelled call.
            assert await stream.receive_some(100) == b"ready"
            # A successful read is a checkpoint too, as trio's is.
            theirs.sendall(b"more")
            with trio.testing.assert_checkpoints():
                assert await stream.receive_some(100) == b"more"


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_wait_first_closed_under_a_waiting_reader_or_before(kind: str) -> None:
    stream, theirs = _pair(kind)
    with theirs, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def read() -> None:
                try:
                    await stream.receive_some(100)
                except trio.ClosedResourceError as exc:
                    failures.append(exc)

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
        assert len(failures) == 1
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some(100)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_wait_first_reset_by_the_peer_is_a_broken_stream(kind: str) -> None:
    stream, theirs = _pair(kind)
    with trio.fail_after(5):
        async with stream:
            # A peer closing with our data unread resets the connection (Linux, BSD).
            await stream.send_all(b"never read")
            theirs.close()
            with pytest.raises(trio.BrokenResourceError) as caught:
                await stream.receive_some(100)
            assert isinstance(caught.value.__cause__, ConnectionResetError)


@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_wait_first_refuses_a_size_below_one(kind: str) -> None:
    stream, theirs = _pair(kind)
    with theirs, trio.fail_after(5):
        async with stream:
            with pytest.raises(ValueError, match="max_bytes"):
                await stream.receive_some(0)


async def test_wait_first_wraps_socket_streams_only() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    with theirs, trio.fail_after(5):
        async with stream:
            wrapped = wait_first(stream)
            assert isinstance(wrapped, WaitFirstStream)
            assert wrapped.socket is stream.socket
            # The hang-up probe sees through it.
            assert peer_hung_up(wrapped) is False
            theirs.shutdown(socket.SHUT_WR)
            assert peer_hung_up(wrapped) is True
    memory, _ = trio.testing.memory_stream_pair()
    assert wait_first(memory) is memory
