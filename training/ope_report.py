"""`reachrank ope-report`: how a candidate CTR model would have done on the decisions the
server logged, by IPS, self-normalised IPS and doubly robust estimates (training.ope), next to
the logging policy's own value.

The candidate is a greedy policy: in each logged slot it takes, of the candidates the earlier
slots left (as logged), the best by its pCTR (x bid for RankAds). It scores the logged
candidates from the features as served, re-standardised for its own schema (its categorical
fields and hashing must equal the logged ones; numeric fields are matched by name and
transform and re-standardised with its mean and std). The doubly robust estimate's reward
model is the candidate's own calibrated pCTR at the slot's position; for conversions and
revenue it is scaled by the log's conversions and revenue per click.

Slots after the first are evaluated given the logged earlier slots: the estimate of slot p is
the value of the candidate's pick for slot p after the logger's picks for the slots above it,
which is the candidate's own slate value when a slot's outcome depends only on its item and
position (as in training.simulate's examination model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kernels.bundle_manifest import MANIFEST_FILE, CTRBundle, parse_manifest
from kernels.featurize import FeatureSchema
from training.decisions import OUTCOMES, join_outcomes, logged_schema, scan_decisions
from training.errors import InputError
from training.ope import Estimate, doubly_robust, ips, on_policy, snips


@dataclass(frozen=True)
class Candidate:
    schema: FeatureSchema
    session: Any  # onnxruntime.InferenceSession
    name: str
    version: int

    @classmethod
    def load(cls, repo: Path, name: str = "ctr", version: int | None = None) -> Candidate:
        import onnxruntime as ort

        model_dir = Path(repo) / name
        versions = sorted(int(p.name) for p in model_dir.glob("*") if p.name.isdigit())
        if not versions:
            raise InputError(f"{model_dir}: no bundle versions of {name!r}")
        version = version or versions[-1]
        bundle = model_dir / str(version)
        manifest = parse_manifest(json.loads((bundle / MANIFEST_FILE).read_text()))
        if not isinstance(manifest, CTRBundle):
            raise InputError(f"{bundle} is not a CTR bundle")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(bundle / manifest.onnx.file), options, providers=["CPUExecutionProvider"]
        )
        return cls(FeatureSchema.from_json(manifest.features), session, name, version)

    def pctr(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        out = self.session.run(["pctr"], {"cat": cat, "num": num})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def reencode(
    cat: np.ndarray, num: np.ndarray, logged: FeatureSchema, target: FeatureSchema
) -> tuple[np.ndarray, np.ndarray]:
    """The served inputs, encoded as ``target``'s schema would have encoded the same values."""
    same_hashing = (logged.n_buckets, logged.hash_seed) == (target.n_buckets, target.hash_seed)
    if not same_hashing or logged.categorical != target.categorical:
        raise InputError(
            "the candidate's categorical features differ from the logged ones "
            f"({[f.name for f in target.categorical]} vs {[f.name for f in logged.categorical]}, "
            "or another hashing): OPE needs the inputs the candidate would have seen"
        )
    by_name = {f.name: j for j, f in enumerate(logged.numeric)}
    out = np.empty((len(num), len(target.numeric)), dtype=np.float32)
    for j, spec in enumerate(target.numeric):
        i = by_name.get(spec.name)
        if i is None or logged.numeric[i].transform != spec.transform:
            raise InputError(
                f"numeric feature {spec.name!r} of the candidate was not logged with its transform"
            )
        src = logged.numeric[i]
        transformed = num[:, i].astype(np.float64) * src.std + src.mean
        out[:, j] = ((transformed - spec.mean) / spec.std).astype(np.float32)
    return cat, out


def with_position(cat: np.ndarray, schema: FeatureSchema, position: int) -> np.ndarray:
    names = [f.name for f in schema.categorical]
    if "position" not in names:
        return cat
    j = names.index("position")
    out = cat.copy()
    out[:, j] = schema.encode_categorical(schema.categorical[j], [str(position)])[0]
    return out


@dataclass(frozen=True)
class Units:
    """One entry per logged (decision, slot)."""

    decision: np.ndarray
    slot: np.ndarray
    weight: np.ndarray
    reward: dict[str, np.ndarray]
    q_logged: np.ndarray  # candidate pCTR of the logged pick at the slot
    q_target: np.ndarray  # candidate pCTR of its own pick at the slot
    matched: np.ndarray  # target pick == logged pick


def units(frame: pl.DataFrame, candidate: Candidate, schema: FeatureSchema, slots: int) -> Units:
    """Per logged slot: the candidate's pick, its weight and the reward-model values."""
    frame = frame.sort("request_id", "candidate")
    n = frame.height
    cat = np.array(frame["cat"].to_list(), dtype=np.int64).reshape(n, -1)
    num = np.array(frame["num"].to_list(), dtype=np.float32).reshape(n, -1)
    cat, num = reencode(cat, num, schema, candidate.schema)
    value = frame["bid"].to_numpy() if (frame["rpc"] == "rank_ads").all() else np.ones(n)
    value = np.where(value > 0, value, 1.0)
    key = candidate.pctr(cat, num) * value  # as served: at the default position
    at_slot = {
        p: candidate.pctr(with_position(cat, candidate.schema, p), num) for p in range(1, slots + 1)
    }
    decision_ids = frame["request_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, decision_ids[1:] != decision_ids[:-1]])
    ends = np.r_[starts[1:], n]
    position = frame["position"].to_numpy()
    propensity = frame["propensity"].to_numpy()
    rewards = {c: frame[c].to_numpy() for c in OUTCOMES}
    rows: dict[str, list] = {k: [] for k in ("d", "s", "w", "ql", "qt", "m", "row")}
    for d, (a, b) in enumerate(zip(starts, ends, strict=True)):
        taken = np.zeros(b - a, dtype=bool)
        pos = position[a:b]
        for p in range(1, slots + 1):
            logged = np.flatnonzero(pos == p)
            if not len(logged):
                break
            li = int(logged[0])
            masked = np.where(taken, -np.inf, key[a:b])
            target = int(np.argmax(masked))
            match = target == li
            rows["d"].append(d)
            rows["s"].append(p)
            rows["w"].append(match / propensity[a + li] if propensity[a + li] > 0 else 0.0)
            rows["ql"].append(at_slot[p][a + li])
            rows["qt"].append(at_slot[p][a + target])
            rows["m"].append(match)
            rows["row"].append(a + li)
            taken[li] = True
    row = np.array(rows["row"], dtype=np.int64)
    return Units(
        np.array(rows["d"]),
        np.array(rows["s"]),
        np.array(rows["w"], dtype=np.float64),
        {c: r[row] for c, r in rewards.items()},
        np.array(rows["ql"]),
        np.array(rows["qt"]),
        np.array(rows["m"], dtype=bool),
    )


def estimates(u: Units, reward: str, level: float = 0.95) -> dict[str, Estimate]:
    """IPS, SNIPS, DR of the candidate and the logger's own value for one outcome."""
    r = u.reward[reward]
    scale = 1.0
    if reward != "clicked":  # the reward model: pCTR x the log's outcome per click
        clicks = u.reward["clicked"].sum()
        scale = float(r.sum() / clicks) if clicks else 0.0
    return {
        "ips": ips(r, u.weight, u.decision, level),
        "snips": snips(r, u.weight, u.decision, u.slot, level),
        "dr": doubly_robust(r, u.weight, u.q_logged * scale, u.q_target * scale, u.decision, level),
        "logging": on_policy(r, u.decision, level),
    }


def ope_report(
    decisions_dir: Path,
    events: pl.LazyFrame,
    candidate: Candidate,
    rpc: str | None = None,
    slots: int | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """Per outcome: each estimator's value per decision (summed over the evaluated slots) with
    its interval, and the logging policy's."""
    decisions = scan_decisions(decisions_dir).filter(pl.col("feature_schema") != "")
    present = decisions.select(pl.col("rpc").unique()).collect()["rpc"].to_list()
    if rpc is None:
        if len(present) != 1:
            raise InputError(f"the log holds decisions of {sorted(present)}: choose one with --rpc")
        rpc = present[0]
    frame = join_outcomes(decisions.filter(pl.col("rpc") == rpc), events).collect()
    if not frame.height:
        raise InputError(f"no {rpc} decisions with served features in {decisions_dir}")
    fingerprints = frame["feature_schema"].unique().to_list()
    if len(fingerprints) > 1:
        raise InputError(f"{rpc} decisions use {len(fingerprints)} feature schemas; split the log")
    schema = logged_schema(decisions_dir, fingerprints[0])
    max_slots = int(frame["slots"].max())
    slots = min(slots or max_slots, max_slots)
    u = units(frame, candidate, schema, slots)
    report: dict[str, Any] = {
        "rpc": rpc,
        "candidate": f"{candidate.name}:{candidate.version}",
        "decisions": int(u.decision.max()) + 1 if len(u.decision) else 0,
        "slots": slots,
        "level": level,
        "matched_share": float(u.matched.mean()) if len(u.matched) else 0.0,
        "explored_share": float(
            frame.group_by("request_id").agg(pl.col("explored").first())["explored"].mean()
        ),
        "estimates": {
            reward: {k: e.to_json() for k, e in estimates(u, reward, level).items()}
            for reward in OUTCOMES
        },
    }
    if not (frame["propensity"].filter(frame["position"] > 0) < 1).any():
        report["warning"] = (
            "every logged pick had propensity 1 (no exploration): only decisions where the "
            "candidate agrees with the logger are seen, so IPS/SNIPS/DR are biased"
        )
    return report
