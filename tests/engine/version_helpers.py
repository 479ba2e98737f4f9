"""Model versions that really differ: version ``v`` of a bundle is version 1 with every float
output of its ONNX graph (and, for retrieval, its user embeddings) multiplied by
``scale(v) = 1 / v``. A server that reports version ``v`` while scoring with another version's
session answers with the wrong scores, which the tests check with :func:`unscaled`.

Scaling keeps every order (the same items, ads, winners and GSP prices, which are
scale-free), so tests can compare any field of two versions' answers exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def scale(version: int) -> float:
    """How much version ``version``'s scores are of version 1's."""
    return 1.0 / version


def unscaled(value: float, version: int) -> float:
    """The version-1 score that ``value`` from ``version`` stands for."""
    return value / scale(version)


def scale_onnx_outputs(path: Path, factor: float) -> None:
    """Multiply each float output of the graph at ``path`` by ``factor`` (in the graph: a Mul
    node after the node that produced it; names, shapes and opset stay as they were)."""
    model = onnx.load(str(path))
    graph = model.graph
    for output in graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        raw = f"{output.name}__unscaled"
        for node in graph.node:
            node.output[:] = [raw if o == output.name else o for o in node.output]
            node.input[:] = [raw if i == output.name else i for i in node.input]
        const = numpy_helper.from_array(
            np.array(factor, dtype=np.float32), name=f"{output.name}__scale"
        )
        graph.initializer.append(const)
        graph.node.append(helper.make_node("Mul", [raw, const.name], [output.name]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def add_version(
    repo: Path, name: str, version: int, *, damage: bool = False, base: int = 1
) -> Path:
    """Write ``name`` version ``version`` from version ``base``, its scores scaled by
    ``scale(version) / scale(base)`` (written aside and renamed into place, like the trainer).
    ``damage`` writes an unreadable ONNX file instead."""
    tmp = repo / name / f".incoming-{version}"
    shutil.copytree(repo / name / str(base), tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["version"] = version
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    factor = scale(version) / scale(base)
    if damage:
        (tmp / "model.onnx").write_bytes(b"\x00garbage")
    elif factor != 1.0:
        scale_onnx_outputs(tmp / manifest["onnx"]["file"], factor)
        if manifest["kind"] == "retrieval":
            # Recommend scans the embeddings, not the graph: scale the user side (inner
            # products scale with it) so both paths agree with the graph.
            users = tmp / manifest["artifacts"]["user_embeddings"]
            np.save(users, (np.load(users) * np.float32(factor)).astype(np.float32))
    tmp.rename(repo / name / str(version))
    return repo / name / str(version)
