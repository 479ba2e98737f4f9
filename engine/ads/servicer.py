"""The ``reachrank.v1.AdCampaigns`` servicer: set, list and delete campaigns in the book (and
its file), and report each campaign's spend, pacing target and throttle for today."""

from __future__ import annotations

import time

import grpc
from reachrank.v1 import ad_campaigns_pb2, ad_campaigns_pb2_grpc

from engine.ads.gate import AdGate
from engine.errors import NotFound
from engine.grpc_adapter import grpc_errors

SERVICE_NAME = ad_campaigns_pb2.DESCRIPTOR.services_by_name["AdCampaigns"].full_name


class AdCampaignsServicer(ad_campaigns_pb2_grpc.AdCampaignsServicer):
    def __init__(self, gate: AdGate) -> None:
        self.gate = gate

    @grpc_errors
    def Set(
        self, request: ad_campaigns_pb2.AdCampaign, context: grpc.ServicerContext
    ) -> ad_campaigns_pb2.AdCampaign:
        return self.gate.book.set(request)

    @grpc_errors
    def List(
        self, request: ad_campaigns_pb2.ListAdCampaignsRequest, context: grpc.ServicerContext
    ) -> ad_campaigns_pb2.ListAdCampaignsResponse:
        return ad_campaigns_pb2.ListAdCampaignsResponse(campaigns=self.gate.book.list())

    @grpc_errors
    def Delete(
        self, request: ad_campaigns_pb2.DeleteAdCampaignRequest, context: grpc.ServicerContext
    ) -> ad_campaigns_pb2.DeleteAdCampaignResponse:
        self.gate.book.delete(request.campaign_id)
        return ad_campaigns_pb2.DeleteAdCampaignResponse()

    @grpc_errors
    def Spend(
        self, request: ad_campaigns_pb2.CampaignSpendRequest, context: grpc.ServicerContext
    ) -> ad_campaigns_pb2.CampaignSpendResponse:
        book = self.gate.book.by_id
        ids = list(request.campaign_ids) or sorted(book)
        for campaign_id in ids:
            if campaign_id not in book:
                raise NotFound(f"no ad campaign named {campaign_id!r}")
        now = int(request.at_unix_ms) or int(time.time() * 1000)
        campaigns = [book[i] for i in ids]
        days = [c.day(now) for c in campaigns]
        out = ad_campaigns_pb2.CampaignSpendResponse()
        for c, day in zip(campaigns, days, strict=True):
            (s,) = self.gate.spend.read([day.key], self.gate.recent_buckets(day))
            out.campaigns.add(
                campaign_id=c.id,
                day=str(day.date),
                daily_budget=c.budget,
                billed=s.billed,
                served_expected=s.served,
                spend=s.billed + s.recent,
                throttle=s.pace.throttle if c.paced else 1.0,
                target=c.budget * c.share(day),
            )
        return out
