"""A served retrieval model: user and item embeddings (memory-mapped), the items each user
already consumed, item popularity and catalogue attributes for filters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from engine.batching import BatcherClosed
from engine.errors import BundleError
from engine.models.base import OnnxModel
from engine.observability import record_batch
from engine.repository import BundleRef
from engine.settings import Settings
from engine.topk_batching import TopKBatcher, TopKQuery
from kernels import gpu, ivf_topk, load_ivf, topk
from kernels.bundle_manifest import RetrievalBundle
from kernels.filters import Exclusions


class RetrievalModel(OnnxModel):
    """Candidate retrieval by inner product over the item embedding table."""

    def __init__(self, ref: BundleRef, settings: Settings) -> None:
        super().__init__(ref, settings)
        where = f"{ref.name}/{ref.version}"

        def npy(key: str, mmap: bool = False) -> np.ndarray:
            try:
                return np.load(ref.file(key), mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise BundleError(f"{where}: cannot read {key}: {exc}") from exc

        self.user_embeddings = npy("user_embeddings", mmap=True)
        self.item_embeddings = npy("item_embeddings", mmap=True)
        self.consumed_indptr = npy("consumed_indptr")
        self.consumed_indices = npy("consumed_indices")
        self.popularity = npy("popularity").astype(np.float32)
        users = pl.read_parquet(ref.file("users"))
        items = pl.read_parquet(ref.file("items"))
        n_users, n_items = len(users), len(items)
        if self.user_embeddings.shape[0] != n_users or self.item_embeddings.shape[0] != n_items:
            raise BundleError(f"{where}: embedding rows do not match the id tables")
        if self.user_embeddings.dtype != np.float32 or self.item_embeddings.dtype != np.float32:
            raise BundleError(f"{where}: embeddings must be float32")
        if len(self.consumed_indptr) != n_users + 1 or len(self.popularity) != n_items:
            raise BundleError(f"{where}: consumed/popularity arrays do not match the id tables")
        self.user_ids = users["user_id"].to_list()
        self.item_ids = items["item_id"].to_list()
        self.user_row = {u: i for i, u in enumerate(self.user_ids)}
        self.item_row = {v: i for i, v in enumerate(self.item_ids)}
        category = (
            items["category"].cast(pl.String).fill_null("")
            if "category" in items.columns
            else pl.Series([""] * n_items)
        )
        self.categories = sorted(set(category.to_list()))
        code = {c: i for i, c in enumerate(self.categories)}
        self.item_category = category.to_list()
        self.item_category_code = np.array([code[c] for c in self.item_category], dtype=np.int32)
        self.item_price = (
            items["price"].cast(pl.Float64).fill_null(np.nan).to_numpy()
            if "price" in items.columns
            else np.full(n_items, np.nan)
        )
        # Approximate retrieval when the bundle carries an IVF index (built by the trainer for
        # large catalogues) and the settings allow it.
        self.ivf = None
        manifest = ref.bundle(RetrievalBundle)
        if manifest.ivf is not None and settings.retrieval_search != "exact":
            try:
                self.ivf = load_ivf(ref.path)
            except (OSError, ValueError) as exc:
                raise BundleError(f"{where}: cannot read the IVF index: {exc}") from exc
            if self.ivf.ids.shape[0] != n_items:
                raise BundleError(
                    f"{where}: the IVF index covers {self.ivf.ids.shape[0]} items, not {n_items}"
                )
        elif settings.retrieval_search == "ivf":
            raise BundleError(f"{where}: retrieval_search=ivf but the bundle has no IVF index")
        # Popularity as a one-column "embedding" so cold start uses the same top-k kernel.
        self.popularity_matrix = np.ascontiguousarray(self.popularity[:, None])
        # Item-item similarity is cosine over the latent part (the trainer may append the item
        # bias as a last column, which says how popular an item is, not what it is like).
        latent = self.item_embeddings[:, : manifest.latent_dim or self.item_embeddings.shape[1]]
        norms = np.linalg.norm(latent, axis=1, keepdims=True)
        self.item_unit = np.ascontiguousarray(
            latent / np.where(norms > 0, norms, 1.0), dtype=np.float32
        )
        # Who consumed each item (the transpose of the consumed lists), for Audience.
        owners = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(self.consumed_indptr))
        order = np.argsort(self.consumed_indices, kind="stable")
        self.consumers_indices = owners[order]
        self.consumers_indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(self.consumed_indices, minlength=n_items))]
        ).astype(np.int64)
        # Concurrent Recommend calls share one scan of the item table.
        ms = self.model_settings
        max_batch = ms.retrieval_max_batch or (64 if gpu.use_gpu_by_default() else 1)
        self.topk_batcher = (
            TopKBatcher(
                self._search_items,
                max_batch_rows=max_batch,
                max_queue_delay_us=ms.max_queue_delay_us,
                max_queue_rows=ms.retrieval_max_queue,
                name=f"{where}/topk",
                on_batch=record_batch(f"{ref.name}.topk"),
            )
            if ms.batching and max_batch > 1
            else None
        )
        self.warmup()

    def close(self) -> None:
        super().close()
        if self.topk_batcher is not None:
            self.topk_batcher.close()

    def _search_items(
        self, queries: np.ndarray, k: int, exclude: Exclusions, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows for user-side queries: IVF when the bundle has an index, else exact."""
        if self.ivf is not None:
            return ivf_topk(
                queries,
                self.item_embeddings,
                self.ivf,
                k,
                self.settings.ivf_nprobe,
                exclude=exclude,
                allowed=allowed,
            )
        return topk(queries, self.item_embeddings, k, exclude=exclude, allowed=allowed)

    def consumed(self, row: int) -> np.ndarray:
        return self.consumed_indices[self.consumed_indptr[row] : self.consumed_indptr[row + 1]]

    def consumers(self, item_rows: np.ndarray) -> np.ndarray:
        """Users who consumed any of the items (user rows, unique)."""
        parts = [
            self.consumers_indices[self.consumers_indptr[i] : self.consumers_indptr[i + 1]]
            for i in item_rows
        ]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def item_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Rows of known items (unknown ids are skipped)."""
        get = self.item_row.get
        rows = (get(i, -1) for i in item_ids)
        return np.array([r for r in rows if r >= 0], dtype=np.int64)

    def allowed_mask(
        self, categories: Sequence[str], min_price: float | None, max_price: float | None
    ) -> np.ndarray | None:
        """Items passing the filters (None when nothing filters)."""
        if not categories and min_price is None and max_price is None:
            return None
        mask = np.ones(len(self.item_ids), dtype=np.bool_)
        if categories:
            codes = [self.categories.index(c) for c in categories if c in self.categories]
            mask &= np.isin(self.item_category_code, np.array(codes, dtype=np.int32))
        if min_price is not None:
            mask &= self.item_price >= min_price
        if max_price is not None:
            mask &= self.item_price <= max_price
        return mask

    def retrieve(
        self,
        user_row: int | None,
        n: int,
        exclude: np.ndarray,
        allowed: np.ndarray | None,
        popularity: np.ndarray | None = None,
        user_id: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item rows and scores: by embedding for a known user, else by popularity
        (``popularity`` [n_items, 1] overrides the global one, e.g. a segment's); ``user_id``
        lets a model that follows live events (`engine.models.sequence`) look them up."""
        excl = (np.array([0, len(exclude)], dtype=np.int64), exclude.astype(np.int64))
        if user_row is None:
            table = self.popularity_matrix if popularity is None else popularity
            query = np.ones((1, 1), dtype=np.float32)
            ids, scores = topk(query, table, n, exclude=excl, allowed=allowed)
        else:
            query = self.user_query(user_row, user_id)
            if self.topk_batcher is not None:
                request = TopKQuery(query[0], n, excl[1], allowed)
                try:
                    return self.topk_batcher.infer(request)
                except BatcherClosed:  # this version is being replaced: finish on it
                    pass
            ids, scores = self._search_items(query, n, excl, allowed)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def user_query(self, user_row: int, user_id: str | None = None) -> np.ndarray:
        """[1, dim] query of a known user: the shipped user row."""
        return np.asarray(self.user_embeddings[user_row : user_row + 1])

    def popularity_among(self, user_rows: np.ndarray) -> np.ndarray:
        """[n_items, 1] consumption counts among the given users (a segment's favourites)."""
        starts, ends = self.consumed_indptr[user_rows], self.consumed_indptr[user_rows + 1]
        items = (
            np.concatenate([self.consumed_indices[a:b] for a, b in zip(starts, ends, strict=True)])
            if len(user_rows)
            else np.zeros(0, np.int64)
        )
        counts = np.bincount(items, minlength=len(self.item_ids)).astype(np.float32)
        return np.ascontiguousarray(counts[:, None])

    def similar(
        self, item_row: int, n: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n items by cosine similarity to ``item_row`` (never the item itself)."""
        excl = (np.array([0, 1], dtype=np.int64), np.array([item_row], dtype=np.int64))
        ids, scores = topk(
            self.item_unit[item_row], self.item_unit, n, exclude=excl, allowed=allowed
        )
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def audience(
        self, target: np.ndarray, n: int, exclude: np.ndarray, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n user rows by inner product with a target item-side vector."""
        excl = (np.array([0, len(exclude)], dtype=np.int64), exclude.astype(np.int64))
        ids, scores = topk(
            target.astype(np.float32), self.user_embeddings, n, exclude=excl, allowed=allowed
        )
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def warmup(self) -> None:
        """Compile/load the top-k kernels before traffic, for every query path."""
        none = np.zeros(0, dtype=np.int64)
        self.retrieve(0 if self.user_ids else None, 4, none, None)
        self.retrieve(None, 4, none, np.ones(len(self.item_ids), dtype=np.bool_))
        if self.item_ids:
            self.similar(0, 4, None)
            self.audience(np.asarray(self.item_embeddings[0]), 4, none, None)
