"""Plain-text tables for the command line (no dependency beyond the standard library)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Number
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return (
            f"{value:.4g}"
            if abs(value) < 1e-3 and value != 0
            else f"{value:,.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, Number):
        return True
    # Pre-formatted numbers ("1,234", "5.80") align like numbers; "-" marks a missing one.
    text = str(value).replace(",", "")
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])
