"""Ad campaigns: validation, each campaign's day (its time zone, flight, traffic curve) and the
book RankAds reads (ad id -> campaign), kept in step with a campaigns file every worker polls.

The file is ``{"campaigns": [AdCampaign, ...]}`` in protobuf's JSON mapping, written like the
experiments file (exclusive lock, merged with other processes' changes, atomic replace, fsync).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from google.protobuf import json_format
from reachrank.v1 import ad_campaigns_pb2

from engine.errors import InvalidArgument, NotFound
from engine.experiment_file import ExperimentFile, write_json_atomically

log = logging.getLogger(__name__)
Scope = ad_campaigns_pb2.FrequencyCap.Scope
SCOPE_NAMES = {
    Scope.SCOPE_AD: "ad",
    Scope.SCOPE_CAMPAIGN: "campaign",
    Scope.SCOPE_ADVERTISER: "adv",
}
DAY_MS = 86_400_000


class CampaignError(InvalidArgument):
    """A campaign definition that cannot be served; the message names the field."""


def _date(text: str, where: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CampaignError(f"{where} must be a date YYYY-MM-DD, got {text!r}") from None


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise CampaignError(f"{where}.time_zone {name!r} is not an IANA time zone") from None


def validate(c: ad_campaigns_pb2.AdCampaign) -> None:
    """Raise CampaignError naming the first bad field."""
    if not c.campaign_id:
        raise CampaignError("campaign.campaign_id is required")
    where = f"campaign {c.campaign_id!r}"
    if not c.advertiser:
        raise CampaignError(f"{where}: advertiser is required")
    if not (math.isfinite(c.daily_budget) and c.daily_budget > 0):
        raise CampaignError(f"{where}: daily_budget must be finite and > 0, got {c.daily_budget}")
    start, end = (
        _date(c.start_date, f"{where}: start_date"),
        _date(c.end_date, f"{where}: end_date"),
    )
    if start is not None and end is not None and end < start:
        raise CampaignError(f"{where}: end_date {c.end_date} is before start_date {c.start_date}")
    _zone(c.time_zone, where)
    if len(set(c.ad_ids)) != len(c.ad_ids) or "" in c.ad_ids:
        raise CampaignError(f"{where}: ad_ids must be distinct and non-empty")
    for i, cap in enumerate(c.caps):
        if cap.max_impressions < 1 or cap.window_s < 1:
            raise CampaignError(
                f"{where}: caps[{i}]: max_impressions and window_s must be >= 1, got "
                f"{cap.max_impressions} per {cap.window_s} s"
            )
    curve = list(c.traffic_curve)
    if curve and (
        len(curve) != 24 or not all(math.isfinite(w) and w >= 0 for w in curve) or not sum(curve)
    ):
        raise CampaignError(
            f"{where}: traffic_curve must hold 24 hourly weights >= 0 (not all 0), got {curve}"
        )


@dataclass(frozen=True)
class Day:
    """Where a time falls in a campaign's local day."""

    key: str  # "<campaign>|YYYY-MM-DD": the spend and pacing state's key
    date: dt.date
    elapsed_s: float  # since local midnight
    length_s: float


class Campaign:
    """A validated campaign, compiled for the request path."""

    def __init__(self, message: ad_campaigns_pb2.AdCampaign) -> None:
        validate(message)
        self.message = message
        self.id, self.advertiser = message.campaign_id, message.advertiser
        self.budget = float(message.daily_budget)
        self.zone = _zone(message.time_zone, "")
        self.start = _date(message.start_date, "")
        self.end = _date(message.end_date, "")
        self.paced = message.pacing == ad_campaigns_pb2.AdCampaign.PACING_EVEN
        self.paused = message.paused
        curve = np.array(message.traffic_curve or [1.0] * 24, dtype=np.float64)
        # Cumulative share of the day's traffic at each hour boundary: 0 .. 1 over 25 points.
        self.cumulative = np.concatenate([[0.0], np.cumsum(curve) / curve.sum()])
        # (scope name, the scope's id, max impressions, window) per cap.
        scope_id = {"ad": "", "campaign": self.id, "adv": self.advertiser}
        self.caps = tuple(
            (SCOPE_NAMES[c.scope], scope_id[SCOPE_NAMES[c.scope]], c.max_impressions, c.window_s)
            for c in message.caps
        )
        self._day: tuple[float, float, str, dt.date, float] | None = None

    def day(self, now_ms: int) -> Day:
        # The request path asks for the same day over and over: its bounds are cached (one
        # datetime computation per campaign per day, not per request).
        cached = self._day
        if cached is not None and cached[0] <= now_ms < cached[1]:
            start, _, key, date, length_s = cached
            return Day(key, date, (now_ms - start) / 1000, length_s)
        local = dt.datetime.fromtimestamp(now_ms / 1000, self.zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = (midnight + dt.timedelta(days=1)).replace(tzinfo=self.zone)
        start_ms = midnight.timestamp() * 1000
        end_ms = following.timestamp() * 1000
        key, length_s = f"{self.id}|{local.date()}", (end_ms - start_ms) / 1000
        self._day = (start_ms, end_ms, key, local.date(), length_s)
        return Day(key, local.date(), (now_ms - start_ms) / 1000, length_s)

    def share(self, day: Day, elapsed_s: float | None = None) -> float:
        """Share of the day's traffic before ``elapsed_s`` (default: now) by the curve."""
        hours = 24.0 * (day.elapsed_s if elapsed_s is None else elapsed_s) / day.length_s
        return float(np.interp(hours, np.arange(25.0), self.cumulative))

    def closed_reason(self, day: Day) -> str | None:
        """Why the campaign serves nothing today (None: it may serve)."""
        if self.paused:
            return "campaign_paused"
        if self.start is not None and day.date < self.start:
            return "campaign_not_started"
        if self.end is not None and day.date > self.end:
            return "campaign_ended"
        return None


class CampaignFile(ExperimentFile):
    """The campaigns file: the experiments file's locking and atomic replace, its own content."""

    def read(self) -> list[ad_campaigns_pb2.AdCampaign]:  # type: ignore[override]
        if not self.path.exists():
            return []
        return load_campaigns(self.path)

    def write(self, campaigns: Iterable[ad_campaigns_pb2.AdCampaign]) -> None:  # type: ignore[override]
        document = {
            "campaigns": [
                json_format.MessageToDict(c) for c in sorted(campaigns, key=lambda c: c.campaign_id)
            ]
        }
        write_json_atomically(self.path, document)


def load_campaigns(path: Path) -> list[ad_campaigns_pb2.AdCampaign]:
    try:
        entries = json.loads(Path(path).read_text())["campaigns"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CampaignError(f"{path}: expected {{'campaigns': [...]}}: {exc}") from None
    out = []
    for i, entry in enumerate(entries):
        try:
            campaign = json_format.ParseDict(entry, ad_campaigns_pb2.AdCampaign())
            validate(campaign)
        except (json_format.ParseError, CampaignError) as exc:
            raise CampaignError(f"{path}: campaigns[{i}]: {exc}") from None
        out.append(campaign)
    _check_ads_unique(out, str(path))
    return out


def _check_ads_unique(campaigns: Sequence[ad_campaigns_pb2.AdCampaign], where: str) -> None:
    owner: dict[str, str] = {}
    for c in campaigns:
        for ad in c.ad_ids:
            if owner.setdefault(ad, c.campaign_id) != c.campaign_id:
                raise CampaignError(
                    f"{where}: ad {ad!r} belongs to campaigns {owner[ad]!r} and {c.campaign_id!r}"
                    "; an ad belongs to one campaign"
                )


class CampaignBook:
    """The campaigns a server runs (thread-safe), optionally backed by a :class:`CampaignFile`
    that ``refresh`` re-reads when another process changed it. ``by_ad`` is replaced whole on
    every change, so a request reads one consistent book without a lock."""

    def __init__(
        self,
        campaigns: Sequence[ad_campaigns_pb2.AdCampaign] = (),
        backing: CampaignFile | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._backing = backing
        self._stamp = backing.stamp() if backing is not None else None
        self.by_id: dict[str, Campaign] = {}
        self.by_ad: dict[str, Campaign] = {}
        self._adopt(campaigns, self._stamp)

    @property
    def active(self) -> bool:
        """Whether any campaign is defined (else RankAds runs without campaign rules)."""
        return bool(self.by_id)

    def _adopt(self, campaigns: Iterable[ad_campaigns_pb2.AdCampaign], stamp: object) -> None:
        compiled = {c.campaign_id: Campaign(c) for c in campaigns}
        # An advertiser's caps count the impressions of every one of its campaigns, whichever
        # campaign declared them.
        by_advertiser: dict[str, set[tuple[str, str, int, int]]] = {}
        for c in compiled.values():
            by_advertiser.setdefault(c.advertiser, set()).update(
                cap for cap in c.caps if cap[0] == "adv"
            )
        for c in compiled.values():
            own = tuple(cap for cap in c.caps if cap[0] != "adv")
            c.caps = own + tuple(sorted(by_advertiser[c.advertiser]))
        by_ad = {ad: c for c in compiled.values() for ad in c.message.ad_ids}
        self.by_id, self.by_ad, self._stamp = compiled, by_ad, stamp

    def _change(self, edit: dict[str, ad_campaigns_pb2.AdCampaign]) -> None:
        """Apply ``edit`` (id -> campaign, or an empty message to delete) to the current set."""
        with self._lock:
            if self._backing is None:
                current = {i: c.message for i, c in self.by_id.items()}
                self._apply(current, edit)
                self._adopt(current.values(), None)
                return
            with self._backing.locked():
                current = {c.campaign_id: c for c in self._backing.read()}  # others' too
                self._apply(current, edit)
                self._backing.write(current.values())
                self._adopt(current.values(), self._backing.stamp())

    @staticmethod
    def _apply(
        current: dict[str, ad_campaigns_pb2.AdCampaign],
        edit: dict[str, ad_campaigns_pb2.AdCampaign],
    ) -> None:
        for campaign_id, campaign in edit.items():
            if campaign.campaign_id:
                current[campaign_id] = campaign
            elif current.pop(campaign_id, None) is None:
                raise NotFound(f"no ad campaign named {campaign_id!r}")
        _check_ads_unique(list(current.values()), "campaigns")

    def set(self, campaign: ad_campaigns_pb2.AdCampaign) -> ad_campaigns_pb2.AdCampaign:
        validate(campaign)
        stored = ad_campaigns_pb2.AdCampaign()
        stored.CopyFrom(campaign)
        self._change({stored.campaign_id: stored})
        return stored

    def delete(self, campaign_id: str) -> None:
        self._change({campaign_id: ad_campaigns_pb2.AdCampaign()})

    def list(self) -> list[ad_campaigns_pb2.AdCampaign]:
        book = self.by_id
        return [book[i].message for i in sorted(book)]

    def refresh(self) -> bool:
        """Adopt the file's campaigns if another process changed it; True if so. A file that
        does not parse is reported and the campaigns in memory stay."""
        if self._backing is None or self._backing.stamp() == self._stamp:
            return False
        with self._lock, self._backing.locked():
            stamp = self._backing.stamp()
            if stamp == self._stamp:
                return False
            try:
                campaigns = self._backing.read()
            except CampaignError as exc:
                log.warning("campaigns file not adopted, serving the previous ones: %s", exc)
                self._stamp = stamp
                return False
            self._adopt(campaigns, stamp)
        return True
