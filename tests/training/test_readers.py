"""Readers: every format onto the event schema, bad rows counted per reason, wrong files refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from training.read_online_retail import NON_PRODUCT_CODES
from training.readers import read_events
from training.schema import EVENT_SCHEMA, SchemaError


def _assert_schema(events: pl.DataFrame) -> None:
    for name, dtype in EVENT_SCHEMA.items():
        assert events.schema[name] == dtype, name


# --- events -----------------------------------------------------------------------------------

EVENTS_CSV = """user_id,item_id,ts,event,value,position,device
u1,i1,2024-01-01T00:00:00Z,impression,,1,ios
u1,i1,2024-01-01T00:00:05+00:00,CLICK,,1,ios
u2,i2,1704067200,purchase,9.5,,android
,i3,2024-01-01T00:00:00Z,click,,2,web
u3,i3,yesterday,click,,2,web
u3,i4,2024-01-02T00:00:00Z,like,,2,web
u3,i5,2024-01-02T00:00:00Z,purchase,ten,,web
"""


def test_events_csv_conforms_and_counts_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(EVENTS_CSV)
    events, report = read_events(path, "events").collect()
    _assert_schema(events)
    assert events["event"].to_list() == ["impression", "click", "purchase"]
    # ISO with offset and Unix seconds both parse.
    assert events["ts"].to_list() == [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC),
    ]
    assert events["value"].to_list() == [None, None, 9.5]
    assert events["position"].to_list() == [1, 1, None]
    assert events["device"].to_list() == ["ios", "ios", "android"]
    assert report.rows_read == 7
    assert report.rows_kept == 3
    assert report.dropped == {
        "missing_user_id": 1,
        "unparsable_ts": 1,
        "unknown_event": 1,
        "unparsable_value": 1,
    }


def test_events_parquet_directory_and_ndjson(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "user_id": [1, 2, None],
            "item_id": ["a", "b", "c"],
            "ts": [datetime(2024, 3, 1, 12), datetime(2024, 3, 2), datetime(2024, 3, 3)],
            "event": ["click", "rating", "click"],
            "value": [None, 4.0, None],
        }
    )
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.head(2).write_parquet(folder / "a.parquet")
    frame.tail(1).write_parquet(folder / "b.parquet")
    events, report = read_events(folder, "events").collect()
    _assert_schema(events)
    assert sorted(events["user_id"].to_list()) == ["1", "2"]
    assert events["ts"].min() == datetime(2024, 3, 1, 12, tzinfo=UTC)  # naive is taken as UTC
    assert report.dropped == {"missing_user_id": 1}

    ndjson = tmp_path / "log.ndjson"
    ndjson.write_text(
        '{"user_id": 7, "item_id": "a", "ts": "2024-01-01T00:00:00Z", "event": "click"}\n'
        '{"user_id": "u8", "item_id": "b", "ts": 1704067200, "event": "click"}\n'
    )
    events, report = read_events(ndjson, "events").collect()
    assert events["user_id"].to_list() == ["7", "u8"]
    assert events["ts"].n_unique() == 1
    assert report.rows_kept == 2


def test_events_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item,ts,event\nu1,i1,2024-01-01,click\n")
    with pytest.raises(SchemaError, match=r"log\.csv.*'item_id'"):
        read_events(path, "events")


def test_events_wrong_format_names_column_and_row(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts,event\nu1,i1,monday,click\nu2,i2,tuesday,click\n")
    with pytest.raises(SchemaError, match=r"log\.csv.*column 'ts'.*first at row 1.*'monday'"):
        read_events(path, "events")


def test_events_in_milliseconds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["a", "b"],
            "ts": [1704067200000, 1704067201000],
            "event": ["click"] * 2,
        }
    ).write_parquet(path)
    with pytest.raises(SchemaError, match=r"log\.parquet.*outside 1970-2100.*first at row 1"):
        read_events(path, "events")


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        read_events(tmp_path, "avro")
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "nope.parquet", "events")


def test_simulator_directory_with_side_tables(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "user_id": [0, 1],
            "item_id": [10, 11],
            "ts": [datetime(2024, 1, 1, tzinfo=UTC)] * 2,
            "event": ["impression", "click"],
            "position": [1, 1],
            "request_id": ["r0", "r0"],
        }
    ).write_parquet(tmp_path / "events.parquet")
    pl.DataFrame({"item_id": [10, 11], "category": ["a", "b"], "price": [1, 2]}).write_parquet(
        tmp_path / "items.parquet"
    )
    pl.DataFrame({"user_id": [0, 1], "age": [30, 40]}).write_parquet(tmp_path / "users.parquet")
    result = read_events(tmp_path, "simulator")
    events, report = result.collect()
    _assert_schema(events)
    assert report.format == "simulator" and report.rows_kept == 2
    assert result.items is not None and result.users is not None
    items = result.items.collect()
    assert items.schema["item_id"] == pl.String and items.schema["price"] == pl.Float64
    assert result.users.collect()["user_id"].to_list() == ["0", "1"]

    (tmp_path / "events.parquet").unlink()
    with pytest.raises(SchemaError, match=r"events\.parquet"):
        read_events(tmp_path, "simulator")


# --- MovieLens --------------------------------------------------------------------------------


def test_movielens_100k(datasets: Path) -> None:
    result = read_events(datasets / "ml-100k", "movielens")
    events, report = result.collect()
    _assert_schema(events)
    assert report.rows_read == report.rows_kept == 100_000
    assert events["user_id"].n_unique() == 943 and events["item_id"].n_unique() == 1682
    assert set(events["event"].unique()) == {"rating"}
    assert set(events["value"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # The first line of u.data: 196 242 3 881250949.
    first = events.row(0, named=True)
    assert (first["user_id"], first["item_id"], first["value"]) == ("196", "242", 3.0)
    assert first["ts"] == datetime.fromtimestamp(881250949, tz=UTC)
    assert result.items is not None and result.users is not None
    items = result.items.collect()
    assert items.height == 1682
    toy_story = items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["category"] == "Animation"
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    users = result.users.collect()
    assert users.height == 943 and users.row(0) == ("1", 24, "M", "technician", "85711")


def test_movielens_ratings_dat_with_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(
        "1::10::5::978300760\n1::11::3.5::978300761\n2::10::x::978300762\n2::12::4\n\n3::10::2::soon\n"
    )
    (tmp_path / "movies.dat").write_bytes("10::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
    (tmp_path / "users.dat").write_text("1::F::25::4::02460\n")
    result = read_events(tmp_path, "movielens")
    events, report = result.collect()
    assert events["value"].to_list() == [5.0, 3.5]
    assert report.dropped == {"malformed_line": 2, "unparsable_ts": 1, "unparsable_value": 1}
    assert result.items is not None and result.users is not None
    movie = result.items.collect().row(0, named=True)
    assert movie["title"] == "Amélie (2001)" and movie["category"] == "Comedy"
    assert result.users.collect()["age"].to_list() == [25]


def test_movielens_wrong_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\n2\t11\t4\n")
    with pytest.raises(SchemaError, match=r"u\.data.*expected 4 fields"):
        read_events(path, "movielens")
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(SchemaError, match=r"ratings\.csv: line 1"):
        read_events(csv, "movielens")


# --- Online Retail ----------------------------------------------------------------------------


def test_online_retail_full_file(datasets: Path) -> None:
    path = datasets / "online-retail" / "online_retail.parquet"
    result = read_events(path, "online-retail")
    events, report = result.collect()
    _assert_schema(events)
    raw = pl.read_parquet(path)
    assert report.rows_read == raw.height == 541_909
    assert report.rows_kept + sum(report.dropped.values()) == report.rows_read
    assert report.dropped["cancellation"] == raw["InvoiceNo"].str.starts_with("C").sum() == 9_288
    # The same filter written plainly keeps exactly the same lines.
    plain = raw.filter(
        ~pl.col("InvoiceNo").str.starts_with("C"),
        pl.col("Quantity") > 0,
        pl.col("UnitPrice") >= 0,
        ~pl.col("StockCode").is_in(list(NON_PRODUCT_CODES)),
        ~pl.col("StockCode").str.to_lowercase().str.starts_with("gift_"),
        pl.col("CustomerID").is_not_null(),
    )
    assert report.rows_kept == plain.height == events.height
    assert events["user_id"].null_count() == 0
    assert events["value"].sum() == pytest.approx((plain["Quantity"] * plain["UnitPrice"]).sum())
    assert set(events["event"].unique()) == {"purchase"}
    assert result.items is not None and result.users is not None
    items = result.items.collect()
    assert items.height == events["item_id"].n_unique()
    assert items.filter(pl.col("item_id") == "85123A")["description"].item() == (
        "WHITE HANGING HEART T-LIGHT HOLDER"
    )
    assert (
        result.users.collect().filter(pl.col("user_id") == "12347")["country"].item() == "Iceland"
    )


def test_online_retail_csv_reasons(tmp_path: Path) -> None:
    path = tmp_path / "retail.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
        "536366,22633,WARMER,2,2010-12-01 08:28:00,1.85,17850.0,United Kingdom\n"
        "C536379,22633,WARMER,-1,12/1/2010 9:41,1.85,14527,United Kingdom\n"
        "536380,22633,WARMER,-2,12/1/2010 9:41,1.85,14527,United Kingdom\n"
        "536381,POST,POSTAGE,1,12/1/2010 9:41,18.0,12583,France\n"
        "536382,22633,WARMER,1,12/1/2010 9:45,1.85,,United Kingdom\n"
        "536383,22633,WARMER,1,sometime,1.85,14527,United Kingdom\n"
        "536384,22633,WARMER,lots,12/1/2010 9:45,1.85,14527,United Kingdom\n"
    )
    events, report = read_events(path, "online-retail").collect()
    assert events["user_id"].to_list() == ["17850", "17850"]
    assert events["ts"].to_list() == [
        datetime(2010, 12, 1, 8, 26, tzinfo=UTC),
        datetime(2010, 12, 1, 8, 28, tzinfo=UTC),
    ]
    assert events["value"].to_list() == pytest.approx([6 * 2.55, 2 * 1.85])
    assert events["request_id"].to_list() == ["536365", "536366"]
    assert report.dropped == {
        "cancellation": 1,
        "missing_user_id": 1,
        "non_positive_quantity": 1,
        "non_product_line": 1,
        "unparsable_quantity": 1,
        "unparsable_ts": 1,
    }


def test_online_retail_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "retail.parquet"
    pl.DataFrame({"InvoiceNo": ["1"], "StockCode": ["a"]}).write_parquet(path)
    with pytest.raises(SchemaError, match=r"retail\.parquet.*'Description'"):
        read_events(path, "online-retail")


# --- ad logs ----------------------------------------------------------------------------------


def _criteo_line(label: str, ints: list[str], cats: list[str]) -> str:
    return "\t".join([label, *ints, *cats]) + "\n"


def test_criteo_impressions_and_clicks(tmp_path: Path) -> None:
    ints = [str(i) for i in range(13)]
    cats = [f"c{i}" for i in range(26)]
    path = tmp_path / "day_0.tsv"
    path.write_text(
        _criteo_line("1", ["", *ints[1:]], cats)
        + _criteo_line("0", ints, [*cats[:-1], ""])
        + _criteo_line("2", ints, cats)  # not a label
        + _criteo_line("0", ints, cats[:-1])  # a field short
        + _criteo_line("0", ["1.5", *ints[1:]], cats)  # not an integer
    )
    events, report = read_events(path, "criteo").collect()
    _assert_schema(events)
    assert report.rows_read == 5 and report.rows_kept == 2
    assert report.dropped == {"bad_label": 1, "malformed_line": 1, "unparsable_int_feature": 1}
    assert sorted(zip(events["request_id"], events["event"], strict=True)) == [
        ("0", "click"),
        ("0", "impression"),
        ("1", "impression"),
    ]
    impressions = events.filter(pl.col("event") == "impression").sort("request_id")
    assert impressions["I1"].to_list() == [None, "0"]
    assert impressions["C26"].to_list() == ["c25", None]
    # Row n is at n seconds: temporal splits keep the file's order.
    assert impressions["ts"].to_list() == [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
    ]
    with_ids = read_events(path, "criteo", user_column="C1", item_column="C2").collect()[0]
    assert set(with_ids["user_id"]) == {"c0"} and set(with_ids["item_id"]) == {"c1"}


def test_criteo_wrong_file_is_refused(datasets: Path) -> None:
    with pytest.raises(SchemaError, match=r"u\.data.*expected 40 fields"):
        read_events(datasets / "ml-100k" / "u.data", "criteo")


def test_talkingdata_sample(datasets: Path) -> None:
    events, report = read_events(datasets / "talkingdata-adtracking", "talkingdata").collect()
    _assert_schema(events)
    assert report.rows_read == report.rows_kept == 100_000
    counts = dict(events["event"].value_counts().iter_rows())
    assert counts == {"impression": 100_000, "click": 227}
    clicks = events.filter(pl.col("event") == "click")
    # Every click shares its impression's request, user, item and time.
    joined = clicks.join(events.filter(pl.col("event") == "impression"), on="request_id")
    assert (joined["user_id"] == joined["user_id_right"]).all()
    assert (joined["ts"] == joined["ts_right"]).all()
    assert set(events.columns) >= {"device", "os", "channel"}
