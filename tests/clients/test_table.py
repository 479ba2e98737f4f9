"""Plain-text tables: numbers (also pre-formatted ones) right-aligned, text left-aligned."""

from __future__ import annotations

from clients.table import format_table


def test_alignment() -> None:
    table = format_table(
        ["slot", "ad", "rate"],
        [(1, "a-long-id", "1,234.5"), ("-", "b", "7.25")],
    )
    assert table.splitlines() == [
        "slot  ad            rate",
        "----  ---------  -------",
        "   1  a-long-id  1,234.5",
        "   -  b             7.25",
    ]


def test_floats_are_shortened() -> None:
    lines = format_table(["x"], [(0.123456789,), (2.0,), (0.0000123,)]).splitlines()
    assert [line.strip() for line in lines[2:]] == ["0.1235", "2", "1.23e-05"]


def test_no_rows_prints_the_header() -> None:
    assert format_table(["a", "bb"], []).splitlines() == ["a  bb", "-  --"]
