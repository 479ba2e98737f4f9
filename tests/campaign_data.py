"""One trained campaign set-up per test process, shared by the training and engine tests: a
simulated marketplace, the trainer's profiles bundle of it, a randomised campaign over its
customers with known uplift, and the uplift bundle the real trainer fits on it."""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from training.pipeline import Dataset, TrainConfig, train_profiles
from training.simulate import SimulatorConfig, write_simulation
from training.uplift.data import CampaignSpec, campaign_data, read_campaign
from training.uplift.learners import MLPConfig
from training.uplift.simulate import CampaignConfig, write_campaign
from training.uplift.train import UpliftConfig, train_uplift

SIM = SimulatorConfig(users=6000, items=60, days=7, seed=23)
CAMPAIGN = CampaignConfig(seed=23, train_share=0.7)
SPEC = CampaignSpec("treatment", "control", "converted", "spend")
UPLIFT = UpliftConfig(
    learners=("response", "t_learner", "tarnet", "s_learner_gbdt"), mlp=MLPConfig(seed=0), bags=2
)


@dataclass(frozen=True)
class CampaignSetup:
    sim_dir: Path
    repo: Path
    report: dict
    treatments: tuple[str, ...]

    def truth_of(self, user_ids: list[str]) -> np.ndarray:
        """[n, T] true expected uplift of each treatment for these users."""
        truth = pl.read_parquet(self.sim_dir / "campaign_truth.parquet")
        rows = pl.DataFrame({"user_id": user_ids}).join(truth, on="user_id", how="left")
        return rows.select(f"uplift_{t}" for t in self.treatments).to_numpy()


@functools.cache
def campaign_setup() -> CampaignSetup:
    root = Path(tempfile.mkdtemp(prefix="reachrank-campaign-"))
    sim_dir, repo = root / "sim", root / "repo"
    write_simulation(sim_dir, SIM)
    write_campaign(sim_dir, CAMPAIGN)
    data = Dataset(
        events=pl.scan_parquet(sim_dir / "events.parquet"),
        items=pl.read_parquet(sim_dir / "items.parquet"),
        users=pl.read_parquet(sim_dir / "users.parquet"),
    )
    train_profiles(data, repo, TrainConfig(progress=False))
    campaign = campaign_data(read_campaign(sim_dir / "campaign.parquet", SPEC), SPEC)
    report = train_uplift(campaign, repo, UPLIFT)
    return CampaignSetup(sim_dir, repo, report, campaign.treatments)


def cleanup() -> None:
    if campaign_setup.cache_info().currsize:
        shutil.rmtree(campaign_setup().sim_dir.parent, ignore_errors=True)
