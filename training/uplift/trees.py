"""The gradient-boosted S-learner: one ``HistGradientBoostingClassifier`` over the customer
features plus the arm (one-hot), uplift_t(x) = P(convert | x, arm t) - P(convert | x, control).

Trees suit tabular customer data (mixed scales, thresholds such as "bought in the last 30
days", interactions found without feature engineering), and one model over every arm shares
what the arms have in common (who buys at all), so small campaigns estimate the differences
with less noise than one model per arm. It is exported as one ONNX graph ``features ->
uplift[n, T]``: skl2onnx converts the classifier (ONNX-ML TreeEnsemble), and a wrapper feeds it
every customer once per arm in one batch and subtracts the control's probability.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, compose, helper
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

# The opsets skl2onnx is asked for (the wrapper graphs take whatever it then declares).
OPSET, ML_OPSET = 17, 3


@dataclass(frozen=True)
class TreeConfig:
    """Shallow trees with large leaves, many of them at a small step: measured on the campaign
    simulator (`bench.campaigns`), these beat deeper trees with smaller leaves at 7.7k-15.5k
    campaign rows (0.89-0.90 of the oracle plan against 0.81-0.86 for 31 leaves of 20)."""

    max_iter: int = 500
    learning_rate: float = 0.03
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 100
    l2_regularization: float = 1.0
    # Early stopping on a share of the rows (log loss), so the number of trees fits the data.
    validation_fraction: float = 0.15
    n_iter_no_change: int = 20
    seed: int = 0
    # OpenMP threads for fitting and predicting. One: on shared cores OpenMP's barriers stall
    # (a 12k-row fit took 250 s of wall time for 24 s of CPU at a load of 16), and campaign
    # tables are small enough that one core fits them in seconds.
    threads: int = 1


class TreeSLearner:
    """A fitted S-learner (one or more bagged classifiers whose probabilities are averaged):
    :meth:`predict` gives [n, T] uplifts, :meth:`to_onnx` the graph."""

    def __init__(
        self,
        models: list[HistGradientBoostingClassifier],
        width: int,
        treatments: int,
        threads: int = 1,
    ) -> None:
        self.models, self.width, self.treatments = models, width, treatments
        self.threads = threads

    def _with_arm(self, x: np.ndarray, arm: int) -> np.ndarray:
        onehot = np.zeros((len(x), self.treatments + 1), dtype=np.float32)
        onehot[:, arm] = 1.0
        return np.hstack([x.astype(np.float32, copy=False), onehot])

    def predict(self, x: np.ndarray) -> np.ndarray:
        arms = range(self.treatments + 1)
        with threadpool_limits(self.threads, user_api="openmp"):
            p = [
                np.mean([m.predict_proba(self._with_arm(x, a))[:, 1] for m in self.models], axis=0)
                for a in arms
            ]
        return np.stack([p[t] - p[0] for t in range(1, self.treatments + 1)], axis=1)

    def to_onnx(self, input_name: str, output_name: str) -> onnx.ModelProto:
        """``input_name`` float32 [n, width] -> ``output_name`` float32 [n, T]: the rows once
        per arm in one batch, every classifier's tree ensemble on it, their probabilities
        averaged, the control's subtracted."""
        arms = self.treatments + 1
        pre = _arms_batch(input_name, "arms_batch", self.width, arms).graph
        post = _differences("proba", output_name, arms).graph
        nodes, initializers, probabilities = list(pre.node), list(pre.initializer), []
        opsets: dict[str, int] = {"": OPSET}
        ir_version = onnx.IR_VERSION
        for k, model in enumerate(self.models):
            trees = compose.add_prefix(self._convert(model), f"trees{k}/")
            ir_version = min(ir_version, trees.ir_version)
            (tree_in,) = (i.name for i in trees.graph.input)
            for node in trees.graph.node:
                node.input[:] = ["arms_batch" if i == tree_in else i for i in node.input]
            nodes += trees.graph.node
            initializers += trees.graph.initializer
            probabilities.append(
                next(o.name for o in trees.graph.output if "probabilities" in o.name)
            )
            for o in trees.opset_import:  # the converter may list a domain twice
                opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
        nodes.append(helper.make_node("Mean", probabilities, ["proba"]))
        nodes += post.node
        graph = helper.make_graph(
            nodes,
            "s_learner",
            list(pre.input),
            list(post.output),
            initializer=[*initializers, *post.initializer],
        )
        merged = helper.make_model(
            graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()]
        )
        # The converter's IR version: onnx's newest may be beyond what onnxruntime reads.
        merged.ir_version = ir_version
        onnx.checker.check_model(merged, full_check=True)
        return merged

    def _convert(self, model: HistGradientBoostingClassifier) -> onnx.ModelProto:
        from skl2onnx import to_onnx

        with _missing_flags_as_ints():
            return to_onnx(
                model,
                self._with_arm(np.zeros((1, self.width), dtype=np.float32), 0),
                options={id(model): {"zipmap": False}},
                target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
            )


@contextmanager
def _missing_flags_as_ints() -> Iterator[None]:
    """skl2onnx 1.20 passes HistGradientBoosting's ``missing_go_to_left`` (NumPy/Python bools)
    into the integer attribute ``nodes_missing_value_tracks_true``, which onnx >= 1.17 refuses
    ("Expected an int, got a boolean"); convert them to 0/1 while converting."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: object, nodes_missing_value_tracks_true: object = 0, **kw: object) -> None:
        original(
            *args, nodes_missing_value_tracks_true=int(bool(nodes_missing_value_tracks_true)), **kw
        )

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def fit_tree_s_learner(
    x: np.ndarray,
    arm: np.ndarray,
    y: np.ndarray,
    treatments: int,
    config: TreeConfig,
    bags: int = 1,
) -> TreeSLearner:
    """Fit on every campaign row: the features and the arm (0 = control) as one-hot columns;
    ``bags`` classifiers with other seeds (so other early-stopping rows), averaged."""
    width = x.shape[1]
    onehot = np.eye(treatments + 1, dtype=np.float32)[arm]
    rows = np.hstack([x.astype(np.float32, copy=False), onehot])
    models = []
    for b in range(max(1, bags)):
        model = HistGradientBoostingClassifier(
            max_iter=config.max_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            early_stopping=True,
            validation_fraction=config.validation_fraction,
            n_iter_no_change=config.n_iter_no_change,
            random_state=config.seed + 1000 * b,
        )
        with threadpool_limits(config.threads, user_api="openmp"):
            models.append(model.fit(rows, y))
    return TreeSLearner(models, width, treatments, config.threads)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _arms_batch(features: str, out: str, width: int, arms: int) -> onnx.ModelProto:
    """features [n, width] -> [arms * n, width + arms]: the rows once per arm (arm-major),
    each with its arm's one-hot columns."""
    n = helper.make_tensor_value_info(features, TensorProto.FLOAT, ["n", width])
    nodes = [
        helper.make_node("Shape", [features], ["shape"], start=0, end=1),
        helper.make_node("Concat", ["shape", "arm_width"], ["onehot_shape"], axis=0),
    ]
    blocks = []
    for a in range(arms):
        row = np.zeros((1, arms), dtype=np.float32)
        row[0, a] = 1.0
        nodes += [
            helper.make_node(
                "Constant",
                [],
                [f"arm{a}"],
                value=helper.make_tensor(f"arm{a}_row", 1, row.shape, row.ravel()),
            ),
            helper.make_node("Expand", [f"arm{a}", "onehot_shape"], [f"onehot{a}"]),
            helper.make_node("Concat", [features, f"onehot{a}"], [f"block{a}"], axis=1),
        ]
        blocks.append(f"block{a}")
    nodes.append(helper.make_node("Concat", blocks, [out], axis=0))
    arm_width = helper.make_tensor("arm_width", TensorProto.INT64, [1], [arms])
    graph = helper.make_graph(
        nodes,
        "arms_batch",
        [n],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["an", width + arms])],
        initializer=[arm_width],
    )
    return _model(graph)


def _differences(proba: str, out: str, arms: int) -> onnx.ModelProto:
    """probabilities [arms * n, 2] (arm-major) -> P(convert | arm t) - P(convert | control),
    [n, arms - 1]."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", [proba, "one"], ["p1"], axis=1),  # [arms * n]
            helper.make_node("Reshape", ["p1", "arms_by_n"], ["p"]),  # [arms, n]
            helper.make_node("Gather", ["p", "zero"], ["p0"], axis=0),  # [n]
            helper.make_node("Slice", ["p", "one_1d", "arms_1d", "zero_1d"], ["pt"]),
            helper.make_node("Sub", ["pt", "p0"], ["diff"]),  # [arms - 1, n]
            helper.make_node("Transpose", ["diff"], [out], perm=[1, 0]),
        ],
        "differences",
        [helper.make_tensor_value_info(proba, TensorProto.FLOAT, ["an", 2])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", arms - 1])],
        initializer=[
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
            helper.make_tensor("zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("arms_by_n", TensorProto.INT64, [2], [arms, -1]),
            helper.make_tensor("one_1d", TensorProto.INT64, [1], [1]),
            helper.make_tensor("arms_1d", TensorProto.INT64, [1], [arms]),
            helper.make_tensor("zero_1d", TensorProto.INT64, [1], [0]),
        ],
    )
    return _model(graph)
