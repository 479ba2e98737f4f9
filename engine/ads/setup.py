"""Build the ad gate from the settings and add the AdCampaigns service to a server: campaigns
from ``ad_campaigns_file`` (polled, so every worker serves the same ones), spend and caps in
the state store (shared when it is Redis)."""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

import grpc
from reachrank.v1 import ad_campaigns_pb2_grpc

from engine.ads.campaigns import CampaignBook, CampaignFile
from engine.ads.gate import AdGate
from engine.ads.servicer import SERVICE_NAME, AdCampaignsServicer
from engine.settings import Settings
from engine.state import StateStore
from engine.state.ad_spend import spend_store_for
from engine.state.freq_caps import cap_store_for

log = logging.getLogger(__name__)


@dataclass
class AdServices:
    gate: AdGate
    service_name: str = SERVICE_NAME
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def close(self) -> None:
        """Stop the campaigns poll (RunningServer.stop calls it) and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def poll(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    if self.gate.book.refresh():
                        log.info(
                            "ad campaigns file changed: %d campaigns", len(self.gate.book.by_id)
                        )
                except Exception:  # a poll must never kill the thread
                    log.exception("ad campaigns poll failed")

        # A daemon too, so a server never stopped cannot hold the interpreter open.
        self._thread = threading.Thread(target=loop, name="ad-campaigns-poll", daemon=True)
        self._thread.start()


def add_ads_to_server(
    server: grpc.Server, settings: Settings, state: StateStore | None
) -> AdServices:
    backing = CampaignFile(settings.ad_campaigns_file) if settings.ad_campaigns_file else None
    book = CampaignBook(backing.read() if backing is not None else (), backing)
    gate = AdGate(
        book,
        spend_store_for(state),
        cap_store_for(state),
        click_window_s=settings.ads_click_window_s,
        pacing_interval_s=settings.ads_pacing_interval_s,
        replay_time=settings.ads_replay_time,
        rng=random.Random(settings.ads_seed) if settings.ads_seed is not None else None,
    )
    ad_campaigns_pb2_grpc.add_AdCampaignsServicer_to_server(AdCampaignsServicer(gate), server)
    services = AdServices(gate)
    if backing is not None and settings.ad_campaigns_poll_interval_s > 0:
        services.poll(settings.ad_campaigns_poll_interval_s)
    return services
