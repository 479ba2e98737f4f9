"""Typed results and inputs of the ReachRank SDK, free of protobuf types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    # The A/B experiment and arm that served the request ("" when none): feedback events
    # quote them.
    experiment: str = ""
    variant: str = ""
    # The x-request-id the call carried: feedback events quote it too.
    request_id: str = ""
    # Which consent mode answered: "personalised" or "context_only" (no per-user state read).
    consent_mode: str = ""

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def feedback(
        self, user_id: str, event: str, item_ids: Iterable[str] | None = None
    ) -> list[FeedbackEvent]:
        """Events for items of this answer (default: all, e.g. impressions), carrying the
        request id, experiment arm, ranking model and the 1-based position shown."""
        shown = ((item.item_id, rank, item.price) for rank, item in enumerate(self.items, 1))
        return _feedback(shown, self, user_id, event, item_ids)


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
    # P(purchase | click) from the CTR bundle's conversion model; None when it has none.
    pcvr: float | None = None


@dataclass(frozen=True, slots=True)
class AdAuction:
    """The auction's winners in slot order (`rank_ads(..., all_ranked=True)`: every eligible
    ad by expected value, descending, the winners first)."""

    ads: tuple[RankedAd, ...]
    below_reserve: int
    models: tuple[ModelInfo, ...]
    # The A/B experiment and arm that served the request ("" when none): feedback events
    # quote them.
    experiment: str = ""
    variant: str = ""
    # The x-request-id the call carried: feedback events quote it too.
    request_id: str = ""
    # Which consent mode answered: "personalised" or "context_only" (no per-user state read).
    consent_mode: str = ""

    @property
    def winners(self) -> list[RankedAd]:
        """Ads that won a slot, in slot order."""
        return sorted((ad for ad in self.ads if ad.slot > 0), key=lambda ad: ad.slot)

    def feedback(
        self, user_id: str, event: str, ad_ids: Iterable[str] | None = None
    ) -> list[FeedbackEvent]:
        """Events for winning ads (default: all winners, e.g. impressions), with their slot as
        the position and the price they pay per click."""
        shown = ((ad.ad_id, ad.slot, ad.price) for ad in self.winners)
        return _feedback(shown, self, user_id, event, ad_ids)


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Named output arrays of a raw `Score` call (read-only views of the response bytes)."""

    outputs: dict[str, np.ndarray]
    model: ModelInfo


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """What was shown and what the user did, for the server's durable feedback log."""

    user_id: str
    item_id: str
    # "impression", "click" or "purchase".
    event: str
    # Milliseconds since the Unix epoch; 0: the server's receive time.
    ts_unix_ms: int = 0
    # The serving request the event belongs to (groups impressions with their clicks).
    request_id: str = ""
    experiment: str = ""
    variant: str = ""
    model: str = ""
    model_version: int = 0
    # 1-based slot the item was shown in; 0: unknown.
    position: int = 0
    price: float = 0.0
    # Revenue of a purchase.
    value: float = 0.0
    context: Mapping[str, str] = field(default_factory=dict)
    # "context_only": the user gave no consent to personalisation (the server drops the event
    # or logs it without the user id); "personalised"; "": the server's default.
    consent: str = ""


def _ranking_model(models: Sequence[ModelInfo]) -> ModelInfo | None:
    # The CTR model ranked the answer; the retrieval model only shortlisted it.
    ranked = [model for model in models if model.kind == "ctr"]
    return (ranked or list(models) or [None])[0]


def _feedback(
    shown: Iterable[tuple[str, int, float]],
    answer: Recommendation | AdAuction,
    user_id: str,
    event: str,
    wanted_ids: Iterable[str] | None,
) -> list[FeedbackEvent]:
    """Events for the shown (id, position, price) rows whose id is wanted (None: all)."""
    wanted = None if wanted_ids is None else set(wanted_ids)
    model = _ranking_model(answer.models)
    return [
        FeedbackEvent(
            user_id=user_id,
            item_id=item_id,
            event=event,
            request_id=answer.request_id,
            experiment=answer.experiment,
            variant=answer.variant,
            model=model.name if model else "",
            model_version=model.version if model else 0,
            position=position,
            price=price,
        )
        for item_id, position, price in shown
        if wanted is None or item_id in wanted
    ]


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A model in the server's repository and what the server does with it."""

    name: str
    # Version taking traffic; 0 when none.
    version: int
    kind: str
    provider: str
    available_versions: tuple[int, ...]
    loaded_versions: tuple[int, ...]
    # "SERVING", "UNLOADED" or "FAILED".
    state: str
    # Why the last load failed ("" if it did not).
    last_error: str
    # "latest" or "pinned:<version>".
    policy: str


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an experiment: its traffic share and the models that answer it."""

    name: str
    weight: float
    # Empty / 0: the server's default model / its serving version.
    ctr_model: str = ""
    ctr_version: int = 0
    retrieval_model: str = ""
    retrieval_version: int = 0
    # Guarded rollout, set by the server: "running", or "stopped" by a guardrail (its users
    # then get the experiment's control), why and when (Unix ms).
    state: str = "running"
    stop_reason: str = ""
    stopped_unix_ms: int = 0


@dataclass(frozen=True, slots=True)
class Guardrail:
    """A metric on which no variant may be significantly worse than the control: one that is
    gets stopped (a sequential one-sided z-test, false-stop probability <= alpha)."""

    # "error_rate", "p99_latency", "ctr" or "revenue_per_impression" (the last two from
    # LogEvents' impressions, clicks and purchases naming the experiment and variant).
    metric: str
    # 0: the server's defaults (alpha 0.05, 1000 samples before the first look).
    alpha: float = 0.0
    min_samples: int = 0
    # Relative degradation tolerated (0.1: up to 10% worse than the control is no stop).
    margin: float = 0.0


@dataclass(frozen=True, slots=True)
class Shadow:
    """A candidate CTR model scored on a sampled share of the experiment's live requests and
    logged (`reachrank serve --shadow-log-dir`), never served."""

    name: str
    # Empty / 0: the server's default CTR model / its serving version.
    ctr_model: str = ""
    ctr_version: int = 0
    # Share of the experiment's requests scored in shadow, in (0, 1].
    sample_rate: float = 1.0


@dataclass(frozen=True, slots=True)
class Experiment:
    """An A/B experiment: users split by a salted hash over weighted variants."""

    name: str
    variants: tuple[Variant, ...]
    # RPCs it applies to: "recommend", "rank_ads".
    rpcs: tuple[str, ...] = ("recommend",)
    salt: str = ""
    # Only users in these segments enter (RFM names or "cluster:<k>"); empty: everyone.
    segments: tuple[str, ...] = ()
    enabled: bool = True
    guardrails: tuple[Guardrail, ...] = ()
    # The variant guardrails compare against and that takes a stopped variant's users
    # (empty: the first variant).
    control: str = ""
    shadows: tuple[Shadow, ...] = ()
