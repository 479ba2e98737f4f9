"""MovieLens ratings as an event log, with movie genres and user demographics as side tables.

Reads ML-100K (``u.data``: tab-separated ``user item rating unix_ts``; ``u.item``, ``u.user``)
and ML-1M/10M (``ratings.dat``: ``::``-separated; ``movies.dat``, ``users.dat``). ``path`` is the
ratings file or the folder holding it; side tables are read when they lie beside it. Each
rating becomes ``event="rating"`` with ``value`` = the rating.

A movie's ``category`` is its first genre in MovieLens' genre order (``genres`` keeps them
all): the profiles' category affinity needs one category per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from training.read_common import (
    ROW,
    Field,
    ReadResult,
    epoch_seconds,
    field_count_rule,
    probe,
    scan_split_lines,
    triage,
)
from training.schema import SchemaError

# u.genre's order: the 19 genre flags at the end of each u.item line.
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_RATING_FILES = ("u.data", "ratings.dat")
_RATING_COLUMNS = ("user_id", "item_id", "rating", "unix_ts")


def read_movielens(path: Path) -> ReadResult:
    """Ratings from ``u.data`` or ``ratings.dat`` (or the folder with one of them)."""
    ratings = _ratings_file(path)
    source = str(ratings)
    separator = _sniff_separator(ratings)
    frame = scan_split_lines(ratings, separator, _RATING_COLUMNS)
    fields = [
        Field("user_id", pl.col("user_id"), pl.col("user_id"), True, "field 1 (user id)"),
        Field("item_id", pl.col("item_id"), pl.col("item_id"), True, "field 2 (item id)"),
        Field(
            "ts",
            epoch_seconds(pl.col("unix_ts").cast(pl.Int64, strict=False)),
            pl.col("unix_ts"),
            True,
            "field 4 (timestamp)",
            "Unix seconds",
        ),
        Field("event", pl.lit("rating")),
        Field("value", pl.col("rating").cast(pl.Float64, strict=False), pl.col("rating"), True,
              "field 3 (rating)", "a number"),
    ]  # fmt: skip
    rules = [field_count_rule(len(_RATING_COLUMNS), separator)]
    probe(frame, fields, rules, source)
    events, counts, _ = triage(frame, fields, rules, source=source)
    folder = ratings.parent
    if ratings.name == "u.data":
        items, users = _ml100k_items(folder / "u.item"), _ml100k_users(folder / "u.user")
    else:
        items, users = _ml1m_items(folder / "movies.dat"), _ml1m_users(folder / "users.dat")
    return ReadResult(events, items, users, source, "movielens", counts)


def _ratings_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in _RATING_FILES:
        if (path / name).is_file():
            return path / name
    raise SchemaError(f"{path}: no MovieLens ratings file ({' or '.join(_RATING_FILES)}) in it")


def _sniff_separator(path: Path) -> str:
    with path.open("rb") as f:
        first = f.readline()
    if b"::" in first:
        return "::"
    if b"\t" in first:
        return "\t"
    raise SchemaError(
        f"{path}: line 1: expected MovieLens ratings separated by tab (u.data) or '::' "
        f"(ratings.dat), found {first[:80]!r}"
    )


def _read_latin1_lines(path: Path, separator: str, names: Sequence[str]) -> pl.DataFrame | None:
    """A small ``separator``-delimited ISO-8859-1 file as String columns; None when absent.

    Read eagerly (these tables are kilobytes) because Polars' CSV reader only decodes UTF-8,
    and MovieLens titles are Latin-1.
    """
    if not path.exists():
        return None
    lines = pl.DataFrame(
        {"_line": path.read_bytes().decode("latin-1").splitlines()}, schema={"_line": pl.String}
    ).with_row_index(ROW, offset=1)
    lines = lines.filter(pl.col("_line").str.strip_chars() != "")
    counts = lines["_line"].str.count_matches(separator, literal=True) + 1
    wrong = lines.filter(counts != len(names))
    if wrong.height:
        row, line = wrong.row(0)
        raise SchemaError(
            f"{path}: line {row}: expected {len(names)} fields separated by {separator!r}, "
            f"found {line.count(separator) + 1}"
        )
    split = pl.col("_line").str.split_exact(separator, len(names) - 1)
    return lines.select(*[split.struct.field(f"field_{i}").alias(n) for i, n in enumerate(names)])


def _ml100k_items(path: Path) -> pl.LazyFrame | None:
    flags = [f"genre_{i}" for i in range(len(ML100K_GENRES))]
    table = _read_latin1_lines(
        path, "|", ["item_id", "title", "release_date", "video_date", "url", *flags]
    )
    if table is None:
        return None
    genres = pl.concat_list(
        [
            pl.when(pl.col(f) == "1").then(pl.lit(g))
            for f, g in zip(flags, ML100K_GENRES, strict=True)
        ]
    ).list.drop_nulls()
    return (
        table.lazy()
        .with_columns(genres.alias("genres"))
        .select(
            "item_id",
            "title",
            pl.col("release_date").str.to_date("%d-%b-%Y", strict=False),
            pl.col("genres").list.first().alias("category"),
            "genres",
        )
    )


def _ml100k_users(path: Path) -> pl.LazyFrame | None:
    table = _read_latin1_lines(path, "|", ["user_id", "age", "gender", "occupation", "zip"])
    if table is None:
        return None
    return table.lazy().with_columns(pl.col("age").cast(pl.Int32, strict=False))


def _ml1m_items(path: Path) -> pl.LazyFrame | None:
    table = _read_latin1_lines(path, "::", ["item_id", "title", "genres"])
    if table is None:
        return None
    return table.lazy().select(
        "item_id",
        "title",
        pl.col("genres").str.split("|").list.first().alias("category"),
        pl.col("genres").str.split("|"),
    )


def _ml1m_users(path: Path) -> pl.LazyFrame | None:
    table = _read_latin1_lines(path, "::", ["user_id", "gender", "age", "occupation", "zip"])
    if table is None:
        return None
    return table.lazy().with_columns(pl.col("age").cast(pl.Int32, strict=False))
