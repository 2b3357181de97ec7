"""Telephony audio: the G.711 mu-law codec and fixed-duration packets.

Phone networks carry audio as G.711 in packets of a fixed duration (the
"ptime", 20 ms nearly everywhere), and the websocket media APIs built on them
keep both habits: Twilio Media Streams sends exactly 160 mu-law bytes per
message, Vonage exactly 20 ms of 16-bit PCM per binary frame.

The codec is `audioop`'s: the standard library's up to Python 3.12, the
`audioop-lts` package (the same module, maintained) from 3.13 on. A
maintained, widely used codec beats a hand-written table nobody checks.
"""

from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    # The standard library's audioop warns that it goes away in 3.13, where
    # audioop-lts provides the same module without the warning.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from sidecar.pcm import SAMPLE_BYTES

ULAW_SILENCE = b"\xff"
"""The mu-law byte of a zero sample (G.711 inverts the bits of the code)."""

_BIG_ENDIAN = sys.byteorder == "big"


def ulaw_from_pcm16(pcm: bytes) -> bytes:
    """s16le mono -> G.711 mu-law, one byte per sample."""
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"16-bit PCM needs an even byte count, got {len(pcm)}")
    # audioop reads samples in the machine's byte order; ours are little-endian.
    native = audioop.byteswap(pcm, SAMPLE_BYTES) if _BIG_ENDIAN else pcm
    return audioop.lin2ulaw(native, SAMPLE_BYTES)


def pcm16_from_ulaw(data: bytes) -> bytes:
    """G.711 mu-law -> s16le mono, two bytes per input byte."""
    native = audioop.ulaw2lin(data, SAMPLE_BYTES)
    return audioop.byteswap(native, SAMPLE_BYTES) if _BIG_ENDIAN else native


class Packetizer:
    """Cuts a byte stream into packets of exactly `size` bytes.

    What does not fill a packet waits for the next `feed`, so the stream is
    never re-timed: no sample is dropped, duplicated or padded in the middle.
    Only `flush` pads, at the very end, and `lead` at the very start.

    `lead` (one sample's bytes of silence) pads the *first* feed at its front
    to a whole number of packets. A stream's first chunk comes short by the
    resampler's hold-back (115 of 160 samples at 8 kHz, 274 of 320 at 16 kHz)
    and every later chunk is whole; without the lead, each packet would lack
    those samples and wait for the next chunk, 20 ms later. With it, every
    chunk goes out the moment it comes, and the stream's media time starts
    less than one packet earlier than its first real sample.
    """

    def __init__(self, size: int, lead: bytes | None = None) -> None:
        if size <= 0:
            raise ValueError(f"packet size must be positive, got {size}")
        if lead is not None and (not lead or size % len(lead)):
            raise ValueError(f"a lead of {lead!r} cannot fill packets of {size} bytes")
        self.size = size
        self._lead = lead
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to complete a packet (always < size)."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[bytes]:
        if len(data) == self.size and self._lead is None and not self._pending:
            # The usual chunk after the first: already one packet, passed on uncut.
            return [data]
        if self._lead is not None and data:  # an empty feed is no first chunk
            short = -len(data) % self.size
            if short % len(self._lead):
                raise ValueError(f"{len(data)} bytes is not a whole number of {self._lead!r}")
            self._pending += self._lead * (short // len(self._lead))
            self._lead = None
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self.size
        packets = [bytes(self._pending[i : i + self.size]) for i in range(0, whole, self.size)]
        del self._pending[:whole]
        return packets

    def flush(self, pad: bytes) -> bytes | None:
        """The held-back tail, padded to a whole packet with `pad` (one sample's
        bytes of silence); None when nothing is held back."""
        if not self._pending:
            return None
        missing = self.size - len(self._pending)
        if missing % len(pad):
            raise ValueError(f"{missing} bytes of padding is not a whole number of {pad!r}")
        packet = bytes(self._pending) + pad * (missing // len(pad))
        self._pending.clear()
        return packet
