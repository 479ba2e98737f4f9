"""The train command's model choices match the registries it mirrors (kept literal so the
command line starts without importing torch), and bad choices fail before any work."""

from __future__ import annotations

import polars as pl
from click.testing import CliRunner

from training import cli
from training.models.ctr import CTR_MODELS
from training.retrieval import RETRIEVAL_MODELS, RetrievalConfig


def test_choices_match_the_registries() -> None:
    assert sorted(cli.CTR_MODEL_NAMES) == sorted(CTR_MODELS)
    assert cli.RETRIEVAL_MODELS == RETRIEVAL_MODELS
    defaults = RetrievalConfig()
    assert (
        defaults.mf_epochs,
        defaults.mf_dim,
        defaults.ials_dim,
    ) == (cli.MF_EPOCHS, cli.MF_DIM, cli.IALS_DIM)


def test_unknown_models_are_refused(sim_dir, tmp_path) -> None:
    runner = CliRunner()
    args = ["--events", str(sim_dir), "--format", "simulator", "--out", str(tmp_path / "r")]
    result = runner.invoke(cli.train, [*args, "--ctr-models", "fm,xgboost"])
    assert result.exit_code != 0 and "xgboost" in result.output
    result = runner.invoke(cli.train, [*args, "--ctr-model", "fm", "--ctr-models", "lr"])
    assert result.exit_code != 0 and "not both" in result.output
    assert not (tmp_path / "r").exists()


def _configs(monkeypatch, runner: CliRunner, args: list[str]) -> list:
    import training.pipeline

    seen = []

    def fake_train_all(data, out, config):
        seen.append(config)
        return {"models": {}}

    monkeypatch.setattr(training.pipeline, "train_all", fake_train_all)
    result = runner.invoke(cli.train, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    return seen


def test_history_features_default_off_for_logs_that_date_clicks_by_impression(
    monkeypatch, sim_dir, tmp_path
) -> None:
    runner = CliRunner()
    out = ["--out", str(tmp_path / "r")]
    (sim,) = _configs(
        monkeypatch, runner, ["--events", str(sim_dir), "--format", "simulator", *out]
    )
    assert sim.history and sim.position_bias
    talking = tmp_path / "talking.csv"
    talking.write_text(
        "ip,app,device,os,channel,click_time,attributed_time,is_attributed\n"
        "1,2,1,13,497,2017-11-07 09:30:38,,0\n"
        "1,3,1,13,259,2017-11-07 09:31:38,2017-11-07 10:00:00,1\n"
    )
    args = ["--events", str(talking), "--format", "talkingdata", *out]
    (ads,) = _configs(monkeypatch, runner, args)
    assert not ads.history
    (forced,) = _configs(monkeypatch, runner, [*args, "--history", "--no-position-bias"])
    assert forced.history and not forced.position_bias


def _log(path, rows: list[str]) -> str:
    path.write_text("\n".join(["user_id,item_id,ts,event,request_id", *rows]) + "\n")
    return str(path)


def test_user_errors_are_one_line_and_a_non_zero_exit(tmp_path) -> None:
    runner = CliRunner()
    out = ["--out", str(tmp_path / "r"), "--quiet"]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("customer,product,when\nc1,p1,2024-01-01\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("user_id,item_id,ts,event\n")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file at all")
    for path, says in (
        (wrong, "wrong.csv: missing required column(s) ['user_id', 'item_id', 'ts', 'event']"),
        (empty, "cannot split an empty event log"),
        (junk, "junk.parquet: cannot read it as --format events"),
    ):
        result = runner.invoke(cli.train, ["--events", str(path), *out])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert says in line
    result = runner.invoke(
        cli.train,
        ["--events", str(wrong), *out, "--test-fraction", "0.6", "--valid-fraction", ".5"],
    )
    assert result.exit_code == 2 and "leave some training data" in result.output
    assert not (tmp_path / "r").exists()


def test_a_tiny_log_trains_what_it_can(tmp_path, caplog) -> None:
    """One user left after bad rows: profiles ship without K-means, retrieval and CTR are
    skipped, each with a warning that names what it needs."""
    rows = [f"u1,i{d % 4},2024-01-{d:02d}T10:00:00,click,r{d}" for d in range(1, 20)]
    rows += ["u2,,2024-01-03T10:00:00,click,", "u3,i1,yesterday,click,"]
    # Impressions, but no click after the test cut: nothing to score a CTR model on.
    rows += [f"u1,i{d % 4},2024-01-{d:02d}T09:00:00,impression,r{d}" for d in range(1, 10)]
    repo = tmp_path / "r"
    result = CliRunner().invoke(
        cli.train, ["--events", _log(tmp_path / "tiny.csv", rows), "--out", str(repo), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "dropped 1: missing_item_id" in result.output
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("K-means" in w and "needs 3 users" in w for w in warnings), warnings
    assert any("CTR" in w and "with and without clicks" in w for w in warnings), warnings
    assert any("retrieval" in w and "at least one user" in w for w in warnings), warnings
    profiles = pl.read_parquet(repo / "profiles" / "1" / "profiles.parquet")
    assert profiles["user_id"].to_list() == ["u1"] and profiles["cluster"].null_count() == 1
    assert not (repo / "ctr").exists() and not (repo / "retrieval").exists()
    assert "no K-means segments" in (repo / "report.md").read_text()


def test_no_pcvr_ships_a_pctr_only_graph(monkeypatch, sim_dir, tmp_path) -> None:
    """The simulated log has purchases, so pCVR trains by default; --no-pcvr leaves the
    conversion model out: the CTR graph has the one output pctr and the report no cvr."""
    import json

    import onnxruntime as ort

    runner = CliRunner()
    args = ["--events", str(sim_dir), "--format", "simulator", "--out", str(tmp_path / "c")]
    (default,) = _configs(monkeypatch, runner, args)
    assert default.cvr.enabled
    monkeypatch.undo()
    repo = tmp_path / "r"
    result = runner.invoke(
        cli.train,
        [
            *["--events", str(sim_dir), "--format", "simulator", "--out", str(repo)],
            *["--ctr-model", "lr", "--retrieval-models", "trending", "--ctr-epochs", "1"],
            *["--in-memory", "--no-pcvr", "--quiet"],
        ],
    )
    assert result.exit_code == 0, result.output
    (bundle,) = (repo / "ctr").iterdir()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [o["name"] for o in manifest["onnx"]["outputs"]] == ["pctr"]
    session = ort.InferenceSession(str(bundle / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["pctr"]
    assert "cvr" not in manifest
    assert "cvr" not in json.loads((repo / "report.json").read_text())
