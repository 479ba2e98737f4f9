"""Leaving forgotten users out of every training run: the engine's tombstone set (ForgetUser,
`engine.privacy`) holds keyed digests of their ids (:mod:`kernels.forgotten`: HMAC under the
``forgotten.key`` secret beside the set; plain SHA-256 entries of older sets too), and :func:`exclude_forgotten` anti-joins their rows out of a read event log (and its user
table) before anything is trained on it (called by :func:`training.readers.filter_events`).

Where the set is: the ``forgotten`` argument, else ``$REACHRANK_FORGOTTEN_FILE``; ``reachrank
train`` passes ``<out>/forgotten.parquet``, the engine's default place (the repository it
serves).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from kernels.forgotten import ForgottenSet, read_secret

ENV = "REACHRANK_FORGOTTEN_FILE"
FILE = "forgotten.parquet"


def forgotten_set(path: Path | None) -> ForgottenSet:
    """The entries of a tombstone file (``path``, else ``$REACHRANK_FORGOTTEN_FILE``) with its
    secret; empty when neither names an existing file."""
    if path is None and os.environ.get(ENV):
        path = Path(os.environ[ENV])
    if path is None or not path.exists():
        return ForgottenSet(frozenset(), frozenset(), None)
    entries = pl.read_parquet(path, columns=["user_digest"])["user_digest"].to_list()
    return ForgottenSet.of(entries, read_secret(path))


def exclude_forgotten(frame: pl.LazyFrame, forgotten: Path | None = None) -> pl.LazyFrame:
    """``frame`` (events, or a user table: a ``user_id`` column) without the rows of forgotten
    users, lazily: an anti-join. Finding which ids are forgotten costs one pass over the
    distinct user ids, only when the set is not empty."""
    digests = forgotten_set(forgotten)
    if not digests or "user_id" not in frame.collect_schema().names():
        return frame
    dtype = frame.collect_schema()["user_id"]
    ids = frame.select(pl.col("user_id").unique()).collect()["user_id"].to_list()
    gone = [u for u in ids if u is not None and str(u) in digests]
    if not gone:
        return frame
    return frame.join(
        pl.LazyFrame({"user_id": gone}, schema={"user_id": dtype}), on="user_id", how="anti"
    )
