"""The `reachrank` root command and `reachrank client ...` against the fake servicer."""

from __future__ import annotations

import json
from pathlib import Path

import click
import grpc
import numpy as np
import pytest
from click.testing import CliRunner, Result

from clients.cli import COMMANDS, LazyCommand, LazyGroup, main

from .conftest import FakeServer


def client_cli(fake: FakeServer, command: str, *args: str) -> Result:
    """`reachrank client COMMAND --target <fake> ARGS...`"""
    return CliRunner().invoke(main, ["client", command, "--target", fake.target, *args])


def table_rows(output: str) -> list[list[str]]:
    """Cells of a printed table, header and rule left out."""
    return [line.split() for line in output.splitlines()[2:]]


def test_recommend_prints_a_table(fake_server: FakeServer) -> None:
    result = client_cli(
        fake_server, "recommend", "--user", "u3", "-k", "2", "--context", "device=mobile",
        "--category", "books", "--min-price", "3", "--max-per-category", "2", "--mmr", "0.3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == [
        "rank", "item", "score", "retrieval", "category", "price",
    ]  # fmt: skip
    assert [row[:2] for row in table_rows(result.output)[:2]] == [["1", "i0"], ["2", "i1"]]
    assert "strategy: personalised" in result.output
    assert "experiment: exp1/control" in result.output
    request = fake_server.servicer.calls[-1].request
    assert request.diversity.max_per_category == 2
    assert request.diversity.mmr_lambda == pytest.approx(0.3)
    assert dict(request.context) == {"device": "mobile"}
    assert list(request.filters.categories) == ["books"]
    assert request.filters.min_price == 3.0


def test_recommend_json(fake_server: FakeServer) -> None:
    result = client_cli(fake_server, "recommend", "--user", "u3", "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [item["item_id"] for item in payload["items"]] == ["i0", "i1"]
    assert payload["models"][0]["name"] == "ctr"


def test_similar(fake_server: FakeServer) -> None:
    result = client_cli(fake_server, "similar", "--item", "i4", "-k", "2", "--category", "toys")
    assert result.exit_code == 0, result.output
    assert [row[1] for row in table_rows(result.output)[:2]] == ["i4-like-0", "i4-like-1"]
    assert list(fake_server.servicer.calls[-1].request.filters.categories) == ["toys"]


def test_audience_json(fake_server: FakeServer) -> None:
    result = client_cli(
        fake_server, "audience", "--item", "i1", "--item", "i2", "-n", "3", "--segment", "champions", "--json"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [user["user_id"] for user in payload["users"]] == ["u0", "u1", "u2"]
    assert payload["eligible_users"] == 1000
    request = fake_server.servicer.calls[-1].request
    assert (list(request.item_ids), list(request.segments)) == (["i1", "i2"], ["champions"])


def test_audience_table(fake_server: FakeServer) -> None:
    result = client_cli(fake_server, "audience", "--item", "i1", "-n", "2")
    assert result.exit_code == 0, result.output
    assert [row[:2] for row in table_rows(result.output)[:2]] == [["1", "u0"], ["2", "u1"]]
    assert "eligible users: 1,000" in result.output


def test_profile(fake_server: FakeServer) -> None:
    known = client_cli(fake_server, "profile", "--user", "u1")
    assert known.exit_code == 0, known.output
    assert ["rfm_segment", "loyal"] in table_rows(known.output)
    assert ["frequency", "7"] in table_rows(known.output)
    unknown = client_cli(fake_server, "profile", "--user", "nobody")
    assert "unknown user" in unknown.output


def test_rank_ads_json_lists_winners(fake_server: FakeServer) -> None:
    result = client_cli(
        fake_server, "rank-ads", "--user", "u1", "--ad", "a1:0.5", "--ad", "a2:2",
        "--ad", "ad:with:colon:1.5", "--slots", "2", "--reserve", "0.6", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [ad["ad_id"] for ad in payload["winners"]] == ["a2", "ad:with:colon"]
    assert payload["below_reserve"] == 1


def test_rank_ads_table(fake_server: FakeServer) -> None:
    result = client_cli(fake_server, "rank-ads", "--user", "u1", "--ad", "a1:1", "--ad", "a2:2")
    assert result.exit_code == 0, result.output
    assert [row[:2] for row in table_rows(result.output)[:2]] == [["1", "a2"], ["-", "a1"]]


def test_bad_ad_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["client", "rank-ads", "--user", "u1", "--ad", "a1"])
    assert result.exit_code == 2
    assert "AD_ID:BID" in result.output


def test_health(fake_server: FakeServer) -> None:
    ok = client_cli(fake_server, "health")
    assert (ok.exit_code, ok.output.strip()) == (0, "SERVING")
    fake_server.set_serving(False)
    down = client_cli(fake_server, "health", "--json")
    assert down.exit_code == 1
    assert json.loads(down.output) == {"status": "NOT_SERVING"}


def test_token_from_the_environment(fake_server: FakeServer) -> None:
    result = CliRunner(
        env={"REACHRANK_TOKEN": "env-token", "REACHRANK_TARGET": fake_server.target}
    ).invoke(main, ["client", "profile", "--user", "u1"])
    assert result.exit_code == 0, result.output
    assert fake_server.servicer.calls[-1].metadata["authorization"] == "Bearer env-token"


def test_score_reads_npy_inputs(fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "dense.npy"
    np.save(path, np.ones((3, 4), np.float32))
    result = client_cli(fake_server, "score", "--model", "m", "--input", f"dense={path}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["score"] == [4.0, 4.0, 4.0]


def test_rpc_error_is_one_line_not_a_traceback(fake_server: FakeServer) -> None:
    fake_server.servicer.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, "k must be in 1..1000")
    result = client_cli(fake_server, "recommend", "--user", "u", "-k", "0")
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT: k must be in 1..1000" in result.output
    assert "Traceback" not in result.output


def test_root_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_missing_extra_prints_install_hint() -> None:
    @click.group(
        cls=LazyGroup, lazy={"serve": LazyCommand("no_such_pkg_xyz.cli:serve", "Serve.", "serve")}
    )
    def root() -> None:
        pass

    result = CliRunner().invoke(root, ["serve", "--repo", "model_repo", "--port", "1"])
    assert result.exit_code == 1
    assert "pip install 'reachrank[serve]'" in result.output
    assert "no_such_pkg_xyz" in result.output


def test_lazy_command_loads_its_target() -> None:
    @click.group(
        cls=LazyGroup, lazy={"client": LazyCommand("clients.commands:client", "Call.", None)}
    )
    def root() -> None:
        pass

    result = CliRunner().invoke(root, ["client", "--help"])
    assert result.exit_code == 0
    assert "rank-ads" in result.output


def test_models_and_loading(fake_server: FakeServer) -> None:
    listed = client_cli(fake_server, "models")
    assert listed.exit_code == 0, listed.output
    assert [row[:4] for row in table_rows(listed.output)] == [
        ["ctr", "ctr", "2", "SERVING"], ["retrieval", "retrieval", "2", "SERVING"],
    ]  # fmt: skip
    loaded = client_cli(fake_server, "load-model", "ctr", "--version", "1", "--json")
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.output)["policy"] == "pinned:1"
    unloaded = client_cli(fake_server, "unload-model", "retrieval")
    assert table_rows(unloaded.output)[0][:4] == ["retrieval", "retrieval", "-", "UNLOADED"]
