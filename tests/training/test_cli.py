"""The train command's model choices match the registries it mirrors (kept literal so the
command line starts without importing torch), and bad choices fail before any work."""

from __future__ import annotations

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
