"""sidecar.messages: the websocket messages and their codec."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import messages
from sidecar.messages import (
    BOT_OUTPUT,
    CLEAR,
    MARK,
    MIXED,
    PER_PARTICIPANT,
    BotOutput,
    BotOutputData,
    Clear,
    ErrorCode,
    ErrorData,
    Mark,
    MarkData,
    MarkEcho,
    MarkEchoData,
    MessageError,
    MixedAudio,
    MixedData,
    ParticipantAudio,
    ParticipantData,
    decode_server_message,
    decode_sidecar_message,
)

SETTINGS = settings(max_examples=150, deadline=None)

pcm = st.integers(0, 400).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n))
rates = st.sampled_from(messages.SAMPLE_RATES)
bot_ids = st.text(max_size=40)

server_messages: st.SearchStrategy[messages.ServerMessage] = st.one_of(
    st.builds(BotOutput, st.builds(BotOutputData, pcm, rates)),
    st.just(Clear()),
    st.builds(Mark, st.builds(MarkData, st.text(min_size=1, max_size=256))),
)
sidecar_messages: st.SearchStrategy[messages.SidecarMessage] = st.one_of(
    st.builds(
        MixedAudio,
        bot_id=bot_ids,
        data=st.builds(MixedData, pcm, rates, st.integers(0, 1 << 53)),
    ),
    st.builds(
        ParticipantAudio,
        bot_id=bot_ids,
        data=st.builds(
            ParticipantData,
            pcm,
            st.sampled_from(messages.PARTICIPANT_SAMPLE_RATES),
            st.integers(0, 1 << 53),
            st.uuids().map(str),
        ),
    ),
    st.builds(
        MarkEcho,
        bot_id=bot_ids,
        data=st.builds(MarkEchoData, st.text(max_size=256), st.sampled_from(["played", "cleared"])),
    ),
    st.builds(
        messages.Error,
        bot_id=bot_ids,
        data=st.builds(
            ErrorData,
            st.sampled_from(list(ErrorCode)),
            st.text(max_size=200),
            st.none() | st.text(max_size=40),
        ),
    ),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
triggers = st.sampled_from(
    [MIXED, PER_PARTICIPANT, BOT_OUTPUT, CLEAR, MARK, messages.ERROR, "", "x"]
)


def field_values() -> st.SearchStrategy[dict[str, Any]]:
    """Objects shaped almost like messages, with wrong or missing parts."""
    data = st.fixed_dictionaries(
        {},
        optional={
            "chunk": st.sampled_from(["", "AAA=", "AAAA", "AA", "!!", "AQIDBA=="]) | json_values,
            "sample_rate": st.sampled_from([8000, 16000, 24000, 44100, 0, -1]) | json_values,
            "timestamp_ms": st.integers() | json_values,
            "participant_uuid": st.uuids().map(str) | json_values,
            "name": st.text(max_size=300) | json_values,
            "status": st.sampled_from(["played", "cleared", "x"]),
            "code": st.sampled_from([c.value for c in ErrorCode] + ["nope"]),
            "message": st.text(max_size=20),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={"trigger": triggers | json_values, "bot_id": bot_ids | json_values, "data": data},
    )


def assert_well_formed(result: object) -> None:
    if isinstance(result, MessageError):
        assert isinstance(result.code, ErrorCode)
        assert result.message
        assert result.trigger is None or isinstance(result.trigger, str)
    else:
        valid = BotOutput | Clear | Mark | MixedAudio | ParticipantAudio | MarkEcho | messages.Error
        assert isinstance(result, valid)


# -- round trips --------------------------------------------------------------------


@SETTINGS
@given(server_messages)
def test_server_messages_round_trip(message: messages.ServerMessage) -> None:
    data = messages.encode(message)
    assert decode_server_message(data) == message
    assert decode_server_message(data.decode()) == message


@SETTINGS
@given(sidecar_messages)
def test_sidecar_messages_round_trip(message: messages.SidecarMessage) -> None:
    data = messages.encode(message)
    assert decode_sidecar_message(data) == message
    assert decode_sidecar_message(data.decode()) == message


@SETTINGS
@given(sidecar_messages)
def test_sidecar_messages_are_compact_json_objects(message: messages.SidecarMessage) -> None:
    data = messages.encode(message)
    obj = json.loads(data)
    # Compact: no whitespace outside strings (whatever the strings hold).
    assert data == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    assert next(iter(obj)) == "trigger"
    assert isinstance(obj["bot_id"], str)
    if isinstance(message, messages.Error) and message.data.trigger is None:
        assert "trigger" not in obj["data"]


# -- robustness ---------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert_well_formed(decode_server_message(data))
    assert_well_formed(decode_sidecar_message(data))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert_well_formed(decode_server_message(text))
    assert_well_formed(decode_sidecar_message(text))


@SETTINGS
@given(json_values)
def test_arbitrary_json_values_never_raise(value: Any) -> None:
    text = json.dumps(value)
    assert_well_formed(decode_server_message(text))
    assert_well_formed(decode_sidecar_message(text.encode()))


@SETTINGS
@given(field_values())
def test_near_miss_messages_never_raise(value: dict[str, Any]) -> None:
    text = json.dumps(value)
    assert_well_formed(decode_server_message(text))
    assert_well_formed(decode_sidecar_message(text))


@pytest.mark.parametrize(
    "data",
    [
        "\ud800",
        '{"trigger":"\udfff"}',
        b'{"trigger":"\xc3\x28"}',
        b"[" * 100_000,
        b'{"trigger":' + b"[" * 100_000,
    ],
)
def test_hostile_input_is_invalid_json(data: bytes | str) -> None:
    for decode in (decode_server_message, decode_sidecar_message):
        result = decode(data, max_bytes=1 << 21)
        assert isinstance(result, MessageError)
        assert result.code is ErrorCode.INVALID_JSON


def test_deep_unknown_field() -> None:
    data = b'{"trigger":"realtime_audio.clear","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert isinstance(decode_server_message(data, max_bytes=1 << 21), Clear | MessageError)
    result = decode_sidecar_message(data, max_bytes=1 << 21)
    assert isinstance(result, MessageError)
    assert result.code is ErrorCode.UNKNOWN_TRIGGER
    assert result.trigger == CLEAR


# -- errors name what is wrong --------------------------------------------------------


def bot_output(**data: Any) -> str:
    return json.dumps(
        {"trigger": BOT_OUTPUT, "data": {"chunk": "AAA=", "sample_rate": 16000} | data}
    )


ERROR_CASES: list[tuple[str, ErrorCode, str, str | None]] = [
    ("x" * 65, ErrorCode.MESSAGE_TOO_LARGE, "64 bytes", None),
    ("{", ErrorCode.INVALID_JSON, "JSON", None),
    ("[1]", ErrorCode.INVALID_JSON, "object", None),
    ("{}", ErrorCode.MISSING_TRIGGER, "`trigger`", None),
    ('{"trigger":null}', ErrorCode.MISSING_TRIGGER, "`trigger`", None),
    ('{"trigger":"nope"}', ErrorCode.UNKNOWN_TRIGGER, "'nope'", "nope"),
    ('{"trigger":1}', ErrorCode.INVALID_FIELD, "`trigger`", None),
    (bot_output(sample_rate="8000"), ErrorCode.INVALID_FIELD, "`data.sample_rate`", BOT_OUTPUT),
    (bot_output(chunk=None), ErrorCode.INVALID_FIELD, "`data.chunk`", BOT_OUTPUT),
    ('{"trigger":"realtime_audio.mark","data":{}}', ErrorCode.INVALID_FIELD, "`name`", MARK),
    (
        '{"trigger":"realtime_audio.mark","data":{"name":""}}',
        ErrorCode.INVALID_FIELD,
        "`data.name`",
        MARK,
    ),
    (bot_output(chunk="A"), ErrorCode.INVALID_BASE64, "`data.chunk`", BOT_OUTPUT),
    (bot_output(chunk="AAAA"), ErrorCode.ODD_LENGTH, "`data.chunk`", BOT_OUTPUT),
    (bot_output(sample_rate=44100), ErrorCode.UNSUPPORTED_SAMPLE_RATE, "44100", BOT_OUTPUT),
]


@pytest.mark.parametrize(("text", "code", "named", "trigger"), ERROR_CASES)
def test_each_error_code_names_the_field(
    text: str, code: ErrorCode, named: str, trigger: str | None
) -> None:
    limit = 64 if code is ErrorCode.MESSAGE_TOO_LARGE else messages.MAX_MESSAGE_BYTES
    result = decode_server_message(text, max_bytes=limit)
    assert isinstance(result, MessageError)
    assert result.code is code
    assert named in result.message
    assert result.trigger == trigger


def test_every_error_code_is_tested() -> None:
    # too_many_marks: a valid mark the playout had no room for (test_e2e_downlink).
    assert {case[1] for case in ERROR_CASES} == set(ErrorCode) - {ErrorCode.TOO_MANY_MARKS}


def test_unsupported_rate_lists_the_rates_of_that_message() -> None:
    mixed = decode_server_message(bot_output(sample_rate=48000))
    assert isinstance(mixed, MessageError)
    assert "8000, 16000 and 24000" in mixed.message
    participant = decode_sidecar_message(
        json.dumps(
            {
                "trigger": PER_PARTICIPANT,
                "bot_id": "b",
                "data": {
                    "chunk": "",
                    "sample_rate": 24000,
                    "timestamp_ms": 0,
                    "participant_uuid": "x",
                },
            }
        )
    )
    assert isinstance(participant, MessageError)
    assert participant.code is ErrorCode.UNSUPPORTED_SAMPLE_RATE
    assert "8000 and 16000" in participant.message
    assert "24000" not in participant.message.partition(";")[2]


def test_clear_data_optional() -> None:
    for text in (
        '{"trigger":"realtime_audio.clear"}',
        '{"trigger":"realtime_audio.clear","data":{}}',
        '{"trigger":"realtime_audio.clear","data":null}',
    ):
        assert decode_server_message(text) == Clear()


def test_unknown_fields_ignored() -> None:
    text = json.dumps(
        {"trigger": BOT_OUTPUT, "v": 2, "data": {"chunk": "AAA=", "sample_rate": 8000, "seq": 1}}
    )
    assert decode_server_message(text) == BotOutput(BotOutputData(b"\x00\x00", 8000))


# -- size limit ---------------------------------------------------------------------------


def test_size_limit_boundary_bytes_and_text() -> None:
    text = bot_output()
    size = len(text.encode())
    assert isinstance(decode_server_message(text, max_bytes=size), BotOutput)
    assert isinstance(decode_server_message(text.encode(), max_bytes=size), BotOutput)
    for data in (text, text.encode()):
        result = decode_server_message(data, max_bytes=size - 1)
        assert isinstance(result, MessageError)
        assert result.code is ErrorCode.MESSAGE_TOO_LARGE
        assert str(size - 1) in result.message


def test_size_limit_counts_utf8_bytes_of_text() -> None:
    text = json.dumps({"trigger": MARK, "data": {"name": "é" * 20}}, ensure_ascii=False)
    size = len(text.encode())
    assert size > len(text)
    assert isinstance(decode_server_message(text, max_bytes=size), Mark)
    result = decode_server_message(text, max_bytes=size - 1)
    assert isinstance(result, MessageError)
    assert result.code is ErrorCode.MESSAGE_TOO_LARGE


def test_default_limit_is_one_mebibyte() -> None:
    chunk = "A" * (messages.MAX_MESSAGE_BYTES)
    result = decode_server_message(bot_output(chunk=chunk))
    assert isinstance(result, MessageError)
    assert result.code is ErrorCode.MESSAGE_TOO_LARGE
