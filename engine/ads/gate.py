"""What RankAds asks before and tells after each auction when campaigns are defined: which
candidates may enter (their campaign's flight, budget, pacing throttle and the user's frequency
caps) and what the winners cost (spend and cap counters in the shared store).

Budget check: an ad's campaign is exhausted once ``billed + expected charges of impressions
served within the click window`` reaches the daily budget, where billed comes from logged
clicks/purchases (their ``charge``, reconciled through LogEvents) and CPM impressions. The
expected part covers clicks still to come; it double-counts clicks already billed within the
window, which errs on the side of underspend. Frequency caps are reserved atomically for each
winner after the auction; a winner whose reservation fails (a concurrent request took the last
impression) is removed from the answer, so a cap is never exceeded.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from reachrank.v1 import ranking_pb2

from engine.ads.campaigns import Campaign, CampaignBook, Day
from engine.ads.pacing import next_pace
from engine.auction import CPM
from engine.errors import InvalidArgument
from engine.state.ad_spend import Add, Spend, SpendStore
from engine.state.freq_caps import CapStore, Reservation

BUCKET_S = 60


class AdRequest:
    """One RankAds call's candidates after the campaign rules, and what to record after."""

    __slots__ = (
        "ad_ids",
        "bid_types",
        "bids",
        "campaigns",
        "cap_plans",
        "days",
        "dropped",
        "now_ms",
        "overrides",
        "user_id",
    )

    def __init__(
        self,
        ad_ids: list[str],
        bids: np.ndarray,
        overrides: dict[int, dict[str, str]],
        bid_types: np.ndarray | None,
        user_id: str,
        now_ms: int,
    ) -> None:
        self.ad_ids, self.bids, self.overrides, self.bid_types = ad_ids, bids, overrides, bid_types
        self.user_id, self.now_ms = user_id, now_ms
        self.campaigns: dict[str, Campaign] | None = None  # ad id -> campaign (campaigns on)
        self.days: dict[str, Day] = {}
        self.dropped: tuple[list[str], list[str]] | None = None
        self.cap_plans: dict[str, Reservation] = {}  # ad id -> its cap counters (admit)

    @property
    def nothing_left(self) -> bool:
        return not self.ad_ids and self.dropped is not None

    def fill(self, response: ranking_pb2.RankAdsResponse) -> None:
        if self.dropped is not None and self.dropped[0]:
            response.dropped.ad_ids.extend(self.dropped[0])
            response.dropped.reasons.extend(self.dropped[1])


def bid_types_of(request: ranking_pb2.RankAdsRequest, n: int) -> np.ndarray | None:
    """The request's bid types (None: every ad CPC, the old contract)."""
    if request.HasField("candidates"):
        given = request.candidates.bid_types
        if not given:
            return None
        if len(given) != n:
            raise InvalidArgument(
                f"candidates carry {n} ad_ids but {len(given)} bid_types; give one per ad or none"
            )
        types = np.array(given, dtype=np.int64)
    else:
        types = np.fromiter((a.bid_type for a in request.ads), dtype=np.int64, count=n)
        if not types.any():
            return None
    if ((types < 0) | (types > CPM)).any():
        raise InvalidArgument(
            f"bid types must be CPC, CPA or CPM, got {sorted(set(types.tolist()))}"
        )
    return types


class AdGate:
    """Campaign rules on the RankAds path; off (one check per request) while no campaign is
    defined."""

    def __init__(
        self,
        book: CampaignBook,
        spend: SpendStore,
        caps: CapStore,
        click_window_s: float = 600.0,
        pacing_interval_s: float = 300.0,
        min_throttle: float = 0.01,
        replay_time: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.book, self.spend, self.caps = book, spend, caps
        self.window_buckets = max(1, math.ceil(click_window_s / BUCKET_S))
        self.pacing_interval_s = pacing_interval_s
        self.min_throttle = min_throttle
        self.replay_time = replay_time
        self.rng = rng or random.Random()

    def now_ms(self, request: ranking_pb2.RankAdsRequest) -> int:
        if self.replay_time and request.serve_time_unix_ms > 0:
            return int(request.serve_time_unix_ms)
        return int(time.time() * 1000)

    def admit(
        self,
        request: ranking_pb2.RankAdsRequest,
        user_id: str,
        ad_ids: list[str],
        bids: np.ndarray,
        overrides: dict[int, dict[str, str]],
    ) -> AdRequest:
        """The candidates allowed into the auction (all of them while no campaign is defined)."""
        types = bid_types_of(request, len(ad_ids))
        if not self.book.active:
            return AdRequest(ad_ids, bids, overrides, types, user_id, 0)
        if not ad_ids:
            raise InvalidArgument("ads must not be empty")
        now = self.now_ms(request)
        out = AdRequest(ad_ids, bids, overrides, types, user_id, now)
        by_ad = self.book.by_ad
        reasons: list[str | None] = [None] * len(ad_ids)
        campaigns: dict[str, Campaign] = {}
        for i, ad in enumerate(ad_ids):
            c = by_ad.get(ad)
            if c is None:
                reasons[i] = "unknown_campaign"
            else:
                campaigns[ad] = c
        days = {c.id: c.day(now) for c in set(campaigns.values())}
        open_ids = []
        for cid, day in days.items():
            why = self.book.by_id[cid].closed_reason(day)
            if why is None:
                open_ids.append(cid)
            else:
                for i, ad in enumerate(ad_ids):
                    if reasons[i] is None and campaigns[ad].id == cid:
                        reasons[i] = why
        closed = self._budget_and_pacing([self.book.by_id[c] for c in open_ids], days)
        for i, ad in enumerate(ad_ids):
            if reasons[i] is None and campaigns[ad].id in closed:
                reasons[i] = closed[campaigns[ad].id]
        self._capped(out, ad_ids, campaigns, reasons)
        keep = [i for i, r in enumerate(reasons) if r is None]
        if len(keep) < len(ad_ids):
            out.dropped = (
                [ad_ids[i] for i, r in enumerate(reasons) if r is not None],
                [r for r in reasons if r is not None],
            )
            out.ad_ids = [ad_ids[i] for i in keep]
            out.bids = bids[keep]
            out.overrides = {j: overrides[i] for j, i in enumerate(keep) if i in overrides}
            if types is not None:
                out.bid_types = types[keep]
        else:
            out.dropped = ([], [])
        if out.bid_types is None:  # campaigns need every winner's expected charge
            out.bid_types = np.zeros(len(out.ad_ids), dtype=np.int64)
        out.campaigns, out.days = campaigns, days
        return out

    def recent_buckets(self, day: Day) -> range:
        """The minute buckets of the click window ending now."""
        minute = int(day.elapsed_s // BUCKET_S)
        return range(max(0, minute - self.window_buckets), minute + 1)

    def _budget_and_pacing(
        self, campaigns: Sequence[Campaign], days: Mapping[str, Day]
    ) -> dict[str, str]:
        """Campaign id -> why it sits this auction out (budget spent, or the throttle)."""
        if not campaigns:
            return {}
        # One read per distinct click window (campaigns in one time zone share it).
        groups: dict[range, list[Campaign]] = {}
        for c in campaigns:
            groups.setdefault(self.recent_buckets(days[c.id]), []).append(c)
        pairs: list[tuple[Campaign, Spend]] = []
        for buckets, group in groups.items():
            spends = self.spend.read([days[c.id].key for c in group], buckets)
            pairs += zip(group, spends, strict=True)
        out = {}
        for c, s in pairs:
            day = days[c.id]
            if s.billed + s.recent >= c.budget:
                out[c.id] = "budget_exhausted"
            elif c.paced and self.rng.random() >= self._throttle(c, day, s):
                out[c.id] = "paced"
        return out

    def _throttle(self, c: Campaign, day: Day, s: Spend) -> float:
        interval = int(day.elapsed_s // self.pacing_interval_s)
        if s.pace.interval >= interval:
            return s.pace.throttle
        step = self.pacing_interval_s
        pace = next_pace(
            s.pace,
            interval,
            s.served,
            c.budget,
            c.share(day, (interval - 1) * step),
            c.share(day, interval * step),
            c.share(day, min((interval + 1) * step, day.length_s)),
            self.min_throttle,
        )
        self.spend.set_pace(day.key, pace)  # the first worker to get here decides for all
        return pace.throttle

    @staticmethod
    def _cap_plans(
        ad_ids: Sequence[str], campaigns: Mapping[str, Campaign], user_id: str, now_ms: int
    ) -> dict[str, Reservation]:
        """Each ad's cap counters; a campaign's shared ones (campaign, advertiser scopes) and
        each window's user suffix are formatted once per request."""
        suffix: dict[int, str] = {}
        shared: dict[str, tuple[list[str | None], list[int], list[int]]] = {}
        out: dict[str, Reservation] = {}
        for ad in ad_ids:
            c = campaigns[ad]
            plan = shared.get(c.id)
            if plan is None:
                names: list[str | None] = []
                for scope, scope_id, _, window_s in c.caps:
                    end = suffix.get(window_s)
                    if end is None:
                        end = suffix[window_s] = (
                            f":{window_s}:{user_id}:{now_ms // (1000 * window_s)}"
                        )
                    names.append(f"{scope}:{scope_id}{end}" if scope_id else f"ad:\0{end}")
                plan = shared[c.id] = (
                    names,
                    [cap[2] for cap in c.caps],
                    [cap[3] for cap in c.caps],
                )
            names, limits, ttls = plan
            keys = [k if not k.startswith("ad:\0") else f"ad:{ad}{k[4:]}" for k in names]  # type: ignore[union-attr]
            out[ad] = (keys, limits, ttls)
        return out

    def _capped(
        self,
        ads: AdRequest,
        ad_ids: Sequence[str],
        campaigns: Mapping[str, Campaign],
        reasons: list[str | None],
    ) -> None:
        """Mark the ads whose user is at a cap (the keys are kept for the winners' commit). A
        request without a user whose state may be read ("": no consent) is not counted."""
        if not ads.user_id:
            return
        capped = [i for i, r in enumerate(reasons) if r is None and campaigns[ad_ids[i]].caps]
        if not capped:
            return
        plans = ads.cap_plans = self._cap_plans(
            [ad_ids[i] for i in capped], campaigns, ads.user_id, ads.now_ms
        )
        flat = [k for plan in plans.values() for k in plan[0]]
        limits = [limit for plan in plans.values() for limit in plan[1]]
        over = [c >= limit for c, limit in zip(self.caps.counts(flat), limits, strict=True)]
        at = 0
        for i, plan in zip(capped, plans.values(), strict=True):
            n = len(plan[0])
            if any(over[at : at + n]):
                reasons[i] = "frequency_cap"
            at += n

    def commit(self, ads: AdRequest, result: Any) -> Any:
        """Record what the auction served: reserve each winner's cap counters (removing a
        winner a concurrent request capped), add its expected charge to the campaign's spend.
        Returns the result without refused winners."""
        if ads.campaigns is None or not len(result.ad_ids):
            return result
        winners = [j for j, s in enumerate(result.slot.tolist()) if s > 0]
        with_caps = [j for j in winners if result.ad_ids[j] in ads.cap_plans]
        refused: set[int] = set()
        if with_caps:
            plans = [ads.cap_plans[result.ad_ids[j]] for j in with_caps]
            for j, ok in zip(with_caps, self.caps.reserve(plans, ads.now_ms), strict=True):
                if not ok:
                    refused.add(j)
        adds: list[Add] = []
        for j in winners:
            if j in refused:
                continue
            c = ads.campaigns[result.ad_ids[j]]
            day = ads.days[c.id]
            charge = float(result.expected_charge[j])
            cpm = int(result.bid_type[j]) == CPM
            adds.append((day.key, int(day.elapsed_s // BUCKET_S), charge, charge if cpm else 0.0))
        if adds:
            self.spend.add(adds)
        if not refused:
            return result
        assert ads.dropped is not None
        for j in sorted(refused):
            ads.dropped[0].append(result.ad_ids[j])
            ads.dropped[1].append("frequency_cap")
        keep = [j for j in range(len(result.ad_ids)) if j not in refused]
        at = np.array(keep, dtype=np.int64)
        n = len(result.ad_ids)
        columns = {  # every per-ad column of the result, whatever other hooks added
            f.name: getattr(result, f.name)[at]
            for f in dataclasses.fields(result)
            if isinstance(getattr(result, f.name), np.ndarray) and len(getattr(result, f.name)) == n
        }
        return dataclasses.replace(result, ad_ids=[result.ad_ids[j] for j in keep], **columns)

    def observe(self, events: Iterable[Any]) -> None:
        """Bill logged clicks/purchases (their ``charge``) to their ads' campaigns."""
        by_ad = self.book.by_ad
        if not by_ad:
            return
        now = int(time.time() * 1000)
        adds: list[Add] = []
        for e in events:
            charge = getattr(e, "charge", 0.0)
            if charge > 0 and e.event in ("click", "purchase"):
                c = by_ad.get(e.item_id)
                if c is not None:
                    day = c.day(int(e.ts_unix_ms) or now)
                    adds.append((day.key, int(day.elapsed_s // BUCKET_S), 0.0, float(charge)))
        if adds:
            self.spend.add(adds)


def disabled_gate() -> AdGate:
    """A gate with no campaign (RankAds as before: every ad enters, nothing recorded)."""
    from engine.state.ad_spend import EmbeddedSpend
    from engine.state.freq_caps import EmbeddedCaps

    return AdGate(CampaignBook(), EmbeddedSpend(), EmbeddedCaps())
