"""Typed results (and the ad input) of the ReachRank SDK, free of protobuf types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model (and version) that took part in answering a request."""

    name: str
    version: int
    kind: str
    # Execution provider onnxruntime really used; empty for non-ONNX models.
    provider: str


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    item_id: str
    score: float
    retrieval_score: float
    category: str
    price: float


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Items sorted by score, descending, and how they were chosen."""

    items: tuple[RecommendedItem, ...]
    # "personalised", "cold_start_segment" or "cold_start_popularity".
    strategy: str
    models: tuple[ModelInfo, ...]
    # The A/B experiment and arm that served the request ("" when none): log them with
    # the feedback events.
    experiment: str = ""
    variant: str = ""

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


@dataclass(frozen=True, slots=True)
class SimilarItems:
    """Nearest items to one item by embedding cosine, best first (never the item itself)."""

    items: tuple[RecommendedItem, ...]
    models: tuple[ModelInfo, ...]

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


@dataclass(frozen=True, slots=True)
class AudienceMember:
    user_id: str
    # Inner product of the user's and the offer's embeddings: higher, likelier to respond.
    score: float
    rfm_segment: str
    cluster: int


@dataclass(frozen=True, slots=True)
class Audience:
    """The users most likely to respond to an offer, best first."""

    users: tuple[AudienceMember, ...]
    # Users that passed the segment filter, before taking the top n.
    eligible_users: int
    models: tuple[ModelInfo, ...]

    @property
    def user_ids(self) -> list[str]:
        return [member.user_id for member in self.users]


@dataclass(frozen=True, slots=True)
class Profile:
    """A user's portrait: numeric features, categorical attributes and segments."""

    user_id: str
    # False for a user never seen in the training data (then everything else is empty).
    known: bool
    features: dict[str, float]
    attributes: dict[str, str]
    rfm_segment: str
    cluster: int
    models: tuple[ModelInfo, ...]


@dataclass(frozen=True, slots=True)
class AdBid:
    """One ad entering an auction (input to `rank_ads`)."""

    ad_id: str
    bid: float
    # Feature overrides; numeric values travel as decimal text.
    features: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RankedAd:
    ad_id: str
    pctr: float
    bid: float
    expected_value: float
    # 1-based slot for winners, 0 for ads that ranked but won no slot.
    slot: int
    # Generalised second price per click; 0 for non-winners.
    price: float


@dataclass(frozen=True, slots=True)
class AdAuction:
    """Every eligible ad by expected value, descending."""

    ads: tuple[RankedAd, ...]
    below_reserve: int
    models: tuple[ModelInfo, ...]
    experiment: str = ""
    variant: str = ""

    @property
    def winners(self) -> list[RankedAd]:
        """Ads that won a slot, in slot order."""
        return sorted((ad for ad in self.ads if ad.slot > 0), key=lambda ad: ad.slot)


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Named output arrays of a raw `Score` call (read-only views of the response bytes)."""

    outputs: dict[str, np.ndarray]
    model: ModelInfo
