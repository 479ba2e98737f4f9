"""Inputs and onnxruntime reference outputs for the KServe v2 tests: realistic feature rows from
the served models, scored again by a separate in-process onnxruntime session on the same file."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from engine.models.ctr import CTRModel
from engine.models.retrieval import RetrievalModel
from engine.registry import ModelRegistry


def ctr_inputs(registry: ModelRegistry, rows: int = 16) -> dict[str, np.ndarray]:
    model = registry.get("ctr")
    assert isinstance(model, CTRModel)
    cat, num = model.features("u3", np.arange(rows, dtype=np.int64) % model.store.n_items, {})
    return {"cat": cat, "num": num}


def retrieval_inputs(registry: ModelRegistry, rows: int = 12) -> dict[str, np.ndarray]:
    model = registry.get("retrieval")
    assert isinstance(model, RetrievalModel)
    users, items = len(model.user_ids), len(model.item_ids)
    return {
        "user_index": np.arange(rows, dtype=np.int64) % users,
        "item_index": (np.arange(rows, dtype=np.int64) * 7) % items,
    }


def reference(
    registry: ModelRegistry, name: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The model file's outputs from a fresh onnxruntime session, outside the server."""
    path = registry.get(name).ref.file("onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs), strict=True))
