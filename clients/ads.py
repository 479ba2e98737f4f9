"""Ads in the SDK (issue 18): auctions over CPC, CPA and CPM bids with campaign rules, billed
feedback events, and the AdCampaigns admin calls. Built on a :class:`ReachRankClient` (its
channel, deadlines and retries)::

    ads = AdsClient(client)
    ads.set_campaign(ad_campaigns_pb2.AdCampaign(campaign_id="c1", advertiser="acme",
                                                 daily_budget=100, ad_ids=["a1"]))
    auction = ads.rank_ads("u1", [BidAd("a1", 40.0, "cpa")], slots=1)
    ads.log_billed([BilledEvent("u1", "a1", "click", charge=auction.winners[0].price)])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reachrank.v1 import ad_campaigns_pb2, ad_campaigns_pb2_grpc, feedback_pb2, ranking_pb2

from clients.convert import consent_value
from clients.retry import new_request_id

if TYPE_CHECKING:
    from clients.client import ReachRankClient

BID_TYPES = {
    "cpc": ranking_pb2.BID_TYPE_CPC,
    "cpa": ranking_pb2.BID_TYPE_CPA,
    "cpm": ranking_pb2.BID_TYPE_CPM,
}
BID_TYPE_NAMES = {v: k for k, v in BID_TYPES.items()}


@dataclass(frozen=True, slots=True)
class BidAd:
    """One candidate: a bid per click ("cpc"), per conversion ("cpa") or per 1000 impressions
    ("cpm")."""

    ad_id: str
    bid: float
    bid_type: str = "cpc"
    features: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PricedAd:
    ad_id: str
    pctr: float
    bid: float
    bid_type: str
    expected_value: float  # per impression
    slot: int
    price: float  # in the bid's unit
    expected_charge: float  # per impression
    pcvr: float | None = None  # when the serving CTR bundle has a conversion model


@dataclass(frozen=True, slots=True)
class MixedAuction:
    ads: tuple[PricedAd, ...]
    below_reserve: int
    # (ad id, reason) of the ads campaign rules kept out of the auction.
    dropped: tuple[tuple[str, str], ...]
    request_id: str = ""

    @property
    def winners(self) -> list[PricedAd]:
        return [a for a in self.ads if a.slot > 0]


@dataclass(frozen=True, slots=True)
class BilledEvent:
    """A feedback event with what its advertiser is billed (a CPC click, a CPA purchase)."""

    user_id: str
    item_id: str
    event: str
    charge: float = 0.0
    ts_unix_ms: int = 0
    request_id: str = ""
    value: float = 0.0


class AdsClient:
    def __init__(self, client: ReachRankClient) -> None:
        self.client = client
        self._campaigns = ad_campaigns_pb2_grpc.AdCampaignsStub(client._channel)

    def rank_ads(
        self,
        user_id: str,
        ads: Sequence[BidAd],
        *,
        slots: int = 1,
        reserve_price: float = 0.0,
        reserve_ecpm: float = 0.0,
        serve_time_unix_ms: int = 0,
        all_ranked: bool = False,
        context: Mapping[str, str] | None = None,
        timeout: float | None = None,
        consent: str | None = None,
    ) -> MixedAuction:
        """``consent`` as in ``ReachRankClient.rank_ads`` ("context_only": no per-user state
        is read, frequency caps included)."""
        request = ranking_pb2.RankAdsRequest(
            user_id=user_id,
            consent=consent_value(consent),
            context={str(k): str(v) for k, v in (context or {}).items()},
            slots=slots,
            reserve_price=reserve_price,
            reserve_ecpm=reserve_ecpm,
            serve_time_unix_ms=serve_time_unix_ms,
            all_ranked=all_ranked,
        )
        columns = request.candidates
        columns.SetInParent()
        columns.ad_ids.extend([a.ad_id for a in ads])
        columns.bids.extend([a.bid for a in ads])
        columns.bid_types.extend([BID_TYPES[a.bid_type] for a in ads])
        for i, a in enumerate(ads):
            if a.features:
                columns.features[i].values.update({k: str(v) for k, v in a.features.items()})
        request_id = new_request_id()
        c = self.client
        response = c._invoke(c._ranking.RankAds, request, timeout, request_id)
        r = response.ranked
        types = list(r.bid_type) or [0] * len(r.ad_ids)
        charges = list(r.expected_charge) or [0.0] * len(r.ad_ids)
        pcvr: list[float | None] = (
            list(r.pcvr) if len(r.pcvr) == len(r.ad_ids) else [None] * len(r.ad_ids)
        )
        priced = tuple(
            PricedAd(*columns)
            for columns in zip(
                r.ad_ids, r.pctr, r.bid, [BID_TYPE_NAMES[t] for t in types], r.expected_value,
                r.slot, r.price, charges, pcvr, strict=True,
            )
        )  # fmt: skip
        dropped = tuple(zip(response.dropped.ad_ids, response.dropped.reasons, strict=True))
        return MixedAuction(priced, response.below_reserve, dropped, request_id)

    def log_billed(self, events: Iterable[BilledEvent], *, timeout: float | None = None) -> int:
        """Log events with their charges (never retried: the log appends)."""
        request = feedback_pb2.LogEventsRequest(
            events=[
                feedback_pb2.FeedbackEvent(
                    user_id=e.user_id,
                    item_id=e.item_id,
                    event=e.event,
                    charge=e.charge,
                    ts_unix_ms=e.ts_unix_ms,
                    request_id=e.request_id,
                    value=e.value,
                )
                for e in events
            ]
        )
        c = self.client
        return c._invoke(c._feedback.LogEvents, request, timeout, None, retryable=False).accepted

    def set_campaign(
        self, campaign: ad_campaigns_pb2.AdCampaign, *, timeout: float | None = None
    ) -> ad_campaigns_pb2.AdCampaign:
        return self.client._invoke(self._campaigns.Set, campaign, timeout, None)

    def campaigns(self, *, timeout: float | None = None) -> list[ad_campaigns_pb2.AdCampaign]:
        request = ad_campaigns_pb2.ListAdCampaignsRequest()
        return list(self.client._invoke(self._campaigns.List, request, timeout, None).campaigns)

    def delete_campaign(self, campaign_id: str, *, timeout: float | None = None) -> None:
        request = ad_campaigns_pb2.DeleteAdCampaignRequest(campaign_id=campaign_id)
        self.client._invoke(self._campaigns.Delete, request, timeout, None)

    def spend(
        self, campaign_ids: Sequence[str] = (), at_unix_ms: int = 0, *, timeout: float | None = None
    ) -> dict[str, ad_campaigns_pb2.CampaignSpend]:
        request = ad_campaigns_pb2.CampaignSpendRequest(
            campaign_ids=list(campaign_ids), at_unix_ms=at_unix_ms
        )
        response = self.client._invoke(self._campaigns.Spend, request, timeout, None)
        return {s.campaign_id: s for s in response.campaigns}
