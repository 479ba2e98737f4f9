"""BYTES tensors over KServe v2: length-prefixed raw contents and `bytes_contents`, both ways,
checked against tritonclient's own encoder, and malformed contents refused naming the tensor."""

from __future__ import annotations

import numpy as np
import pytest
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from engine.errors import InvalidArgument
from engine.kserve.bytes_codec import bytes_from_contents, bytes_from_raw, bytes_to_raw
from engine.kserve.tensors import decode_inputs, encode_outputs

TEXT = np.array([["1", "", "héllo"], ["x y", "22", "\u2603"]], dtype=object)


def test_raw_round_trip_agrees_with_tritonclient() -> None:
    wire = serialize_byte_tensor(np.array([[t.encode() for t in row] for row in TEXT], object))
    raw = wire.item()  # one bytes object, as InferInput.set_data_from_numpy sends it
    decoded = bytes_from_raw(raw, [2, 3], "input 'q'")
    assert decoded.tolist() == TEXT.tolist() and decoded.shape == (2, 3)
    assert bytes_to_raw(decoded) == raw
    assert deserialize_bytes_tensor(bytes_to_raw(TEXT)).tolist() == [
        t.encode() for t in TEXT.ravel()
    ]


@pytest.mark.parametrize(
    ("raw", "shape", "message"),
    [
        (b"\x01\x00\x00\x00a", [2], "end after 1 of 2 elements"),
        (b"\x05\x00\x00\x00ab", [1], "claims 5 bytes, only 2 remain"),
        (b"\x01\x00\x00\x00ab", [1], "hold 1 bytes after the 1 elements"),
        (b"\x01\x00\x00\x00\xff", [1], "not UTF-8"),
    ],
)
def test_malformed_raw_bytes(raw: bytes, shape: list[int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"input 'q'.*{message}"):
        bytes_from_raw(raw, shape, "input 'q'")


def test_typed_bytes_contents() -> None:
    assert bytes_from_contents([b"a", b"bc"], [1, 2], "input 'q'").tolist() == [["a", "bc"]]
    with pytest.raises(InvalidArgument, match="needs 3 values in bytes_contents, got 2"):
        bytes_from_contents([b"a", b"bc"], [3], "input 'q'")


def test_decode_and_encode_bytes_tensors() -> None:
    request = pb.ModelInferRequest(model_name="m")
    typed = request.inputs.add(name="s", datatype="BYTES", shape=[2])
    typed.contents.bytes_contents.extend([b"7", b"8"])
    assert decode_inputs(request, {"s": "BYTES"})["s"].tolist() == ["7", "8"]
    tensors, raw = encode_outputs({"s": np.array(["7", "8"], dtype=object)}, raw=False)
    assert not raw and list(tensors[0].contents.bytes_contents) == [b"7", b"8"]
    assert tensors[0].datatype == "BYTES"
    tensors, raw = encode_outputs({"s": np.array(["7", "8"], dtype=object)}, raw=True)
    assert deserialize_bytes_tensor(raw[0]).tolist() == [b"7", b"8"]
