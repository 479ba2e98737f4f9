"""The `reachrank` root command and `reachrank client ...` against the fake servicer."""

from __future__ import annotations

import json

import click
import grpc
from click.testing import CliRunner

from clients.cli import COMMANDS, LazyCommand, LazyGroup, main

from .conftest import FakeServer


def test_recommend_prints_a_table(fake_server: FakeServer) -> None:
    result = CliRunner().invoke(
        main,
        [
            "client",
            "recommend",
            "--target",
            fake_server.target,
            "--user",
            "u3",
            "-k",
            "2",
            "--context",
            "device=mobile",
            "--category",
            "books",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["rank", "item", "score", "retrieval", "category", "price"]
    assert lines[2].split()[:2] == ["1", "i0"]
    assert lines[3].split()[:2] == ["2", "i1"]
    assert "strategy: personalised" in result.output
    request = fake_server.servicer.calls[-1].request
    assert dict(request.context) == {"device": "mobile"}
    assert list(request.filters.categories) == ["books"]


def test_recommend_json(fake_server: FakeServer) -> None:
    result = CliRunner().invoke(
        main,
        [
            "client",
            "recommend",
            "--target",
            fake_server.target,
            "--user",
            "u3",
            "-k",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [item["item_id"] for item in payload["items"]] == ["i0", "i1"]
    assert payload["models"][0]["name"] == "ctr"


def test_rank_ads_json_lists_winners(fake_server: FakeServer) -> None:
    result = CliRunner().invoke(
        main,
        [
            "client",
            "rank-ads",
            "--target",
            fake_server.target,
            "--user",
            "u1",
            "--ad",
            "a1:0.5",
            "--ad",
            "a2:2",
            "--ad",
            "ad:with:colon:1.5",
            "--slots",
            "2",
            "--reserve",
            "0.6",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [ad["ad_id"] for ad in payload["winners"]] == ["a2", "ad:with:colon"]
    assert payload["below_reserve"] == 1


def test_rank_ads_table(fake_server: FakeServer) -> None:
    result = CliRunner().invoke(
        main,
        [
            "client",
            "rank-ads",
            "--target",
            fake_server.target,
            "--user",
            "u1",
            "--ad",
            "a1:1",
            "--ad",
            "a2:2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:4]]
    assert [row[:2] for row in rows] == [["1", "a2"], ["-", "a1"]]


def test_bad_ad_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["client", "rank-ads", "--user", "u1", "--ad", "a1"])
    assert result.exit_code == 2
    assert "AD_ID:BID" in result.output


def test_health(fake_server: FakeServer) -> None:
    ok = CliRunner().invoke(main, ["client", "health", "--target", fake_server.target])
    assert (ok.exit_code, ok.output.strip()) == (0, "SERVING")
    fake_server.set_serving(False)
    down = CliRunner().invoke(main, ["client", "health", "--target", fake_server.target, "--json"])
    assert down.exit_code == 1
    assert json.loads(down.output) == {"status": "NOT_SERVING"}


def test_score_reads_npy_inputs(fake_server: FakeServer, tmp_path) -> None:
    import numpy as np

    path = tmp_path / "dense.npy"
    np.save(path, np.ones((3, 4), np.float32))
    result = CliRunner().invoke(
        main,
        [
            "client",
            "score",
            "--target",
            fake_server.target,
            "--model",
            "m",
            "--input",
            f"dense={path}",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["score"] == [4.0, 4.0, 4.0]


def test_rpc_error_is_one_line_not_a_traceback(fake_server: FakeServer) -> None:
    fake_server.servicer.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, "k must be in 1..1000")
    result = CliRunner().invoke(
        main, ["client", "recommend", "--target", fake_server.target, "--user", "u", "-k", "0"]
    )
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
