"""pCVR beside pCTR: an ESMM (:mod:`training.models.esmm`) fitted on every impression of the
CTR split, its CVR tower calibrated on the clicked validation impressions, scored on test
against the simulator's oracle, a CVR model fitted on clicked impressions only (the biased
one) and the base rate. The calibrated tower ships inside every CTR bundle's graph as a second
output, ``pcvr`` (P(purchase | click)); pCTCVR is the served pCTR x pCVR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from training import metrics
from training.fit import FitConfig, _batches, _ctr_optimisers, fit_ctr, predict_logits
from training.models.ctr import CalibratedCTR, CTRSize, FieldEmbeddings
from training.models.esmm import ESMM, Tower, Without, esmm_loss
from training.simulate import GroundTruth, item_index, user_index

log = logging.getLogger(__name__)

# What the pipeline's calibration step is: (logit model, valid logits, valid labels) -> pCVR.
Calibrate = Callable[[nn.Module, np.ndarray, np.ndarray], CalibratedCTR]


@dataclass(frozen=True)
class CVRConfig:
    """The conversion model `reachrank train` fits when the log has purchases."""

    enabled: bool = True
    size: CTRSize = field(default_factory=CTRSize)
    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 2048
    # The CVR logit also reads the CTR tower's relevance logit (training.models.esmm.Transfer):
    # on the default simulation pCVR AUC 0.7490 vs 0.7476 without (within noise), for a second
    # tower in the served graph: off.
    transfer: bool = False
    # The biased baseline (a CVR tower fitted on clicked impressions only) costs a fit on a
    # few percent of the rows: on by default, so every report shows what ESMM buys.
    baseline: bool = True


def has_conversions(events: pl.LazyFrame) -> bool:
    """Whether the log has purchase events (what the CVR model learns from)."""
    purchases = events.filter(pl.col("event") == "purchase").select(pl.len())
    return bool(purchases.collect().item())


@dataclass
class CVRResult:
    """The calibrated CVR tower (cat, num) -> pCVR, and its test metrics beside the
    baselines'."""

    pcvr: CalibratedCTR
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    valid: dict[str, float]
    rows: dict[str, int]
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": "esmm",
            "shipped_in": "ctr",
            "output": "pcvr",
            "rows": self.rows,
            "seconds": round(self.seconds, 1),
            "models": {"esmm": self.metrics},
            "baselines": self.baselines,
            "valid": {"esmm": self.valid},
        }


@dataclass(frozen=True)
class CVRData:
    """The CTR split's encoded rows and both labels; masks select train/valid/test."""

    cat: np.ndarray
    num: np.ndarray
    click: np.ndarray  # float32 0/1
    converted: np.ndarray  # float32 0/1: clicked and purchased
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def fit_esmm(
    model: ESMM,
    data: CVRData,
    config: FitConfig,
) -> list[float]:
    """Minimise :func:`esmm_loss` over the training impressions; keeps the epoch with the
    lowest validation loss (as :func:`training.fit.fit_ctr` does). Returns the mean training
    loss per epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cat, num = torch.from_numpy(data.cat[data.train]), torch.from_numpy(data.num[data.train])
    click = torch.from_numpy(data.click[data.train])
    converted = torch.from_numpy(data.converted[data.train])
    optimisers = _ctr_optimisers(model, config)
    history: list[float] = []
    best_loss, best_state = np.inf, None
    for epoch in range(config.epochs):
        model.train()
        total = 0.0
        batches = _batches(len(click), config.batch_size, rng)
        for idx in tqdm(
            batches, desc=f"ESMM epoch {epoch + 1}", disable=not config.progress, leave=False
        ):
            i = torch.from_numpy(idx)
            for opt in optimisers:
                opt.zero_grad()
            loss = esmm_loss(*model(cat[i], num[i]), click[i], converted[i])
            loss.backward()
            for opt in optimisers:
                opt.step()
            total += loss.item() * len(idx)
        history.append(total / max(len(click), 1))
        valid_loss = _esmm_valid_loss(model, data)
        if valid_loss < best_loss:
            best_loss = valid_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


@torch.no_grad()
def _esmm_valid_loss(model: ESMM, data: CVRData) -> float:
    model.eval()
    v = data.valid
    ctr_logit = torch.from_numpy(predict_logits(model.ctr, data.cat[v], data.num[v]))
    cvr_logit = torch.from_numpy(predict_logits(model.cvr, data.cat[v], data.num[v]))
    loss = esmm_loss(
        ctr_logit,
        cvr_logit,
        torch.from_numpy(data.click[v]),
        torch.from_numpy(data.converted[v]),
    )
    return float(loss)


def cvr_metrics(
    click: np.ndarray,
    converted: np.ndarray,
    pcvr: np.ndarray,
    pctcvr: np.ndarray,
    oracle_pcvr: np.ndarray | None = None,
) -> dict[str, float]:
    """pCVR's AUC/logloss/ECE on the clicked rows (the only ones with a purchase label),
    pCTCVR's on every row; against the oracle's pCVR (a simulator only) its mean absolute
    error over every row and its mean error over the unclicked rows, where a model fitted on
    clicks alone never saw a label (selection bias shows there)."""
    clicked = click > 0
    out = {
        f"pcvr_{k}": v
        for k, v in metrics.evaluate_classification(converted[clicked], pcvr[clicked]).items()
    }
    out |= {f"pctcvr_{k}": v for k, v in metrics.evaluate_classification(converted, pctcvr).items()}
    out["pcvr_mean"] = float(pcvr[clicked].mean())
    out["purchase_rate"] = float(converted[clicked].mean())
    if oracle_pcvr is not None:
        out["pcvr_ece_vs_oracle"] = ece_against(oracle_pcvr[clicked], pcvr[clicked])
        out["pcvr_mae_vs_oracle"] = float(np.abs(pcvr - oracle_pcvr).mean())
        if (~clicked).any():
            out["pcvr_bias_unclicked"] = float((pcvr - oracle_pcvr)[~clicked].mean())
    return out


def ece_against(truth: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE with the true probabilities in place of the labels (10 equal-width bins of ``p``):
    the calibration error without the labels' sampling noise, which on a few thousand clicked
    rows is about as large as the 0.01 goal (the oracle's own label ECE varies 0.009-0.015
    between redraws of the default simulation's test purchases)."""
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.bincount(bins, weights=truth - p, minlength=n_bins)
    return float(np.abs(gap).sum() / max(counts.sum(), 1))


def oracle_pcvr(truth: GroundTruth, frame: pl.DataFrame) -> np.ndarray:
    """The simulator's P(purchase | click) of each row (``user_id``, ``item_id``)."""
    return truth.purchase_probability(user_index(frame["user_id"]), item_index(frame["item_id"]))


@torch.no_grad()
def predict_pcvr(model: CalibratedCTR, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    logits = torch.from_numpy(predict_logits(model.model, cat, num))
    return model.calibration(logits).numpy().astype(np.float64)


def train_cvr(
    data: CVRData,
    n_buckets: int,
    position_field: int | None,
    config: CVRConfig,
    fit: FitConfig,
    calibrate: Calibrate,
    served_pctr_test: np.ndarray,
    oracle: tuple[np.ndarray, np.ndarray] | None = None,
) -> CVRResult | None:
    """Fit the ESMM, calibrate its CVR tower, score it and the baselines on test; None (with a
    warning) when a part's clicked impressions lack purchases or non-purchases.

    ``served_pctr_test`` is the shipped CTR model's calibrated pCTR on the test rows (pCTCVR
    is what the engine computes: served pCTR x pCVR); ``oracle`` the simulator's (pCTR, pCVR)
    on the test rows."""
    for name, part in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        bought = data.converted[part & (data.click > 0)]
        if not 0 < bought.sum() < bought.size:
            log.warning(
                "skipping the CVR model: its calibration and metrics need clicked %s "
                "impressions with and without a purchase; got %d purchases of %d clicks",
                name,
                int(bought.sum()),
                bought.size,
            )
            return None
    start = time.perf_counter()
    n_fields, n_numeric = data.cat.shape[1], data.num.shape[1]
    fit = FitConfig(
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        weight_decay=fit.weight_decay,
        seed=fit.seed,
        progress=fit.progress,
    )
    te, va = data.test, data.valid
    click_te, conv_te = data.click[te], data.converted[te]
    clicked_va = va & (data.click > 0)
    torch.manual_seed(fit.seed)
    model = ESMM(n_buckets, n_fields, n_numeric, config.size, position_field, config.transfer)
    fit_esmm(model, data, fit)
    calibrated = calibrate(
        model.cvr,
        predict_logits(model.cvr, data.cat[clicked_va], data.num[clicked_va]),
        data.converted[clicked_va],
    )
    pcvr_te = predict_pcvr(calibrated, data.cat[te], data.num[te])
    pcvr_va = predict_pcvr(calibrated, data.cat[clicked_va], data.num[clicked_va])
    truth_pcvr = oracle[1] if oracle is not None else None
    result = cvr_metrics(click_te, conv_te, pcvr_te, served_pctr_test * pcvr_te, truth_pcvr)
    valid = {
        k: v
        for k, v in metrics.evaluate_classification(data.converted[clicked_va], pcvr_va).items()
    }
    clicked_te = click_te > 0
    rate = float(data.converted[data.train & (data.click > 0)].mean())
    overall = float(data.converted[data.train].mean())
    baselines = {
        "base_rate": cvr_metrics(
            click_te, conv_te, np.full(te.sum(), rate), np.full(te.sum(), overall), truth_pcvr
        )
    }
    if oracle is not None:
        baselines["oracle"] = cvr_metrics(
            click_te, conv_te, oracle[1], oracle[0] * oracle[1], truth_pcvr
        )
    if config.baseline:
        biased = clicked_only(data, n_buckets, position_field, config, fit, calibrate)
        p = predict_pcvr(biased, data.cat[te], data.num[te])
        baselines["clicked_only"] = cvr_metrics(
            click_te, conv_te, p, served_pctr_test * p, truth_pcvr
        )
    rows = {
        "train": int(data.train.sum()),
        "train_clicked": int((data.train & (data.click > 0)).sum()),
        "train_converted": int(data.converted[data.train].sum()),
        "test_clicked": int(clicked_te.sum()),
    }
    seconds = time.perf_counter() - start
    log.info("CVR esmm: test %s (%.1f s with the baselines)", result, seconds)
    return CVRResult(calibrated, result, baselines, valid, rows, seconds)


def clicked_only(
    data: CVRData,
    n_buckets: int,
    position_field: int | None,
    config: CVRConfig,
    fit: FitConfig,
    calibrate: Calibrate,
) -> CalibratedCTR:
    """The biased baseline: one CVR tower of the ESMM's shape (own embeddings) fitted on the
    clicked training impressions' purchase label, calibrated on the clicked valid ones."""
    n_fields, n_numeric = data.cat.shape[1], data.num.shape[1]
    tower_fields = n_fields - (position_field is not None)
    torch.manual_seed(fit.seed)
    tower = Tower(
        FieldEmbeddings(n_buckets, n_numeric, config.size.dim),
        n_buckets,
        tower_fields,
        n_numeric,
        config.size,
    )
    model: nn.Module = tower if position_field is None else Without(tower, n_fields, position_field)
    tr = data.train & (data.click > 0)
    va = data.valid & (data.click > 0)
    fit_ctr(
        model,
        data.cat[tr],
        data.num[tr],
        data.converted[tr],
        fit,
        (data.cat[va], data.num[va], data.converted[va]),
    )
    return calibrate(model, predict_logits(model, data.cat[va], data.num[va]), data.converted[va])
