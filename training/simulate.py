"""A marketplace simulator: users, items and sessions with a known ground-truth click model.

It is ReachRank's embedded demo data and the yardstick of the trainer: the click
probability of every impression is known, so tests can compare what a model learned with
the truth (the oracle's AUC is the ceiling any CTR model can reach on the same rows).

The ground truth (examination hypothesis with position bias):

    relevance(u, i, device) = sigmoid(bias + affinity * <taste_u, latent_i> + quality_i
                                      + device_effect[device])
    P(click | shown at position p) = examination[p] * relevance
    P(purchase | click) = sigmoid(purchase_bias + affinity * <taste_u, latent_i>
                                  - price_sensitivity * log1p(price_i))

Slates are logged by a previous policy that mixes popularity with a noisy view of the
user's taste (as production logs are), sampled without replacement with the Gumbel top-k
trick. Output is deterministic for a seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

CATEGORIES: tuple[str, ...] = (
    "course",
    "book",
    "electronics",
    "fashion",
    "home",
    "sports",
    "travel",
    "grocery",
)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
AGE_BUCKETS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS: tuple[str, ...] = ("f", "m", "x")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")

# Log-price mean per category (so price carries category information, as in real catalogues).
_CATEGORY_LOG_PRICE = np.array([3.5, 2.7, 5.0, 3.8, 4.0, 3.6, 6.0, 1.5])


@dataclass(frozen=True)
class SimulatorConfig:
    """Size and behaviour of the simulated marketplace."""

    users: int = 2000
    items: int = 400
    days: int = 30
    seed: int = 7
    dim: int = 8
    sessions_per_user_day: float = 0.35
    slate_size: int = 8
    start: str = "2026-01-01T00:00:00+00:00"
    # Ground-truth parameters.
    bias: float = -1.8
    affinity: float = 1.6
    quality_scale: float = 0.5
    device_effect: tuple[float, ...] = (0.15, 0.0, -0.2)
    examination_decay: float = 0.65
    purchase_bias: float = 0.0
    price_sensitivity: float = 0.35
    # How much the logging policy knows about tastes (0 = popularity only).
    policy_personalisation: float = 0.6
    chunk_sessions: int = 20000


@dataclass
class GroundTruth:
    """The hidden parameters that generated the log."""

    config: SimulatorConfig
    user_taste: np.ndarray  # [users, dim]
    item_latent: np.ndarray  # [items, dim]
    item_quality: np.ndarray  # [items]
    item_price: np.ndarray  # [items]
    examination: np.ndarray  # [slate_size], index = position - 1
    device_effect: np.ndarray = field(default_factory=lambda: np.zeros(len(DEVICES)))

    def relevance(self, user: np.ndarray, item: np.ndarray, device: np.ndarray) -> np.ndarray:
        """P(click | examined) for arrays of user, item and device indices."""
        c = self.config
        dot = np.einsum("nd,nd->n", self.user_taste[user], self.item_latent[item])
        logit = c.bias + c.affinity * dot + self.item_quality[item] + self.device_effect[device]
        return _sigmoid(logit)

    def click_probability(
        self, user: np.ndarray, item: np.ndarray, position: np.ndarray, device: np.ndarray
    ) -> np.ndarray:
        """P(click) of an impression at a 1-based position: the oracle pCTR."""
        return self.examination[np.asarray(position) - 1] * self.relevance(user, item, device)

    def purchase_probability(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """P(purchase | click) for arrays of user and item indices: the oracle pCVR (it does
        not depend on the position or the device)."""
        c = self.config
        dot = np.einsum("nd,nd->n", self.user_taste[user], self.item_latent[item])
        return _sigmoid(
            c.purchase_bias
            + c.affinity * dot
            - c.price_sensitivity * np.log1p(self.item_price[item])
        )

    def conversion_probability(
        self, user: np.ndarray, item: np.ndarray, position: np.ndarray, device: np.ndarray
    ) -> np.ndarray:
        """P(click and purchase) of an impression: the oracle pCTCVR = pCTR x pCVR."""
        return self.click_probability(user, item, position, device) * self.purchase_probability(
            user, item
        )

    def save(self, directory: Path) -> None:
        np.savez(
            directory / "ground_truth.npz",
            user_taste=self.user_taste,
            item_latent=self.item_latent,
            item_quality=self.item_quality,
            item_price=self.item_price,
            examination=self.examination,
            device_effect=self.device_effect,
        )
        (directory / "ground_truth.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, directory: Path) -> GroundTruth:
        config = SimulatorConfig(**json.loads((directory / "ground_truth.json").read_text()))
        config = SimulatorConfig(**{**asdict(config), "device_effect": tuple(config.device_effect)})
        with np.load(directory / "ground_truth.npz", allow_pickle=False) as z:
            return cls(config=config, **{k: z[k] for k in z.files})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def user_index(user_ids: pl.Series | list[str]) -> np.ndarray:
    """Index of simulator user ids (``u<N>``)."""
    return pl.Series(user_ids).str.slice(1).cast(pl.Int64).to_numpy()


def item_index(item_ids: pl.Series | list[str]) -> np.ndarray:
    """Index of simulator item ids (``i<N>``)."""
    return pl.Series(item_ids).str.slice(1).cast(pl.Int64).to_numpy()


def _ground_truth(config: SimulatorConfig, rng: np.random.Generator) -> tuple[GroundTruth, dict]:
    n_cat = len(CATEGORIES)
    centroids = rng.normal(0.0, 1.0, (n_cat, config.dim)) / np.sqrt(config.dim)
    item_category = rng.integers(0, n_cat, config.items)
    item_latent = centroids[item_category] + rng.normal(
        0, 0.5, (config.items, config.dim)
    ) / np.sqrt(config.dim)
    # Each user likes one or two categories most.
    fav = rng.integers(0, n_cat, (config.users, 2))
    user_taste = (
        0.7 * centroids[fav[:, 0]]
        + 0.3 * centroids[fav[:, 1]]
        + rng.normal(0, 0.4, (config.users, config.dim)) / np.sqrt(config.dim)
    ) * 2.0
    item_quality = rng.normal(0.0, config.quality_scale, config.items)
    log_price = _CATEGORY_LOG_PRICE[item_category] + rng.normal(0, 0.4, config.items)
    item_price = np.round(np.exp(log_price), 2)
    examination = np.power(np.arange(1, config.slate_size + 1), -config.examination_decay)
    gt = GroundTruth(
        config=config,
        user_taste=user_taste.astype(np.float64),
        item_latent=item_latent.astype(np.float64),
        item_quality=item_quality,
        item_price=item_price,
        examination=examination,
        device_effect=np.asarray(config.device_effect, dtype=np.float64),
    )
    return gt, {"item_category": item_category}


def simulate(
    config: SimulatorConfig,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, GroundTruth]:
    """Simulate a marketplace: returns (events, items, users, ground truth)."""
    rng = np.random.default_rng(config.seed)
    gt, extra = _ground_truth(config, rng)
    item_category = extra["item_category"]

    users = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(config.users)],
            "age_bucket": np.asarray(AGE_BUCKETS)[rng.integers(0, len(AGE_BUCKETS), config.users)],
            "gender": np.asarray(GENDERS)[
                rng.choice(len(GENDERS), config.users, p=[0.48, 0.48, 0.04])
            ],
            "region": np.asarray(REGIONS)[rng.integers(0, len(REGIONS), config.users)],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(config.items)],
            "category": np.asarray(CATEGORIES)[item_category],
            "price": gt.item_price,
        }
    )
    user_device_pref = rng.dirichlet(np.ones(len(DEVICES)) * 2.0, config.users)
    # Users differ in how active they are (heavy-tailed, as in real logs).
    activity = rng.lognormal(0.0, 0.8, config.users)
    activity = activity / activity.mean() * config.sessions_per_user_day
    sessions_per_user = rng.poisson(activity * config.days)
    session_user = np.repeat(np.arange(config.users), sessions_per_user)
    n_sessions = session_user.size
    start = datetime.fromisoformat(config.start).astimezone(UTC)
    start_us = int(start.timestamp() * 1_000_000)
    session_ts = start_us + rng.integers(0, config.days * 86_400_000_000, n_sessions)
    order = np.argsort(session_ts, kind="stable")
    session_user, session_ts = session_user[order], session_ts[order]
    # Device per session drawn from the user's preference (inverse-CDF, vectorised).
    cdf = np.cumsum(user_device_pref[session_user], axis=1)
    session_device = (rng.random(n_sessions)[:, None] > cdf).sum(axis=1).clip(0, len(DEVICES) - 1)

    popularity = np.exp(gt.item_quality + rng.normal(0, 1.0, config.items))
    log_pop = np.log(popularity / popularity.sum())
    frames = []
    for lo in range(0, n_sessions, config.chunk_sessions):
        hi = min(lo + config.chunk_sessions, n_sessions)
        frames.append(
            _simulate_sessions(
                config,
                gt,
                rng,
                log_pop,
                lo,
                session_user[lo:hi],
                session_ts[lo:hi],
                session_device[lo:hi],
            )
        )
    events = (
        pl.concat(frames)
        .with_columns(
            pl.format("u{}", "u").alias("user_id"),
            pl.format("i{}", "i").alias("item_id"),
            pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC").alias("ts"),
            pl.format("r{}", "session").alias("request_id"),
            pl.col("device").replace_strict(dict(enumerate(DEVICES)), return_dtype=pl.String),
        )
        .select(
            "user_id",
            "item_id",
            "ts",
            "event",
            pl.col("value").cast(pl.Float64),
            pl.col("price").cast(pl.Float64),
            pl.col("position").cast(pl.Int32),
            "request_id",
            "device",
        )
        .sort("ts", "request_id", "position", maintain_order=True)
    )
    return events, items, users, gt


def _simulate_sessions(
    config: SimulatorConfig,
    gt: GroundTruth,
    rng: np.random.Generator,
    log_pop: np.ndarray,
    first_session: int,
    user: np.ndarray,
    ts: np.ndarray,
    device: np.ndarray,
) -> pl.DataFrame:
    n, slate = user.size, config.slate_size
    # Logging policy: popularity plus a noisy view of the user's taste; Gumbel top-k sampling.
    noisy_taste = gt.user_taste[user] + rng.normal(0, 0.5, (n, config.dim))
    keys = (
        log_pop[None, :]
        + config.policy_personalisation * config.affinity * (noisy_taste @ gt.item_latent.T)
        + rng.gumbel(size=(n, config.items))
    )
    shown = np.argpartition(-keys, slate - 1, axis=1)[:, :slate]
    shown_keys = np.take_along_axis(keys, shown, axis=1)
    shown = np.take_along_axis(shown, np.argsort(-shown_keys, axis=1), axis=1)

    imp_user = np.repeat(user, slate)
    imp_item = shown.ravel()
    imp_pos = np.tile(np.arange(1, slate + 1), n)
    imp_device = np.repeat(device, slate)
    imp_session = np.repeat(np.arange(first_session, first_session + n), slate)
    imp_ts = np.repeat(ts, slate) + imp_pos * 200_000  # slots render 0.2 s apart

    p_click = gt.click_probability(imp_user, imp_item, imp_pos, imp_device)
    clicked = rng.random(p_click.size) < p_click
    p_buy = gt.purchase_probability(imp_user, imp_item)
    bought = clicked & (rng.random(p_click.size) < p_buy)
    click_delay = rng.integers(2_000_000, 60_000_000, p_click.size)
    buy_delay = click_delay + rng.integers(30_000_000, 900_000_000, p_click.size)

    def block(mask: np.ndarray, event: str, delay: np.ndarray | int, value: np.ndarray | None):
        frame = pl.DataFrame(
            {
                "u": imp_user[mask],
                "i": imp_item[mask],
                "ts": imp_ts[mask] + (delay[mask] if isinstance(delay, np.ndarray) else delay),
                "event": np.full(int(mask.sum()), event),
                "price": gt.item_price[imp_item[mask]],
                "position": imp_pos[mask],
                "session": imp_session[mask],
                "device": imp_device[mask],
            }
        )
        if value is None:
            return frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("value"))
        return frame.with_columns(pl.Series("value", value[mask], dtype=pl.Float64))

    everything = np.ones(p_click.size, dtype=bool)
    return pl.concat(
        [
            block(everything, "impression", 0, None),
            block(clicked, "click", click_delay, None),
            block(bought, "purchase", buy_delay, gt.item_price[imp_item]),
        ]
    )


def write_simulation(out: Path, config: SimulatorConfig) -> dict[str, int]:
    """Simulate and write ``events.parquet``, ``items.parquet``, ``users.parquet`` and the
    ground truth into ``out``; returns row counts."""
    out.mkdir(parents=True, exist_ok=True)
    events, items, users, gt = simulate(config)
    events.write_parquet(out / "events.parquet")
    items.write_parquet(out / "items.parquet")
    users.write_parquet(out / "users.parquet")
    gt.save(out)
    counts = events.group_by("event").len().to_dict(as_series=False)
    summary = dict(zip(counts["event"], counts["len"], strict=True))
    summary.update(users=users.height, items=items.height)
    return summary
