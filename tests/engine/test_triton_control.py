"""Model control of a Triton-layout repository, as Triton has it: `--model-control-mode explicit`
with `--load-model`, the repository index, load (with a configuration override) and unload RPCs
through tritonclient, version policies switched by a load, and hot reload of new versions and
edited config.pbtxt files."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
from click.testing import CliRunner
from tritonclient.utils import InferenceServerException

from engine.cli import serve
from engine.registry import ModelRegistry
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.test_scale_out import free_port
from tests.engine.test_scale_out import serve as serve_process
from tests.engine.triton_models import build_repository, save_model, versioned_graph


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return build_repository(tmp_path / "repo")


@pytest.fixture()
def explicit(repo: Path) -> Iterator[tuple[RunningServer, tg.InferenceServerClient]]:
    settings = Settings(
        repo=repo,
        port=0,
        grace_period_s=0,
        model_control_mode="explicit",
        load_models=["simple"],
    )
    running = start_server(settings)
    with tg.InferenceServerClient(f"127.0.0.1:{running.port}") as client:
        yield running, client
    running.stop(0)


def _versioned(client: tg.InferenceServerClient, version: str = "") -> int:
    tensor = tg.InferInput("IN", [1, 4], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.int32))
    return int(client.infer("versioned", [tensor], model_version=version).as_numpy("OUT")[0, 0])


def test_explicit_mode_loads_only_the_named_models(explicit: tuple) -> None:
    running, client = explicit
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert not client.is_model_ready("simple_string") and not client.is_model_ready("versioned")
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index["simple"] == "READY"
    assert index["simple_string"] == "UNAVAILABLE" and index["types_fp32"] == "UNAVAILABLE"
    assert running.registry.names() == ["simple"]


def test_load_and_unload(explicit: tuple) -> None:
    _, client = explicit
    client.load_model("versioned")
    assert client.is_model_ready("versioned") and _versioned(client) == 3
    client.unload_model("versioned")
    assert not client.is_model_ready("versioned")
    with pytest.raises(InferenceServerException, match="not loaded"):
        _versioned(client)
    with pytest.raises(InferenceServerException, match="failed to load"):
        client.load_model("wrong_model_name")
    assert client.is_server_live()


def test_load_with_a_config_override_then_back(explicit: tuple) -> None:
    """simple_grpc_model_control: a JSON config sent with the load replaces config.pbtxt."""
    _, client = explicit
    with pytest.raises(InferenceServerException, match="failed to load"):
        client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert client.get_model_config("simple").config.max_batch_size == 8  # still serving
    client.load_model("simple", config='{"max_batch_size":"16"}')
    assert client.get_model_config("simple").config.max_batch_size == 16
    rows = np.zeros((12, 16), np.int32)
    tensors = [tg.InferInput(n, [12, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for t in tensors:
        t.set_data_from_numpy(rows)
    assert client.infer("simple", tensors).as_numpy("OUTPUT0").shape == (12, 16)
    client.load_model("simple")  # no override: config.pbtxt again
    assert client.get_model_config("simple").config.max_batch_size == 8
    with pytest.raises(InferenceServerException, match="Invalid file path"):
        client.load_model("simple", config="{}", files={"file:" + "A" * 256: b"a"})


def test_version_policies_switched_by_load(explicit: tuple) -> None:
    _, client = explicit
    client.load_model("versioned", config=json.dumps({"version_policy": {"all": {}}}))
    assert client.get_model_metadata("versioned").versions == ["1", "2", "3"]
    assert [_versioned(client, v) for v in ("1", "2", "3", "")] == [1, 2, 3, 3]
    specific = {"version_policy": {"specific": {"versions": [1]}}}
    client.load_model("versioned", config=json.dumps(specific))
    assert client.get_model_metadata("versioned").versions == ["1"]
    assert _versioned(client) == 1 and not client.is_model_ready("versioned", "3")
    missing = {"version_policy": {"specific": {"versions": [7]}}}
    with pytest.raises(InferenceServerException, match=r"version_policy\.specific"):
        client.load_model("versioned", config=json.dumps(missing))
    assert _versioned(client) == 1  # the refused load left the serving version


def test_hot_reload_of_versions_and_config(repo: Path) -> None:
    registry = ModelRegistry(Settings(repo=repo))
    registry.load_all()
    assert registry.get("versioned").id.version == 3
    assert registry.get("versioned", 2).id.version == 2
    events = len(registry.events)
    assert registry.refresh() == []  # nothing changed on disk
    assert len(registry.events) == events  # and the refused configs were not tried again
    save_model(versioned_graph(4), repo / "versioned" / "4" / "model.onnx")
    assert "versioned" in registry.refresh()
    assert registry.get("versioned").id.version == 4
    assert registry.get("versioned", 3).id.version == 3
    with pytest.raises(Exception, match="version 2"):
        registry.get("versioned", 2)
    config = repo / "versioned" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 4", "max_batch_size: 2"))
    assert "versioned" in registry.refresh()
    assert registry.get("versioned").config.max_batch_size == 2
    config.write_text("max_batch_size: two")  # a broken edit: refused, the old one serves
    assert registry.refresh() == []
    assert registry.get("versioned").config.max_batch_size == 2
    state = next(s for s in registry.states() if s.name == "versioned")
    assert str(config) in state.last_error and "max_batch_size" in state.last_error


def test_cli_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("engine.server.serve_forever", seen.append)
    result = CliRunner().invoke(
        serve,
        [
            "--repo",
            str(tmp_path),
            "--model-control-mode",
            "explicit",
            "--load-model",
            "simple",
            "--load-model",
            "versioned",
            "--metrics-port",
            "-1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen[0].model_control_mode == "explicit"
    assert seen[0].load_models == ["simple", "versioned"]


def test_reachrank_serve_explicit_mode_process(repo: Path) -> None:
    """The real command: `reachrank serve --model-control-mode explicit --load-model simple`."""
    port = free_port()
    with serve_process(
        repo, port, "--model-control-mode", "explicit", "--load-model", "simple"
    ) as proc:
        with tg.InferenceServerClient(f"127.0.0.1:{port}") as client:
            assert client.is_model_ready("simple") and not client.is_model_ready("simple_string")
            client.load_model("simple_string")
            assert client.is_model_ready("simple_string")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
