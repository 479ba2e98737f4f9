"""Masking a forgotten user in the model repository's bundles: every Parquet table keyed by
``user_id`` (profiles, the CTR user tables, retrieval's user rows) gets the user's id replaced
by a placeholder that names no one, the file rewritten durably. Rows stay where they are, so
the arrays aligned with them (user embeddings) keep their shape; the tombstone set already
stops serving those rows, and the next training run leaves the user out altogether."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import polars as pl

from engine.feedback.files import publish


def placeholder(digest: str) -> str:
    """The id a masked row carries (unique per user: part of their keyed tombstone entry)."""
    return f"forgotten-{digest.removeprefix('h1-')[:20]}"


def _user_tables(repo: Path, skip: Collection[Path]) -> list[Path]:
    skipped = {p.resolve() for p in skip}
    return [
        p
        for p in sorted(repo.rglob("*.parquet"))
        if p.resolve() not in skipped and not any(part.startswith(".") for part in p.parts[-3:])
    ]


def mask_in_repository(
    repo: Path,
    user_ids: Collection[str],
    digest: Callable[[str], str],
    skip: Collection[Path] = (),
) -> int:
    """Replace the ids in every bundle table of ``repo`` with their placeholders (named by
    ``digest``: the keyed tombstone entry); returns the rows masked. ``skip``: files that are
    no bundle table (the tombstone set)."""
    ids = [u for u in user_ids if u]
    if not ids or not repo.is_dir():
        return 0
    mapping = {u: placeholder(digest(u)) for u in ids}
    masked = 0
    for path in _user_tables(repo, skip):
        schema = pl.read_parquet_schema(path)
        if schema.get("user_id") != pl.String:
            continue
        hits = (
            pl.scan_parquet(path)
            .filter(pl.col("user_id").is_in(ids))
            .select(pl.len())
            .collect()
            .item()
        )
        if not hits:
            continue
        frame = pl.read_parquet(path).with_columns(pl.col("user_id").replace(mapping))
        tmp = path.with_name(f".{path.name}.tmp")
        frame.write_parquet(tmp)
        publish(tmp, path)
        masked += int(hits)
    return masked
