"""Run the language-neutral vectors in proto/vectors/ against sidecar.frames and .messages."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidecar import frames, messages

VECTORS = Path(__file__).resolve().parent.parent / "proto" / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return cases


def params(name: str, needs: str | None = None) -> Any:
    return [
        pytest.param(case, id=case["name"]) for case in load(name) if needs is None or needs in case
    ]


# -- frames -------------------------------------------------------------------------


def frame_to_json(event: frames.Event) -> dict[str, Any]:
    match event:
        case frames.Audio(rate=rate, pcm=pcm):
            return {"kind": "audio", "rate": rate, "pcm_hex": pcm.hex()}
        case frames.StreamId(uuid=value):
            return {"kind": "uuid", "uuid": str(value)}
        case frames.Dtmf(digit=digit):
            return {"kind": "dtmf", "digit": digit}
        case frames.Terminate():
            return {"kind": "terminate"}
        case frames.ErrorFrame(code=code, text=text):
            return {"kind": "error_frame", "code": code, "text": text}
        case frames.FrameError(code=code):
            return {"kind": "invalid", "code": code.name, "code_byte": int(code), "at_eof": False}
    raise AssertionError(event)


def frame_from_json(obj: dict[str, Any]) -> frames.Frame:
    kind = obj["kind"]
    if kind == "audio":
        return frames.Audio(obj["rate"], bytes.fromhex(obj["pcm_hex"]))
    if kind == "uuid":
        return frames.StreamId(uuid.UUID(obj["uuid"]))
    if kind == "dtmf":
        return frames.Dtmf(obj["digit"])
    if kind == "terminate":
        return frames.Terminate()
    if kind == "error_frame":
        return frames.ErrorFrame(obj["code"], obj["text"])
    raise AssertionError(kind)


def decode_stream(data: bytes, step: int | None) -> list[dict[str, Any]]:
    """Feed `data` whole (step None) or `step` bytes at a time; then end the stream."""
    decoder = frames.FrameDecoder()
    out: list[dict[str, Any]] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        decoder.feed(piece)
        out.extend(frame_to_json(event) for event in decoder)
    error = decoder.end_of_stream()
    if error is not None:
        out.append(frame_to_json(error) | {"at_eof": True})
    assert decoder.end_of_stream() is None
    return out


@pytest.mark.parametrize("case", params("frames.json"))
def test_frame_decode_whole(case: dict[str, Any]) -> None:
    assert decode_stream(bytes.fromhex(case["hex"]), None) == case["expect"]


@pytest.mark.parametrize("case", params("frames.json"))
def test_frame_decode_byte_by_byte(case: dict[str, Any]) -> None:
    assert decode_stream(bytes.fromhex(case["hex"]), 1) == case["expect"]


@pytest.mark.parametrize("case", params("frames.json"))
def test_frame_decode_failed_flag(case: dict[str, Any]) -> None:
    decoder = frames.FrameDecoder()
    decoder.feed(bytes.fromhex(case["hex"]))
    list(decoder)
    invalid = [e for e in case["expect"] if e["kind"] == "invalid"]
    early = bool(invalid) and not invalid[0]["at_eof"]
    assert decoder.failed is early


@pytest.mark.parametrize("case", params("frames_encode.json"))
def test_frame_encode(case: dict[str, Any]) -> None:
    frame = frame_from_json(case["frame"])
    if case.get("reject"):
        with pytest.raises(ValueError):
            frames.encode_frame(frame)
        return
    data = frames.encode_frame(frame)
    assert data.hex() == case["hex"]
    # What we emit decodes back to the same frame.
    assert decode_stream(data, None) == [case["frame"]]


# -- messages ----------------------------------------------------------------------


def message_input(case: dict[str, Any]) -> bytes:
    if "bytes_hex" in case:
        return bytes.fromhex(case["bytes_hex"])
    text: str = case["json"]
    return text.encode("utf-8")


def decode_message(case: dict[str, Any], data: bytes | str) -> Any:
    kwargs = {"max_bytes": case["max_bytes"]} if "max_bytes" in case else {}
    if case["direction"] == "server_to_sidecar":
        return messages.decode_server_message(data, **kwargs)
    assert case["direction"] == "sidecar_to_server"
    return messages.decode_sidecar_message(data, **kwargs)


def check_decoded(case: dict[str, Any], result: Any) -> None:
    expect = case["expect"]
    if "error" in expect:
        assert isinstance(result, messages.MessageError), result
        assert result.code == expect["error"]
        assert result.trigger == expect["trigger"]
        if "field" in expect:
            assert expect["field"] in result.message
        assert result.message
    else:
        assert not isinstance(result, messages.MessageError), result
        assert msgspec.to_builtins(result) == expect


@pytest.mark.parametrize("case", params("messages.json"))
def test_message_decode_bytes(case: dict[str, Any]) -> None:
    check_decoded(case, decode_message(case, message_input(case)))


@pytest.mark.parametrize("case", params("messages.json", needs="json"))
def test_message_decode_text(case: dict[str, Any]) -> None:
    check_decoded(case, decode_message(case, case["json"]))


@pytest.mark.parametrize("case", params("messages_encode.json"))
def test_message_encode(case: dict[str, Any]) -> None:
    union: Any = (
        messages.ServerMessage
        if case["direction"] == "server_to_sidecar"
        else messages.SidecarMessage
    )
    message = msgspec.convert(case["message"], union)
    assert messages.encode(message) == case["json"].encode("utf-8")
    # And it decodes back to the same plain object.
    decoded = decode_message(case, case["json"])
    assert msgspec.to_builtins(decoded) == case["message"]


def test_every_error_code_has_a_vector() -> None:
    seen = {case["expect"].get("error") for case in load("messages.json")}
    # too_many_marks answers a valid mark (test_e2e_downlink), not a message's bytes.
    decoding = set(messages.ErrorCode) - {messages.ErrorCode.TOO_MANY_MARKS}
    assert {code.value for code in decoding} <= seen


def test_every_frame_error_code_from_the_codec_has_a_vector() -> None:
    seen = {
        e["code"] for case in load("frames.json") for e in case["expect"] if e["kind"] == "invalid"
    }
    codec_codes = {"UNKNOWN_KIND", "BAD_LENGTH", "TRUNCATED", "BAD_PAYLOAD"}
    assert codec_codes <= seen
    assert codec_codes <= {code.name for code in frames.ErrorCode}


def test_every_kind_has_a_vector() -> None:
    kinds = {bytes.fromhex(case["hex"])[0] for case in load("frames.json") if case["hex"]}
    assert {int(kind) for kind in frames.Kind} <= kinds


def test_vectors_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python proto/vectors/generate.py"
