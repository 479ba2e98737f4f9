"""Export PyTorch models to ONNX with a dynamic batch axis and check parity with onnxruntime."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

# onnxruntime-gpu 1.31 reads ONNX IR up to version 13 (onnx 1.23 writes 14 by default).
MAX_IR_VERSION = 13
PARITY_TOLERANCE = 1e-4
# The exporter's optimiser logs every pass at INFO; keep the trainer's output readable.
for _name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# "torchvision is not installed. Skipping torchvision::nms": true and irrelevant here.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


def export_onnx(
    model: nn.Module,
    example: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_name: str | Sequence[str],
    path: Path,
) -> None:
    """Write ``model`` to ``path`` with every input's first axis dynamic ("batch"); a model
    returning a tuple names each output (``output_name`` a sequence)."""
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {name: {0: batch} for name in input_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            tuple(example),
            input_names=list(input_names),
            output_names=[output_name] if isinstance(output_name, str) else list(output_name),
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def parity_max_abs_error(
    model: nn.Module,
    path: Path,
    inputs: dict[str, np.ndarray],
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Largest |torch - onnxruntime| over the given rows and every output (a model may return
    a tuple, in the graph's output order); raises ParityError above tolerance."""
    with torch.no_grad():
        expected = model(*(torch.from_numpy(v) for v in inputs.values()))
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, inputs)
    if len(outputs) != len(expected):
        raise ParityError(f"{path.name}: {len(outputs)} outputs, the model returns {len(expected)}")
    error = max(
        (
            float(np.max(np.abs(got.astype(np.float64) - want.numpy())))
            for got, want in zip(outputs, expected, strict=True)
            if want.numel()
        ),
        default=0.0,
    )
    if not error <= tolerance:
        raise ParityError(
            f"{path.name}: torch vs onnxruntime max abs error {error:.3g} > {tolerance}"
        )
    return error
