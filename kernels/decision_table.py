"""The decision log's Parquet table: the contract between the server, which writes it
(:mod:`engine.decisions`), and the trainer, which joins outcomes to it and evaluates policies
on it (:mod:`training.decisions`, :mod:`training.ope`).

One row per candidate of a decision (long form): the decision's columns repeat on each of its
rows. ``cat`` / ``num`` hold the CTR model inputs the candidate was scored with, encoded by the
feature schema whose fingerprint ``feature_schema`` names; the schema itself is in
``<log>/schemas/<fingerprint>.json`` (written once, before the first decision that uses it).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Decision columns, then candidate columns.
DECISION_COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",  # Datetime[us, UTC]
    "rpc",  # "recommend" | "rank_ads" | "plan"
    "user_id",
    "context",  # JSON object of the request context
    "experiment",
    "variant",
    "model",  # the CTR model (RankAds/Recommend) or the uplift model (Plan)
    "model_version",
    "models",  # every model that took part: "name:version" joined by ","
    "strategy",
    "exploration",  # "" | "epsilon" | "thompson"
    "explored",  # this request drew the exploration coin
    "propensity_method",  # "exact" | "monte_carlo:<draws>"
    "feature_schema",  # fingerprint of the schema of cat/num ("" without features)
    "slots",  # slots the decision filled
)
CANDIDATE_COLUMNS: tuple[str, ...] = (
    "candidate",  # index of the candidate within its decision
    "item_id",
    "score",  # calibrated pCTR as served
    "position",  # 1-based slot, 0: not shown
    "propensity",  # P(logging policy chose it for its slot | earlier slots); 0: not shown
    "bid",
    "price",
    "treatment",
    "cat",  # List[Int64]
    "num",  # List[Float32]
)
COLUMNS = DECISION_COLUMNS + CANDIDATE_COLUMNS
SCHEMAS_DIR = "schemas"
PARQUET_DIR = "parquet"


def schema_fingerprint(schema_json: dict[str, Any]) -> str:
    """A short, stable name for a feature schema (its canonical JSON's SHA-256 prefix)."""
    text = json.dumps(schema_json, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
