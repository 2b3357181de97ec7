"""Bad input, tried systematically: the frame and message decoders under Hypothesis.

CI runs a short pass; `make fuzz` sets SIDECAR_FUZZ_EXAMPLES=100000 for the
long one. Each test states the invariant that must hold for any input.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sidecar import frames, messages

EXAMPLES = int(os.environ.get("SIDECAR_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _near_valid() -> st.SearchStrategy[Any]:
    """Messages one mutation away from valid: where real bugs live."""
    triggers = st.sampled_from(
        [messages.BOT_OUTPUT, messages.CLEAR, messages.MARK, "realtime_audio.mixed", "", "x"]
    )
    chunk = st.one_of(
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=20),
        st.integers(),
        st.none(),
    )
    rate = st.one_of(st.sampled_from([8000, 16000, 24000, 44100, 0, -1]), st.text(max_size=5))
    data = st.fixed_dictionaries(
        {},
        optional={
            "chunk": chunk,
            "sample_rate": rate,
            "name": st.one_of(st.text(max_size=300), st.integers()),
        },
    )
    return st.fixed_dictionaries({}, optional={"trigger": triggers, "data": data | json_values})


def _frame_decode_all(data: bytes) -> list[frames.Event]:
    decoder = frames.FrameDecoder()
    decoder.feed(data)
    out: list[frames.Event] = list(decoder)
    end = decoder.end_of_stream()
    if end is not None:
        out.append(end)
    return out


@FUZZ
@given(st.binary(max_size=4096))
def test_frame_decoder_total_on_arbitrary_bytes(data: bytes) -> None:
    """Any bytes: frames or one FrameError, never an exception, error last."""
    events = _frame_decode_all(data)
    errors = [i for i, e in enumerate(events) if isinstance(e, frames.FrameError)]
    assert len(errors) <= 1
    if errors:
        assert errors[0] == len(events) - 1
        assert isinstance(events[-1], frames.FrameError)
        assert events[-1].message


@FUZZ
@given(st.binary(max_size=4096), st.data())
def test_frame_decoder_split_invariant(data: bytes, draw: st.DataObject) -> None:
    """However the stream is split into reads, the same events come out."""
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    decoder = frames.FrameDecoder()
    events: list[frames.Event] = []
    last = 0
    for cut in [*cuts, len(data)]:
        decoder.feed(data[last:cut])
        events.extend(decoder)
        last = cut
    end = decoder.end_of_stream()
    if end is not None:
        events.append(end)
    whole = _frame_decode_all(data)
    # An unknown kind is reported as soon as its header is seen, so the error
    # event can differ only in when it appears, never in what precedes it.
    assert events == whole


@FUZZ
@given(st.binary(max_size=2048))
def test_message_decoder_total_on_arbitrary_bytes(data: bytes) -> None:
    result = messages.decode_server_message(data)
    if isinstance(result, messages.MessageError):
        assert result.code in set(messages.ErrorCode)
        assert result.message


@FUZZ
@given(st.one_of(json_values, _near_valid()))
def test_message_decoder_total_on_arbitrary_json(value: Any) -> None:
    """Any JSON: a valid message or a MessageError whose sentence is non-empty."""
    text = json.dumps(value)
    result = messages.decode_server_message(text)
    if isinstance(result, messages.MessageError):
        assert result.message
        assert result.code in set(messages.ErrorCode)
    elif isinstance(result, messages.BotOutput):
        assert result.data.sample_rate in messages.SAMPLE_RATES
        assert len(result.data.chunk) % 2 == 0
    # Decoding our own outbound union must be just as total.
    other = messages.decode_sidecar_message(text)
    assert isinstance(other, messages.MessageError) or other is not None


class FrameStreamMachine(RuleBasedStateMachine):
    """Valid frames and garbage interleaved, fed in arbitrary pieces.

    Model: until the first invalid byte sequence, the decoder yields exactly
    the frames written; after it, exactly one FrameError and then nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.decoder = frames.FrameDecoder()
        self.pending = b""
        self.expected: list[frames.Frame] = []
        self.seen: list[frames.Event] = []
        self.poisoned = False

    @precondition(lambda self: not self.poisoned)
    @rule(
        rate=st.sampled_from(sorted(frames.RATE_KINDS)),
        samples=st.integers(0, 400),
        seed=st.integers(0, 255),
    )
    def write_audio(self, rate: int, samples: int, seed: int) -> None:
        pcm = bytes((seed + i) % 256 for i in range(samples * 2))
        self.pending += frames.encode_audio(pcm, rate)
        self.expected.append(frames.Audio(rate, pcm))

    @precondition(lambda self: not self.poisoned)
    @rule(value=st.uuids())
    def write_uuid(self, value: uuid.UUID) -> None:
        self.pending += frames.encode_uuid(value)
        self.expected.append(frames.StreamId(value))

    @precondition(lambda self: not self.poisoned)
    @rule(kind=st.integers(0x19, 0xFE).filter(lambda k: k not in (0x00, 0x01, 0x03)))
    def write_unknown_kind(self, kind: int) -> None:
        self.pending += bytes([kind, 0, 2, 0, 0])
        self.poisoned = True

    @precondition(lambda self: not self.poisoned)
    @rule(length=st.integers(0, 99).map(lambda n: 2 * n + 1))
    def write_odd_audio(self, length: int) -> None:
        self.pending += bytes([0x16]) + length.to_bytes(2, "big") + bytes(length)
        self.poisoned = True

    @rule(size=st.integers(1, 700))
    def deliver(self, size: int) -> None:
        piece, self.pending = self.pending[:size], self.pending[size:]
        self.decoder.feed(piece)
        self.seen.extend(self.decoder)

    @invariant()
    def frames_match_model(self) -> None:
        good = [e for e in self.seen if not isinstance(e, frames.FrameError)]
        assert good == self.expected[: len(good)]
        errors = [e for e in self.seen if isinstance(e, frames.FrameError)]
        assert len(errors) <= 1
        if errors:
            assert self.poisoned
            assert good == self.expected
            assert isinstance(self.seen[-1], frames.FrameError)

    def teardown(self) -> None:
        self.decoder.feed(self.pending)
        self.seen.extend(self.decoder)
        end = self.decoder.end_of_stream()
        if end is not None:
            self.seen.append(end)
        good = [e for e in self.seen if not isinstance(e, frames.FrameError)]
        assert good == self.expected
        errors = [e for e in self.seen if isinstance(e, frames.FrameError)]
        assert len(errors) == (1 if self.poisoned else 0)


FrameStreamMachine.TestCase.settings = settings(
    max_examples=max(50, EXAMPLES // 10),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_frame_stream_machine = FrameStreamMachine.TestCase
