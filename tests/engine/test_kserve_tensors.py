"""KServe v2 tensor conversions without a server: datatypes, raw and typed decoding, output
selection and encoding, and the InvalidArgument each malformed tensor earns."""

from __future__ import annotations

import numpy as np
import pytest
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import InvalidArgument
from engine.kserve.datatypes import (
    CONTENTS_FIELDS,
    DTYPES,
    config_datatype,
    datatype_of,
    dtype_of,
    onnx_datatype,
)
from engine.kserve.tensors import (
    decode_inputs,
    encode_outputs,
    from_contents,
    from_raw,
    select_outputs,
    to_graph_rank,
    to_protocol_rank,
)

Tensor = pb.ModelInferRequest.InferInputTensor
RNG = np.random.default_rng(3)


def _sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = DTYPES[datatype]
    if dtype.kind == "b":
        return RNG.random(shape) > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_datatype_names_round_trip(datatype: str) -> None:
    dtype = dtype_of(datatype, "x")
    assert datatype_of(np.zeros(2, dtype=dtype)) == datatype
    # Big-endian arrays still map to the same protocol datatype.
    assert datatype_of(np.zeros(2, dtype=dtype.newbyteorder(">"))) == datatype
    assert mc.DataType.Name(config_datatype(datatype)) == f"TYPE_{datatype}"


def test_onnx_types_map_to_protocol_names() -> None:
    assert onnx_datatype("tensor(float)") == "FP32"
    assert onnx_datatype("tensor(int64)") == "INT64"
    assert onnx_datatype("tensor(double)") == "FP64"
    assert onnx_datatype("tensor(string)") == "BYTES"
    with pytest.raises(ValueError, match="tensor\\(bfloat16\\)"):
        onnx_datatype("tensor(bfloat16)")


def test_unknown_datatype_is_invalid_argument_naming_the_tensor() -> None:
    with pytest.raises(InvalidArgument, match=r"input 'q'.*'BYTES'"):
        dtype_of("BYTES", "input 'q'")
    with pytest.raises(ValueError, match="complex64"):
        datatype_of(np.zeros(1, np.complex64))


@pytest.mark.parametrize("datatype", list(DTYPES))
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (2, 1, 3)])
def test_raw_round_trip(datatype: str, shape: tuple[int, ...]) -> None:
    array = _sample(datatype, shape)
    tensors, raw = encode_outputs({"y": array}, raw=True)
    assert [t.name for t in tensors] == ["y"]
    assert tensors[0].datatype == datatype and list(tensors[0].shape) == list(shape)
    decoded = from_raw(raw[0], datatype, tensors[0].shape, "output 'y'")
    assert decoded.dtype == array.dtype and decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("datatype", sorted(CONTENTS_FIELDS))
def test_typed_round_trip(datatype: str) -> None:
    array = _sample(datatype, (3, 4))
    tensors, raw = encode_outputs({"y": array}, raw=False)
    assert raw == []
    tensor = Tensor(name="y", datatype=datatype, shape=[3, 4], contents=tensors[0].contents)
    decoded = from_contents(tensor, "input 'y'")
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_raw_decoding_is_little_endian_and_shares_the_bytes() -> None:
    data = np.array([1, 256], dtype="<i4").tobytes()
    decoded = from_raw(data, "INT32", [2], "input 'x'")
    assert decoded.tolist() == [1, 256]
    assert not decoded.flags.writeable  # a view of the message's bytes, not a copy


def test_big_endian_outputs_are_sent_little_endian() -> None:
    array = np.array([1.5, -2.0], dtype=">f4")
    _, raw = encode_outputs({"y": array}, raw=True)
    assert raw == [np.array([1.5, -2.0], dtype="<f4").tobytes()]


def test_fp16_has_no_typed_field_so_the_whole_answer_is_raw() -> None:
    outputs = {"a": np.ones(2, np.float16), "b": np.ones(2, np.float32)}
    tensors, raw = encode_outputs(outputs, raw=False)
    assert len(raw) == 2
    assert not any(t.HasField("contents") for t in tensors)
    with pytest.raises(InvalidArgument, match="input 'h': FP16 can only be sent as raw"):
        from_contents(Tensor(name="h", datatype="FP16", shape=[1]), "input 'h'")


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "message"),
    [
        (b"\0" * 12, "INT64", [2], "needs 16 bytes of raw contents, got 12"),
        (b"\0" * 8, "FP32", [3], "needs 12 bytes of raw contents, got 8"),
        (b"", "FP32", [-1, 2], "negative dimension"),
        (b"\0" * 4, "BYTES", [1], "unsupported datatype 'BYTES'"),
    ],
)
def test_bad_raw_tensors(data: bytes, datatype: str, shape: list[int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"input 'x'.*{message}"):
        from_raw(data, datatype, shape, "input 'x'")


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            Tensor(
                name="x",
                datatype="FP32",
                shape=[3],
                contents=pb.InferTensorContents(fp32_contents=[1, 2]),
            ),
            "needs 3 values in fp32_contents, got 2",
        ),
        (
            Tensor(
                name="x",
                datatype="FP32",
                shape=[1],
                contents=pb.InferTensorContents(int64_contents=[1]),
            ),
            "carried in fp32_contents, not int64_contents",
        ),
        (
            Tensor(
                name="x",
                datatype="INT8",
                shape=[1],
                contents=pb.InferTensorContents(int_contents=[300]),
            ),
            "out of range for INT8",
        ),
        (
            Tensor(
                name="x",
                datatype="UINT8",
                shape=[2],
                contents=pb.InferTensorContents(uint_contents=[1, 256]),
            ),
            "out of range for UINT8",
        ),
    ],
)
def test_bad_typed_tensors(tensor: pb.ModelInferRequest.InferInputTensor, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"input 'x'.*{message}"):
        from_contents(tensor, "input 'x'")


EXPECTED = {"cat": "INT64", "num": "FP32"}


def _request(raw: bool = True, **changes: object) -> pb.ModelInferRequest:
    cat = np.arange(6, dtype=np.int64).reshape(3, 2)
    num = np.ones((3, 1), np.float32)
    request = pb.ModelInferRequest(
        model_name="ctr",
        inputs=[
            Tensor(name="cat", datatype="INT64", shape=[3, 2]),
            Tensor(name="num", datatype="FP32", shape=[3, 1]),
        ],
    )
    if raw:
        request.raw_input_contents.extend([cat.tobytes(), num.tobytes()])
    else:
        request.inputs[0].contents.int64_contents.extend(cat.ravel().tolist())
        request.inputs[1].contents.fp32_contents.extend(num.ravel().tolist())
    for key, value in changes.items():
        if key == "shape":
            request.inputs[0].ClearField("shape")
            request.inputs[0].shape.extend(value)
        else:
            setattr(request.inputs[0], key, value)
    return request


@pytest.mark.parametrize("raw", [True, False])
def test_decode_inputs(raw: bool) -> None:
    arrays = decode_inputs(_request(raw=raw), EXPECTED)
    assert list(arrays) == ["cat", "num"]
    np.testing.assert_array_equal(arrays["cat"], np.arange(6).reshape(3, 2))
    assert arrays["num"].dtype == np.float32 and arrays["num"].shape == (3, 1)


def test_decode_rejects_inputs_the_model_does_not_take() -> None:
    with pytest.raises(InvalidArgument, match="input 'kat' is not an input of model 'ctr'"):
        decode_inputs(_request(name="kat"), EXPECTED)


def test_decode_rejects_the_wrong_datatype() -> None:
    with pytest.raises(
        InvalidArgument, match="input 'cat' has datatype 'INT32', model 'ctr' expects INT64"
    ):
        decode_inputs(_request(datatype="INT32"), EXPECTED)


def test_decode_rejects_duplicates_and_mixed_forms() -> None:
    request = _request()
    request.inputs[1].name = "cat"
    with pytest.raises(InvalidArgument, match="input 'cat' appears more than once"):
        decode_inputs(request, EXPECTED)
    request = _request()
    request.inputs[0].contents.int64_contents.append(1)
    with pytest.raises(
        InvalidArgument, match="input 'cat' has typed contents and raw_input_contents"
    ):
        decode_inputs(request, EXPECTED)
    request = _request()
    del request.raw_input_contents[1]
    with pytest.raises(InvalidArgument, match="raw_input_contents has 1 entries for 2 inputs"):
        decode_inputs(request, EXPECTED)


def test_decode_names_the_input_whose_bytes_do_not_fit_its_shape() -> None:
    with pytest.raises(InvalidArgument, match="input 'cat': INT64 shape \\[4, 2\\] needs 64 bytes"):
        decode_inputs(_request(shape=[4, 2]), EXPECTED)


def test_select_outputs_keeps_the_requested_order() -> None:
    outputs = {"a": np.zeros(1), "b": np.ones(1)}
    assert list(select_outputs(outputs, [], "m")) == ["a", "b"]
    assert list(select_outputs(outputs, ["b", "a"], "m")) == ["b", "a"]
    assert list(select_outputs(outputs, ["b"], "m")) == ["b"]
    with pytest.raises(InvalidArgument, match="requested output 'c' is not an output of model 'm'"):
        select_outputs(outputs, ["c"], "m")


def test_batch_only_tensors_move_between_protocol_and_graph_shapes() -> None:
    column = np.arange(4, dtype=np.int64).reshape(4, 1)
    matrix = np.zeros((4, 3), np.float32)
    graph = to_graph_rank({"ids": column, "x": matrix, "y": column}, {"ids": 1, "x": 2, "y": 2})
    # Only a rank-1 graph input loses the trailing 1; anything else is left for the model.
    assert graph["ids"].shape == (4,) and graph["x"].shape == (4, 3) and graph["y"].shape == (4, 1)
    np.testing.assert_array_equal(graph["ids"], [0, 1, 2, 3])
    shown = to_protocol_rank({"p": np.ones(4, np.float32), "x": matrix}, {"p": 2, "x": 2})
    assert shown["p"].shape == (4, 1) and shown["x"].shape == (4, 3)
