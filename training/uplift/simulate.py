"""Randomised campaigns over the simulated marketplace's customers, with heterogeneous treatment
effects and known ground truth, so tests can check how much of the oracle's incremental
conversions a plan captures.

Each customer belongs to one hidden type, drawn from probabilities that depend on their profile
(the marketplace's RFM features and demographics, as the engine serves them):

- *sure things* (frequent, recent, big spenders) buy whether contacted or not;
- *lost causes* (long inactive) buy neither way;
- *persuadables* (younger customers, some regions) buy much more when contacted; which offer
  works depends on them: ``email`` for customers whose top category is a considered purchase,
  ``discount`` for low spenders;
- *sleeping dogs* (older, heavily exposed customers) buy *less* when contacted.

The truth per customer is the expected conversion rate without contact and the expected uplift
of each treatment given the profile (the type probabilities averaged out): the best any model
of these features can know. The campaign gave each customer a uniformly random arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

# Features of the campaign file: the served profile's columns the effects depend on, and noise.
FEATURES: tuple[str, ...] = (
    "frequency",
    "monetary",
    "recency_days",
    "n_impression",
    "n_click",
    "days_since_first_seen",
    "top_category",
    "age_bucket",
    "gender",
    "region",
)
TYPES: tuple[str, ...] = ("sure_thing", "lost_cause", "persuadable", "sleeping_dog")
EMAIL_CATEGORIES = ("course", "book", "electronics", "home")


@dataclass(frozen=True)
class CampaignConfig:
    treatments: tuple[str, ...] = ("email", "discount")
    control: str = "control"
    seed: int = 17
    # Share of customers whose campaign results are written (the rest: customers.parquet, to
    # plan for, without outcomes).
    train_share: float = 0.5
    # Type logits are multiplied by this: higher, more customers clearly of one type.
    sharpness: float = 1.6


def _z(x: np.ndarray) -> np.ndarray:
    s = x.std()
    return (x - x.mean()) / (s if s > 0 else 1.0)


def _truth(profiles: pl.DataFrame, config: CampaignConfig) -> tuple[np.ndarray, np.ndarray]:
    """(type probabilities [n, 4], conversion probability [n, 4 types, 1 + treatments])."""
    num = profiles.select(
        pl.col("frequency", "monetary", "n_impression").cast(pl.Float64).fill_null(0.0),
        pl.col("recency_days").cast(pl.Float64),
    )
    recency = num["recency_days"].to_numpy()
    recency = np.where(np.isfinite(recency), recency, np.nanmax(recency, initial=0.0) + 1.0)
    zf = _z(np.log1p(num["frequency"].to_numpy()))
    zm = _z(np.log1p(num["monetary"].to_numpy()))
    zi = _z(np.log1p(num["n_impression"].to_numpy()))
    zr = _z(recency)
    age = profiles["age_bucket"].fill_null("").to_numpy()
    old = np.isin(age, ["45-54", "55+"]).astype(float)
    young = np.isin(age, ["18-24", "25-34"]).astype(float)
    region = np.isin(profiles["region"].fill_null("").to_numpy(), ["north", "west"]).astype(float)
    logits = np.stack(
        [
            1.6 * zf + 0.8 * zm - 1.2 * zr - 0.5,  # sure thing
            1.5 * zr - 0.3,  # lost cause
            1.2 * young + 0.8 * region - 0.6 * zf,  # persuadable
            1.5 * old + 1.0 * zi - 1.2,  # sleeping dog
        ],
        axis=1,
    )
    logits = logits * config.sharpness
    types = np.exp(logits - logits.max(axis=1, keepdims=True))
    types /= types.sum(axis=1, keepdims=True)
    n = profiles.height
    arms = 1 + len(config.treatments)
    p = np.zeros((n, len(TYPES), arms))
    considered = np.isin(profiles["top_category"].fill_null("").to_numpy(), EMAIL_CATEGORIES)
    effect = {
        "email": np.where(considered, 0.30, 0.08),
        "discount": np.where(zm < 0, 0.35, 0.12),
    }
    p[:, 0, 0], p[:, 1, 0], p[:, 2, 0], p[:, 3, 0] = 0.50, 0.02, 0.05, 0.30
    for a, name in enumerate(config.treatments, start=1):
        persuade = effect.get(name, np.full(n, 0.15))
        p[:, 0, a] = 0.51 + 0.01 * a
        p[:, 1, a] = 0.025
        p[:, 2, a] = 0.05 + persuade
        p[:, 3, a] = 0.15 + 0.04 * a
    return types, p


def simulate_campaign(
    profiles: pl.DataFrame, config: CampaignConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(campaign results, customers to plan for, ground truth) for the given customer profiles
    (``training.profiles.user_profiles`` output joined with the users' attributes)."""
    rng = np.random.default_rng(config.seed)
    profiles = profiles.sort("user_id")
    types, p = _truth(profiles, config)
    n = profiles.height
    arms = (config.control, *config.treatments)
    arm = rng.integers(0, len(arms), n)
    kind = (rng.random(n)[:, None] > np.cumsum(types, axis=1)).sum(axis=1).clip(0, len(TYPES) - 1)
    converted = rng.random(n) < p[np.arange(n), kind, arm]
    zm = _z(np.log1p(profiles["monetary"].cast(pl.Float64).fill_null(0.0).to_numpy()))
    spend = np.exp(rng.normal(3.2 + 0.4 * zm, 0.5)) * np.where(
        np.asarray(arms, dtype=object)[arm] == "discount", 0.85, 1.0
    )
    expected = np.einsum("nk,nka->na", types, p)
    features = profiles.select("user_id", *FEATURES)
    in_train = rng.random(n) < config.train_share
    campaign = features.with_columns(
        pl.Series("treatment", np.asarray(arms)[arm]),
        pl.Series("converted", converted.astype(np.int8)),
        pl.Series("spend", np.round(np.where(converted, spend, 0.0), 2)),
    ).filter(pl.Series(in_train))
    customers = features.filter(pl.Series(~in_train))
    truth = pl.DataFrame(
        {
            "user_id": profiles["user_id"],
            "type": np.asarray(TYPES)[kind],
            "in_campaign": in_train,
            "p_control": expected[:, 0],
            **{
                f"uplift_{t}": expected[:, a] - expected[:, 0]
                for a, t in enumerate(config.treatments, start=1)
            },
        }
    )
    return campaign, customers, truth


def oracle_conversions(truth: np.ndarray, fraction: float) -> float:
    """Expected incremental conversions of the best plan contacting ``fraction`` of the
    customers: the top uplifts, each customer's best treatment, positive ones only."""
    best = truth.max(axis=1)
    k = round(fraction * len(best))
    top = np.sort(best)[::-1][:k]
    return float(top[top > 0].sum())


def write_campaign(sim_dir: Path, config: CampaignConfig) -> dict[str, int]:
    """Campaign files beside a marketplace simulation in ``sim_dir``: ``campaign.parquet``,
    ``customers.parquet`` and ``campaign_truth.parquet``; the profiles are computed as of the
    end of its event log, as the trainer's profiles bundle is."""
    from training.profiles import user_profiles

    events = pl.scan_parquet(sim_dir / "events.parquet")
    as_of = events.select(pl.col("ts").max()).collect().item()
    profiles = user_profiles(events, as_of, items=pl.scan_parquet(sim_dir / "items.parquet"))
    users = pl.read_parquet(sim_dir / "users.parquet")
    profiles = profiles.join(users, on="user_id", how="left")
    campaign, customers, truth = simulate_campaign(profiles, config)
    campaign.write_parquet(sim_dir / "campaign.parquet")
    customers.write_parquet(sim_dir / "customers.parquet")
    truth.write_parquet(sim_dir / "campaign_truth.parquet")
    return {"campaign": campaign.height, "customers": customers.height}
