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
