"""Offline campaign plans: an ``uplift`` bundle from a model repository scores a customer file
(ids and the same features, no outcomes) and :func:`kernels.campaign_plan.plan_campaign`
chooses whom to contact with which treatment. Writes ``user_id, treatment, expected_uplift,
expected_value, group`` (``contact`` or ``control``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kernels.bundle_manifest import MANIFEST_FILE, ManifestError, UpliftBundle, parse_manifest
from kernels.campaign_plan import Plan, PlanError, PlanOptions, plan_campaign
from kernels.tabular import TabularSchema
from training.errors import InputError
from training.uplift.data import encode_frame, scan_table


@dataclass(frozen=True)
class UpliftModel:
    path: Path
    manifest: UpliftBundle

    @property
    def schema(self) -> TabularSchema:
        return TabularSchema.from_dict(self.manifest.customer_schema)

    @property
    def treatments(self) -> list[str]:
        return list(self.manifest.treatments)

    def score(self, x: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(self.path / self.manifest.onnx.file),
            options,
            providers=["CPUExecutionProvider"],
        )
        (uplift,) = session.run(None, {"features": x})
        return uplift.astype(np.float64)


def find_bundle(repo: Path, name: str = "uplift") -> UpliftModel:
    """The newest version of model ``name`` in ``repo``, which must be an uplift bundle."""
    folder = repo / name
    versions = sorted(
        int(p.name) for p in folder.glob("*") if p.name.isdigit() and (p / MANIFEST_FILE).is_file()
    )
    if not versions:
        raise InputError(
            f"{repo}: no model {name!r} (train one with `reachrank train --format campaign`)"
        )
    path = folder / str(versions[-1])
    data = json.loads((path / MANIFEST_FILE).read_text())
    if data.get("kind") != "uplift":
        raise InputError(f"{path}: model {name!r} is a {data.get('kind')!r} model, not uplift")
    try:
        manifest = parse_manifest(data)
    except ManifestError as exc:
        raise InputError(f"{path / MANIFEST_FILE}: {exc}") from None
    assert isinstance(manifest, UpliftBundle)
    return UpliftModel(path, manifest)


def parse_costs(given: Sequence[str], treatments: Sequence[str]) -> tuple[float, ...]:
    """``TREATMENT=COST`` pairs to a cost per treatment (0 where not given)."""
    costs = dict.fromkeys(treatments, 0.0)
    for item in given:
        name, sep, number = item.partition("=")
        if not sep:
            raise InputError(f"--cost {item!r}: write TREATMENT=COST, e.g. email=0.1")
        if name not in costs:
            raise InputError(
                f"--cost {item!r}: unknown treatment {name!r}; the model has {list(treatments)}"
            )
        try:
            costs[name] = float(number)
        except ValueError:
            raise InputError(f"--cost {item!r}: {number!r} is not a number") from None
    return tuple(costs[t] for t in treatments)


def plan_file(
    bundle: UpliftModel, customers: Path, options: PlanOptions, user_column: str = "user_id"
) -> tuple[pl.DataFrame, Plan]:
    """Score and plan a customer file; returns the plan table and the plan."""
    frame = scan_table(customers).collect()
    if user_column not in frame.columns:
        raise InputError(f"{customers}: no {user_column!r} column; it has {frame.columns}")
    if frame.height == 0:
        raise InputError(f"{customers}: no customers")
    user_ids = frame[user_column].cast(pl.String).to_list()
    uplift = bundle.score(encode_frame(bundle.schema, frame))
    try:
        plan = plan_campaign(user_ids, uplift, bundle.treatments, options)
    except PlanError as exc:
        raise InputError(str(exc)) from None
    return plan_table(user_ids, bundle.treatments, plan), plan


def plan_table(user_ids: Sequence[str], treatments: Sequence[str], plan: Plan) -> pl.DataFrame:
    names = np.asarray(treatments, dtype=object)

    def part(
        rows: np.ndarray, treatment: np.ndarray, up: np.ndarray, value: np.ndarray, group: str
    ):
        return pl.DataFrame(
            {
                "user_id": [user_ids[i] for i in rows],
                "treatment": names[treatment].tolist() if len(rows) else [],
                "expected_uplift": up,
                "expected_value": value,
                "group": [group] * len(rows),
            },
            schema={
                "user_id": pl.String,
                "treatment": pl.String,
                "expected_uplift": pl.Float64,
                "expected_value": pl.Float64,
                "group": pl.String,
            },
        )

    return pl.concat(
        [
            part(
                plan.contact,
                plan.contact_treatment,
                plan.contact_uplift,
                plan.contact_value,
                "contact",
            ),
            part(
                plan.control,
                plan.control_treatment,
                plan.control_uplift,
                plan.control_value,
                "control",
            ),
        ]
    )


def summary_lines(summary: Any, mapping: Mapping[str, Any] | None = None) -> str:
    s = summary
    roi = "n/a (no cost)" if not np.isfinite(s.roi) else f"{s.roi:.2f}"
    return (
        f"contacts {s.contacts} of {s.customers} customers ({s.eligible} with a positive net), "
        f"control group {s.controls} (held out, marked `control`); per treatment "
        f"{s.contacts_per_treatment}; cost {s.cost:.2f}; expected incremental conversions "
        f"{s.expected_conversions:.1f}, revenue {s.expected_revenue:.2f}; ROI {roi}"
    )
