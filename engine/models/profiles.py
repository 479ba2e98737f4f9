"""Served user profiles ("portraits"): RFM and K-means segments plus profile features, from a
``profiles`` bundle (``profiles.parquet``: one row per user; ``user_id``, ``rfm_segment``,
``cluster``, numeric feature columns and string attribute columns)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.errors import BundleError, InvalidArgument
from engine.models.base import ModelId, ServedModel
from engine.repository import BundleRef
from engine.settings import Settings

CLUSTER_PREFIX = "cluster:"


@dataclass(frozen=True)
class Profile:
    user_id: str
    known: bool
    features: dict[str, float]
    attributes: dict[str, str]
    rfm_segment: str
    cluster: int


class ProfilesModel(ServedModel):
    """User id → profile, and segment membership for whole user lists."""

    def __init__(self, ref: BundleRef, settings: Settings) -> None:
        super().__init__(ref, settings)
        where = f"{ref.name}/{ref.version}"
        try:
            table = pl.read_parquet(ref.file("profiles"))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise BundleError(f"{where}: cannot read profiles: {exc}") from exc
        missing = {"user_id", "rfm_segment", "cluster"} - set(table.columns)
        if missing:
            raise BundleError(f"{where}: profiles.parquet lacks columns {sorted(missing)}")
        self.id = ModelId(ref.name, ref.version, ref.kind, "")
        self.user_ids: list[str] = table["user_id"].cast(pl.String).to_list()
        self.user_row = {u: i for i, u in enumerate(self.user_ids)}
        rfm = table["rfm_segment"].cast(pl.String).fill_null("")
        self.segments = sorted(set(rfm.to_list()) - {""})
        code = {s: i for i, s in enumerate(self.segments)}
        self.rfm_code = np.array([code.get(s, -1) for s in rfm.to_list()], dtype=np.int32)
        self.cluster = table["cluster"].fill_null(-1).cast(pl.Int32).to_numpy()
        numeric = [c for c, t in table.schema.items() if t.is_numeric() and c != "cluster"]
        strings = [
            c
            for c, t in table.schema.items()
            if t == pl.String and c not in ("user_id", "rfm_segment")
        ]
        self.feature_names = numeric
        self.features = (
            table.select(pl.col(numeric).cast(pl.Float64)).to_numpy()
            if numeric
            else np.zeros((len(table), 0))
        )
        self.attribute_names = strings
        self.attributes = {c: table[c].to_list() for c in strings}

    def profile(self, user_id: str) -> Profile:
        row = self.user_row.get(user_id)
        if row is None:
            return Profile(user_id, False, {}, {}, "", -1)
        values = self.features[row]
        features = {
            n: float(v) for n, v in zip(self.feature_names, values, strict=True) if np.isfinite(v)
        }
        attributes = {
            n: self.attributes[n][row]
            for n in self.attribute_names
            if self.attributes[n][row] is not None
        }
        code = int(self.rfm_code[row])
        return Profile(
            user_id,
            True,
            features,
            attributes,
            self.segments[code] if code >= 0 else "",
            int(self.cluster[row]),
        )

    def segment_of(self, user_id: str) -> tuple[str, int]:
        row = self.user_row.get(user_id)
        if row is None:
            return "", -1
        code = int(self.rfm_code[row])
        return (self.segments[code] if code >= 0 else ""), int(self.cluster[row])

    def members(self, segments: Sequence[str]) -> np.ndarray:
        """Boolean mask over this table's rows: users in any of ``segments`` (RFM names or
        ``cluster:<k>``). Unknown segment names are an error, not an empty audience."""
        mask = np.zeros(len(self.user_ids), dtype=np.bool_)
        for segment in segments:
            if segment.startswith(CLUSTER_PREFIX):
                k = segment[len(CLUSTER_PREFIX) :]
                if not k.lstrip("-").isdigit():
                    raise InvalidArgument(f"segments: {segment!r} is not cluster:<number>")
                mask |= self.cluster == int(k)
            elif segment in self.segments:
                mask |= self.rfm_code == self.segments.index(segment)
            else:
                raise InvalidArgument(
                    f"segments: unknown segment {segment!r}; known: {self.segments} or cluster:<k>"
                )
        return mask


class UserSegment:
    """One user's (RFM segment, K-means cluster), looked up at most once per request however
    many stages ask (experiment targeting, cold-start fallback); ("", -1) without profiles or
    for an unknown user."""

    __slots__ = ("_profiles", "_user_id", "_value")

    def __init__(self, profiles: ProfilesModel | None, user_id: str) -> None:
        self._profiles = profiles
        self._user_id = user_id
        self._value: tuple[str, int] | None = None

    @property
    def value(self) -> tuple[str, int]:
        if self._value is None:
            p = self._profiles
            self._value = p.segment_of(self._user_id) if p is not None else ("", -1)
        return self._value
