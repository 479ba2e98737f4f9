"""bench.peers' helpers that need no server: the manifest, the ModelConfig bytes, /proc CPU,
failure reasons and the table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import peers


def write_manifest(repo: Path, version: int) -> None:
    folder = repo / "ctr" / str(version)
    folder.mkdir(parents=True)
    onnx = {
        "file": "model.onnx",
        "inputs": [
            {"name": "cat", "dtype": "int64", "shape": [-1, 8]},
            {"name": "num", "dtype": "float32", "shape": [-1, 7]},
        ],
        "outputs": [{"name": "pctr", "dtype": "float32", "shape": [-1]}],
    }
    (folder / "manifest.json").write_text(json.dumps({"name": "ctr", "onnx": onnx}))


def test_load_model_takes_the_latest_version(tmp_path: Path) -> None:
    for version in (2, 10):
        write_manifest(tmp_path, version)
    (tmp_path / "ctr" / "items.parquet").touch()
    model = peers.load_model(tmp_path, "ctr")
    assert model.version == 10
    assert model.path == tmp_path / "ctr" / "10" / "model.onnx"
    assert [(t.name, t.dtype, t.dims) for t in model.inputs] == [
        ("cat", "int64", (8,)),
        ("num", "float32", (7,)),
    ]
    assert model.output == peers.TensorSpec("pctr", "float32", ())
    zeros = peers.zero_inputs(model, 3)
    assert zeros["cat"].shape == (3, 8) and zeros["num"].dtype.name == "float32"


def test_model_config_bytes_parse_as_triton_config(tmp_path: Path) -> None:
    pb = pytest.importorskip("tritonclient.grpc.service_pb2")
    write_manifest(tmp_path, 1)
    model = peers.load_model(tmp_path, "ctr")
    reply = pb.ModelConfigResponse.FromString(peers.model_config_bytes(model, 4096))
    assert reply.config.max_batch_size == 4096
    assert [(i.name, list(i.dims)) for i in reply.config.input] == [("cat", [8]), ("num", [7])]
    (out,) = reply.config.output
    assert out.name == "pctr" and list(out.dims) == [1] and out.HasField("reshape")


def test_process_tree_cpu_counts_this_process() -> None:
    before = peers.process_tree_cpu_s(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert peers.process_tree_cpu_s(os.getpid()) > before
    assert peers.process_tree_cpu_s(2**22 + 12345) == 0.0  # no such process


def test_failure_reason_prefers_the_last_error_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("starting\nTraceback (most recent call last):\nValueError: bad port\nbye\n")
    assert peers.failure_reason(log) == "ValueError: bad port"
    log.write_text("WARNING: Location 'x' is ignored\none\ntwo\n")
    assert peers.failure_reason(log) == "one / two"
    assert peers.failure_reason(tmp_path / "missing.log") == "(no output)"


def measurement(rate: float, cpu: float, p99: float) -> peers.Measurement:
    return peers.Measurement(rate, 100, 1.0, p99, cpu, 1.0, 3.0, 1.0)


def test_table_shows_medians_errors_and_failed_peers() -> None:
    ours = peers.Result("reachrank", "ReachRank")
    ours.levels["b1-c8"] += [measurement(1000, 700, 10.0), measurement(1200, 900, 12.0)]
    ours.errors["b1-c32"].append("perf_analyzer: boom | crash")
    failed = peers.Result("kserve", "KServe 0.21", failure="install failed: no wheel")
    lines = peers.table([ours, failed]).splitlines()
    assert lines[0] == "| batch | in flight | ReachRank | KServe 0.21 |"
    assert lines[2] == "| 1 | 8 | 1,100 (800 µs) 11.0 | failed: install failed: no wheel |"
    assert lines[3].startswith("| 1 | 32 | error: perf_analyzer: boom / crash |")
    assert len(lines) == 2 + len(peers.BATCHES) * len(peers.CONCURRENCY)


def test_spread_is_the_range_of_the_rounds_over_their_median() -> None:
    ours = peers.Result("reachrank", "ReachRank")
    ours.levels["b1-c8"] += [measurement(1000, 700, 10.0), measurement(1200, 910, 12.0)]
    ours.levels["b1-c32"].append(measurement(1000, 700, 10.0))
    lines = peers.spread_table([ours]).splitlines()
    assert lines[2] == "| 1 | 8 | 18 / 26 / 18 % |"  # 200/1100, 210/805, 2/11
    assert lines[3] == "| 1 | 32 | - |"  # one round: no spread


def test_before_serves_reachrank_from_another_checkout(tmp_path: Path) -> None:
    this = peers.reachrank_launch(tmp_path / "repo")
    assert Path(this.command[0]).name == "reachrank"
    other = peers.reachrank_launch(tmp_path / "repo", tmp_path / "old")
    assert other.command[0] == peers.sys.executable
    assert other.command[3:5] == ["serve", "--repo"]
    assert other.env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "old")
