"""A served sequence retrieval model (the trainer's SASRec bundle): a retrieval bundle whose
user vector is a user tower over the user's recent items, run at request time when the server
logged clicks of that user since training (`engine.live_history`), so a click changes the next
recommendation without retraining.

Without fresh clicks the shipped user row is used: it is the same tower on the same recent
items (the trainer computed it so), and costs no ONNX call. Freshly clicked items are excluded
as consumed ones are.
"""

from __future__ import annotations

import numpy as np

from engine.errors import BundleError
from engine.live_history import LiveHistory
from engine.models.base import ServedModel
from engine.models.retrieval import RetrievalModel
from engine.repository import BundleRef
from engine.runtime import create_session
from engine.settings import Settings
from kernels.bundle_manifest import RetrievalBundle


class SequenceRetrievalModel(RetrievalModel):
    """:class:`RetrievalModel` plus the user tower and each user's recent items."""

    def __init__(self, ref: BundleRef, settings: Settings) -> None:
        # Set before the base class warms up (warm-up calls retrieve).
        self.live: LiveHistory | None = None
        spec = ref.bundle(RetrievalBundle).sequence
        where = f"{ref.name}/{ref.version}"
        if spec is None:
            raise BundleError(f"{where}: the manifest has no sequence section")
        self.max_len, self.pad = spec.max_len, spec.pad
        self.history_cut_ms: int | None = spec.as_of_ms
        try:
            self.recent_indptr = np.load(ref.file("recent_indptr"), allow_pickle=False)
            self.recent_indices = np.load(ref.file("recent_indices"), allow_pickle=False)
            self.tower, _ = create_session(ref.file("user_tower"), settings)
        except (OSError, ValueError) as exc:
            raise BundleError(f"{where}: cannot read the sequence model: {exc}") from exc
        except Exception as exc:  # onnxruntime raises its own types for corrupt graphs
            raise BundleError(f"{where}: cannot load the user tower: {exc}") from exc
        names = [i.name for i in self.tower.get_inputs()]
        if names != ["items"]:
            raise BundleError(f"{where}: the user tower takes {names}, not ['items']")
        super().__init__(ref, settings)
        if len(self.recent_indptr) != len(self.user_ids) + 1 or self.pad != len(self.item_ids):
            raise BundleError(f"{where}: recent items do not match the id tables")
        # The tower's first run allocates its buffers: before traffic, not on a request.
        self.tower.run(None, {"items": self.sequence(None, np.zeros(0, dtype=np.int64))})

    def fresh_clicks(self, user_id: str | None) -> np.ndarray:
        """Item rows the user clicked after the bundle's cut, oldest first (known items only)."""
        if self.live is None or not user_id:
            return np.zeros(0, dtype=np.int64)
        fresh = self.live.since(user_id, self.history_cut_ms or 0)
        return self.item_rows([item for item, click in fresh if click])

    def sequence(self, user_row: int | None, fresh: np.ndarray) -> np.ndarray:
        """[1, max_len] tower input: the shipped recent items then ``fresh``, newest last,
        left-padded."""
        shipped = (
            self.recent_indices[self.recent_indptr[user_row] : self.recent_indptr[user_row + 1]]
            if user_row is not None
            else np.zeros(0, dtype=np.int64)
        )
        items = np.concatenate([shipped, fresh])[-self.max_len :]
        out = np.full((1, self.max_len), self.pad, dtype=np.int64)
        if len(items):
            out[0, self.max_len - len(items) :] = items
        return out

    def user_query(self, user_row: int, user_id: str | None = None) -> np.ndarray:
        fresh = self.fresh_clicks(user_id)
        if not len(fresh):
            return super().user_query(user_row, user_id)
        (vector,) = self.tower.run(None, {"items": self.sequence(user_row, fresh)})
        return np.ascontiguousarray(vector, dtype=np.float32)

    def retrieve(
        self,
        user_row: int | None,
        n: int,
        exclude: np.ndarray,
        allowed: np.ndarray | None,
        popularity: np.ndarray | None = None,
        user_id: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if user_row is not None:
            exclude = np.concatenate([exclude, self.fresh_clicks(user_id)])
        return super().retrieve(user_row, n, exclude, allowed, popularity, user_id)


def served_kind(ref: BundleRef, kind: type[ServedModel]) -> type[ServedModel]:
    """The class serving ``ref``: :class:`SequenceRetrievalModel` for a retrieval bundle with a
    user tower, else ``kind`` (the class of the bundle's kind)."""
    if kind is RetrievalModel and ref.bundle(RetrievalBundle).sequence is not None:
        return SequenceRetrievalModel
    return kind
