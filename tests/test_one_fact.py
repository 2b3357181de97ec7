"""Bytes per sample is one fact: `sidecar.pcm.SAMPLE_BYTES`.

Issue #20 found "2 bytes per sample" written out in 22 places. This reads
every module under sidecar/ as a syntax tree and fails on the shapes that
wrote it: `len(pcm) // 2` (or `%`, `/`), `rate * ms // 1000 * 2`,
`bytes(2 * n)`, `x * 2 // 1000`, `n * 500 / rate` (1000 / 2), `& ~1`, a
sample width of 2 passed to audioop or wave, `b"\\0\\0"`, the dtype `"<i2"`,
and a second constant named for it. Other 2s (a half, a pair, an exit
status) have none of these shapes. The few matches that mean something else
are listed in KEPT with the reason, and each must still be there, so the
list cannot outlive the code it excuses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from support import REPO

from sidecar.pcm import SAMPLE_BYTES, SAMPLE_DTYPE

SIDECAR = REPO / "sidecar"

KEPT: dict[tuple[str, str], str] = {
    ("sidecar/frames.py", "len(self._buf) // 2"): (
        "half the decoder's buffer: when to compact it, not a sample"
    ),
    ("sidecar/tools/wavio.py", "'<i2'"): (
        "a 16-bit WAV file's own samples, beside its 8-, 24- and 32-bit branches"
    ),
}
"""Matches that are not the sidecar's bytes per sample: (module, expression) -> why."""

PENDING: dict[str, str] = {}
"""Modules still to convert; each must still match, so the entry goes when they do."""

AUDIOOP_WIDTH = frozenset(
    {"lin2ulaw", "ulaw2lin", "lin2alaw", "alaw2lin", "byteswap", "lin2lin", "rms", "setsampwidth"}
)
"""Calls whose int argument is a sample width in bytes (audioop's, and wave's setter)."""

SAMPLE_NAME_WORDS = (("SAMPLE", "BYTE"), ("SAMPLE", "WIDTH"), ("BYTES", "PER", "SAMPLE"))


def _const(node: ast.AST, value: int) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == value


def _two(node: ast.AST) -> bool:
    return _const(node, 2)


def _is_len(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"


def _per_ms(node: ast.AST) -> bool:
    """`something // 1000`: samples in a span of ms."""
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.FloorDiv)
        and _const(node.right, 1000)
    )


def _name(node: ast.AST) -> str:
    """`x`, `self.x`, `round(...)`: the name it reads or calls, lower case."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr.lower()
    return node.id.lower() if isinstance(node, ast.Name) else ""


def _sample_bytes_literal(node: ast.AST) -> bool:
    """Does this node write the s16le sample's size out as a literal?"""
    if isinstance(node, ast.BinOp):
        left, right, op = node.left, node.right, node.op
        if (
            isinstance(op, ast.FloorDiv | ast.Mod | ast.Div)
            and _two(right)
            and (_is_len(left) or any(word in _name(left) for word in ("bytes", "pcm")))
        ):
            return True  # len(pcm) // 2, len(pcm) % 2, pcm_bytes / 2
        if isinstance(op, ast.Mult) and (
            (_two(right) and ("sample" in _name(left) or _name(left) == "round"))
            or (_two(left) and ("sample" in _name(right) or _name(right) == "round"))
        ):
            return True  # samples * 2, round(seconds * rate) * 2
        if isinstance(op, ast.Mult) and (
            (_two(right) and _per_ms(left)) or (_two(left) and _per_ms(right))
        ):
            return True  # rate * ms // 1000 * 2
        if (
            isinstance(op, ast.FloorDiv | ast.Div)
            and _const(right, 1000)
            and isinstance(left, ast.BinOp)
            and isinstance(left.op, ast.Mult)
            and (_two(left.left) or _two(left.right))
        ):
            return True  # rate * 2 // 1000
        if (
            isinstance(op, ast.Div)
            and isinstance(left, ast.BinOp)
            and isinstance(left.op, ast.Mult)
            and (_const(left.right, 500) or _const(left.left, 500))
        ):
            return True  # n_bytes * 500 / rate: ms, with 1000 / 2 folded in
        if (
            isinstance(op, ast.BitAnd)
            and isinstance(right, ast.UnaryOp)
            and isinstance(right.op, ast.Invert)
            and _const(right.operand, 1)
        ):
            return True  # n & ~1: whole samples
    if isinstance(node, ast.IfExp) and (
        (_const(node.body, 1) and _two(node.orelse)) or (_two(node.body) and _const(node.orelse, 1))
    ):
        return True  # 1 if mulaw else 2: G.711's byte against PCM's two
    if isinstance(node, ast.Call):
        name = _name(node)
        if name in AUDIOOP_WIDTH and any(_two(arg) for arg in node.args):
            return True  # audioop.lin2ulaw(pcm, 2), wave's setsampwidth(2)
        if name == "bytes" and len(node.args) == 1:
            arg = node.args[0]
            if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mult):
                return _two(arg.left) or _two(arg.right)  # bytes(2 * n): n samples of silence
    if isinstance(node, ast.Constant):
        if node.value == "<i2":
            return True
        if isinstance(node.value, bytes) and node.value == b"\0\0":
            return True  # one sample of silence
    if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and _two(node.value):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            upper = name.upper()
            if any(all(word in upper for word in words) for words in SAMPLE_NAME_WORDS):
                return True  # a second copy of the constant
    return False


def scan(source: str) -> list[str]:
    """The expressions in `source` that write bytes per sample as a literal."""
    tree = ast.parse(source)
    return [ast.unparse(node) for node in ast.walk(tree) if _sample_bytes_literal(node)]


def _modules() -> list[Path]:
    return sorted(p for p in SIDECAR.rglob("*.py") if p.name != "pcm.py")


def _findings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _modules():
        hits = scan(path.read_text())
        if hits:
            found[path.relative_to(REPO).as_posix()] = hits
    return found


def test_no_module_writes_bytes_per_sample_as_a_literal() -> None:
    found = _findings()
    wrong = [
        f"{module}: {expr}"
        for module, hits in found.items()
        if module not in PENDING
        for expr in hits
        if (module, expr) not in KEPT
    ]
    assert not wrong, (
        "bytes per s16le sample written as a literal; use sidecar.pcm.SAMPLE_BYTES "
        "(or SAMPLE_DTYPE), or add the line to KEPT with why it is no sample:\n  "
        + "\n  ".join(wrong)
    )


def test_every_exception_still_excuses_something() -> None:
    found = _findings()
    stale = [f"{module}: {expr}" for module, expr in KEPT if expr not in found.get(module, [])]
    stale += [f"{module} (PENDING)" for module in PENDING if module not in found]
    assert not stale, "exceptions with nothing left to excuse; remove them:\n  " + "\n  ".join(
        stale
    )


@pytest.mark.parametrize(
    "line",
    [
        "n = len(pcm) // 2",
        "odd = len(chunk) % 2",
        "seconds = len(piece) / 2 / rate",
        "ms = len(chunk) / 2 * 1000.0 / rate",
        "size = rate * chunk_ms // 1000 * 2",
        "size = 2 * (rate * chunk_ms // 1000)",
        "BYTES_PER_MS = RATE * 2 // 1000",
        "ms = len(pcm) * 500 / rate",
        "stamp = int(start + offset * 500 / rate)",
        "usable = len(buf) & ~1",
        "silence = bytes(2 * behind)",
        "silence = b'\\x00\\x00'",
        "ulaw = audioop.lin2ulaw(native, 2)",
        "native = audioop.byteswap(pcm, 2)",
        "wav.setsampwidth(2)",
        "x = np.frombuffer(pcm, dtype='<i2')",
        "BYTES_PER_SAMPLE = 2",
        "SAMPLE_WIDTH: Final = 2",
        "self.sample_bytes = 2",
        "width = 1 if self.mulaw else 2",
        "room = round(seconds * rate) * 2",
        "size = samples * 2",
        "size = 2 * self.held_samples",
        "n = self.pcm_len // 2",
        "n = nbytes // 2",
    ],
)
def test_the_scan_finds_the_shapes_issue_20_found(line: str) -> None:
    assert scan(line), f"the scan misses {line!r}"


@pytest.mark.parametrize(
    "line",
    [
        "n = len(pcm) // SAMPLE_BYTES",
        "size = rate * chunk_ms // 1000 * SAMPLE_BYTES",
        "late = depth_ms > 2 * chunk_ms",
        "middle = probe[n_in // 2]",
        "rest = sid[2:]",
        "EXIT_USAGE = 2",
        "close_timeout: float = 2.0",
        "cap = 2 * 60 * 60.0",
        "layout = {1: 'mono', 2: 'stereo'}",
        "packed = size + size % 2",
        "x = np.frombuffer(raw, dtype='<i4')",
        "ok = 400 <= status < 500",
        "ms = len(pcm) * (1000.0 / SAMPLE_BYTES) / rate",
        "width = 1 if self.mulaw else SAMPLE_BYTES",
        "limit = round(x, 2)",
        "pairs = count * 2",
    ],
)
def test_the_scan_passes_other_twos(line: str) -> None:
    assert not scan(line), f"the scan flags {line!r}, which is no sample size"


def test_the_dtype_is_the_sample() -> None:
    assert np.dtype(SAMPLE_DTYPE).itemsize == SAMPLE_BYTES
    assert np.dtype(SAMPLE_DTYPE) == np.dtype("<i2")
