"""Helpers for the privacy tests: finding any trace of a user id in files (raw bytes, and the
decompressed content of Parquet files, which compression would otherwise hide) and a known
user of the trained repository."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl


def traces(needle: str, roots: Iterable[Path]) -> list[str]:
    """Every place under ``roots`` holding ``needle``: a file's raw bytes, or any cell of a
    Parquet file's columns (as text) or its column names."""
    raw = needle.encode()
    found = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            data = path.read_bytes()
            if raw in data:
                found.append(f"{path}: bytes")
            if path.suffix == ".parquet" and data[:4] == b"PAR1":
                frame = pl.read_parquet(path)
                if any(needle in c for c in frame.columns):
                    found.append(f"{path}: column name")
                for name in frame.columns:
                    text = frame[name].cast(pl.String, strict=False)
                    if text.str.contains(needle, literal=True).any():
                        found.append(f"{path}: column {name}")
    return found


def known_user(repo: Path) -> str:
    """A user every bundle knows: retrieval embeddings, CTR user features and a profile."""

    def users(path: Path) -> set[str]:
        return set(pl.read_parquet(path, columns=["user_id"])["user_id"].cast(pl.String))

    common = (
        users(repo / "retrieval" / "1" / "users.parquet")
        & users(repo / "ctr" / "1" / "users.parquet")
        & users(repo / "profiles" / "1" / "profiles.parquet")
    )
    return max(sorted(common), key=len)  # the longest: least likely to occur by chance
