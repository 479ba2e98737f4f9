"""Every uplift candidate behind one small interface: fitted on campaign rows, it predicts
[n, T] uplifts and writes itself as one ONNX graph ``features -> uplift`` (parity-checked).

The PyTorch meta-learners (:mod:`training.uplift.learners`) and the gradient-boosted
S-learner (:mod:`training.uplift.trees`) compete on the same split; ``train_uplift`` does not
care which kind wins.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.export import PARITY_TOLERANCE, ParityError, export_onnx, parity_max_abs_error
from training.uplift.learners import LEARNERS, MLPConfig, fit_bagged, predict_uplift
from training.uplift.trees import TreeConfig, fit_tree_s_learner

GBDT_S_LEARNER = "s_learner_gbdt"
CANDIDATES: tuple[str, ...] = (*LEARNERS, GBDT_S_LEARNER)


class FittedUplift(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray:
        """[n, T] float64 uplift estimates."""

    def write_onnx(self, path: Path, input_name: str, output_name: str, rows: np.ndarray) -> float:
        """Write the graph; returns the largest |graph - model| on ``rows`` (ParityError above
        the tolerance)."""


class TorchUplift:
    def __init__(self, graph: nn.Module) -> None:
        self.graph = graph

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_uplift(self.graph, x)

    def write_onnx(self, path: Path, input_name: str, output_name: str, rows: np.ndarray) -> float:
        example = (torch.from_numpy(rows[:8]),)
        export_onnx(self.graph, example, [input_name], output_name, path)
        return parity_max_abs_error(self.graph, path, {input_name: rows})


class TreeUplift:
    def __init__(
        self, x: np.ndarray, arm: np.ndarray, y: np.ndarray, t: int, config: TreeConfig, bags: int
    ) -> None:
        self.model = fit_tree_s_learner(x, arm, y, t, config, bags)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def write_onnx(self, path: Path, input_name: str, output_name: str, rows: np.ndarray) -> float:
        onnx.save(self.model.to_onnx(input_name, output_name), path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {input_name: rows})
        error = float(np.max(np.abs(got.astype(np.float64) - self.predict(rows)), initial=0.0))
        if error > PARITY_TOLERANCE:
            raise ParityError(f"{path.name}: onnxruntime and scikit-learn differ by {error:.2e}")
        return error


def fit_candidate(
    name: str,
    x: np.ndarray,
    arm: np.ndarray,
    y: np.ndarray,
    treatments: int,
    mlp: MLPConfig,
    trees: TreeConfig,
    bags: int = 1,
) -> FittedUplift:
    """The named candidate fitted on the rows; ``bags`` fits with other seeds, averaged."""
    if name == GBDT_S_LEARNER:
        seeded = replace(trees, seed=trees.seed or mlp.seed)
        return TreeUplift(x, arm, y, treatments, seeded, bags)
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; known: {list(CANDIDATES)}")
    return TorchUplift(fit_bagged(name, x, arm, y, treatments, mlp, bags))
