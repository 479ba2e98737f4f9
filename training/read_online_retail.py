"""UCI Online Retail invoice lines as a purchase log, with product and customer side tables.

Each kept invoice line becomes ``event="purchase"`` with ``value`` = Quantity x UnitPrice,
``price`` = UnitPrice and ``request_id`` = InvoiceNo (one basket), ``user_id`` = CustomerID,
``item_id`` = StockCode; Country stays as the context column ``country``. Invoice times are
the shop's local (UK) time, taken as UTC.

Rows dropped, counted under the first reason that applies, in this order: ``cancellation``
(InvoiceNo starting with C), ``non_positive_quantity``, ``missing_quantity`` /
``unparsable_quantity``, ``negative_price`` (bad-debt adjustments), ``non_product_line``
(postage, fees, discounts, manual corrections, samples, gift vouchers: not things a customer
would be recommended), then the field checks (``missing_user_id`` for lines without a
CustomerID, ``missing_item_id``, ``missing_ts`` / ``unparsable_ts``, ...). Free lines
(UnitPrice 0) are kept: they are still interactions.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from training.read_common import (
    ROW,
    Field,
    ReadResult,
    Rule,
    blank_to_null,
    parse_ts,
    parsed,
    probe,
    require_columns,
    triage,
)
from training.schema import SchemaError

COLUMNS: tuple[str, ...] = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
    "CustomerID", "Country",
)  # fmt: skip
# Stock codes of service lines rather than products (seen in the 2010-2011 data).
NON_PRODUCT_CODES: tuple[str, ...] = (
    "POST", "DOT", "M", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK",
)  # fmt: skip
_GIFT_VOUCHER = r"(?i)^gift_"
_INVOICE_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
)


def read_online_retail(path: Path) -> ReadResult:
    """Online Retail as Parquet or CSV (with its header), or the folder with one such file."""
    path = _data_file(path)
    source = str(path)
    lf = (
        pl.scan_parquet(path)
        if path.suffix == ".parquet"
        else pl.scan_csv(path, infer_schema=False)
    )
    schema = lf.collect_schema()
    require_columns(schema.names(), COLUMNS, source)
    frame = lf.with_row_index(ROW, offset=1).with_columns(
        blank_to_null(pl.col("InvoiceNo")).alias("_invoice"),
        blank_to_null(pl.col("Quantity")).alias("_quantity_raw"),
        _number(pl.col("Quantity"), schema["Quantity"]).alias("_quantity"),
        _number(pl.col("UnitPrice"), schema["UnitPrice"]).alias("_price"),
        blank_to_null(pl.col("StockCode")).alias("_stock"),
    )
    fields = [
        Field("user_id", _customer_id(schema["CustomerID"]), blank_to_null(pl.col("CustomerID")),
              True, "CustomerID", "a customer number"),
        Field("item_id", pl.col("_stock"), pl.col("_stock"), True, "StockCode"),
        Field("ts", _invoice_time(schema["InvoiceDate"]), blank_to_null(pl.col("InvoiceDate")),
              True, "InvoiceDate", "a date and time"),
        Field("event", pl.lit("purchase")),
        Field("value", pl.col("_quantity") * pl.col("_price")),
        Field("price", pl.col("_price"), blank_to_null(pl.col("UnitPrice")), True, "UnitPrice",
              "a number"),
        Field("request_id", pl.col("_invoice")),
    ]  # fmt: skip
    rules = [
        Rule("cancellation", pl.col("_invoice").str.starts_with("C")),
        Rule("non_positive_quantity", pl.col("_quantity") <= 0),
        Rule("missing_quantity", pl.col("_quantity_raw").is_null()),
        Rule("unparsable_quantity", pl.col("_quantity").is_null(), structural=True,
             message="column 'Quantity' (an integer)"),
        Rule("negative_price", parsed("price") < 0),
        Rule("non_product_line",
             pl.col("_stock").is_in(list(NON_PRODUCT_CODES)) | pl.col("_stock").str.contains(_GIFT_VOUCHER)),
    ]  # fmt: skip
    probe(frame, fields, rules, source)
    events, counts, kept = triage(
        frame.with_columns(pl.col("Country").cast(pl.String).alias("country")),
        fields,
        rules,
        ["country"],
        source,
    )
    return ReadResult(events, _items(kept), _users(kept), source, "online-retail", counts)


def _data_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.parquet")) or sorted(path.glob("*.csv"))
    if not found:
        raise SchemaError(f"{path}: no Online Retail .parquet or .csv file in it")
    return found[0]


def _number(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return expr if dtype.is_numeric() else blank_to_null(expr).cast(pl.Float64, strict=False)


def _customer_id(dtype: pl.DataType) -> pl.Expr:
    # Stored as a float (17850.0) because of the missing values; the id is the integer.
    number = _number(pl.col("CustomerID"), dtype).cast(pl.Float64, strict=False)
    whole = number == number.round()
    return pl.when(whole).then(number.cast(pl.Int64, strict=False).cast(pl.String))


def _invoice_time(dtype: pl.DataType) -> pl.Expr:
    if dtype != pl.String:
        return parse_ts(pl.col("InvoiceDate"), dtype)
    text = blank_to_null(pl.col("InvoiceDate"))
    # ISO as in the Parquet copy, or the US style of the original spreadsheet's CSV exports;
    # explicit formats because one file may mix them.
    return pl.coalesce(
        [
            text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
            for fmt in _INVOICE_TIME_FORMATS
        ]
    )


def _items(kept: pl.LazyFrame) -> pl.LazyFrame:
    """One row per product: its most frequent description and its median unit price."""
    item = parsed("item_id").alias("item_id")
    descriptions = (
        kept.filter(pl.col("Description").is_not_null())
        .group_by(item, pl.col("Description").str.strip_chars().alias("description"))
        .agg(pl.len().alias("n"))
        .sort(["item_id", "n", "description"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True)
        .agg(pl.col("description").first())
    )
    prices = kept.group_by(item).agg(parsed("price").median().alias("price"))
    return prices.join(descriptions, on="item_id", how="left").sort("item_id")


def _users(kept: pl.LazyFrame) -> pl.LazyFrame:
    """One row per customer with the country most of their lines came from."""
    return (
        kept.group_by(parsed("user_id").alias("user_id"), pl.col("country"))
        .agg(pl.len().alias("n"))
        .sort(["user_id", "n", "country"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("country").first())
    )
