"""The asyncio ReachRank client: the same calls, options and errors as `ReachRankClient`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reachrank.v1 import (
    campaigns_pb2_grpc,
    feedback_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    privacy_pb2,
    privacy_pb2_grpc,
    ranking_pb2_grpc,
)

from clients import convert
from clients.campaigns import CampaignPlan, campaign_plan, campaign_request
from clients.channel import open_aio_channel
from clients.client import ERASURE_TIMEOUT_S, resolve_options, serving_status_name
from clients.errors import ReachRankError
from clients.options import ClientOptions
from clients.retry import CallAttempts, ReadyWait, new_request_id
from clients.types import (
    AdAuction,
    AdBid,
    Audience,
    Experiment,
    FeedbackEvent,
    ModelStatus,
    Profile,
    Recommendation,
    ScoreResult,
    SimilarItems,
)


class AsyncReachRankClient:
    """Asyncio client for `reachrank.v1.Ranking`; see `ReachRankClient` for the arguments.

    Create it inside the running event loop (gRPC binds the channel to it) and close it
    with ``await client.close()`` or ``async with``.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        options: ClientOptions | None = None,
        **overrides: Any,
    ) -> None:
        self.options = resolve_options(options, overrides)
        self._channel = open_aio_channel(target, self.options)
        self._ranking = ranking_pb2_grpc.RankingStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._experiments = models_pb2_grpc.ExperimentsStub(self._channel)
        self._privacy = privacy_pb2_grpc.PrivacyStub(self._channel)
        self._feedback = feedback_pb2_grpc.FeedbackStub(self._channel)
        self._campaigns = campaigns_pb2_grpc.CampaignsStub(self._channel)
        self._rng = random.Random()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        context: Mapping[str, Any] | None = None,
        categories: str | Iterable[str] | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        exclude: str | Iterable[str] | None = None,
        max_per_category: int = 0,
        mmr_lambda: float = 0.0,
        consent: str | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Recommendation:
        """The `k` items `user_id` is most likely to engage with, best first.

        `max_per_category` caps items per category and `mmr_lambda` in (0, 1] trades
        relevance for variety (maximal marginal relevance); 0 turns either off. `consent`
        "context_only": the user allows no personalisation (answered from context and
        popularity only; `Recommendation.consent_mode` says which mode answered); None: the
        server's default.
        """
        request = convert.recommend_request(
            user_id,
            k,
            context=context,
            categories=categories,
            min_price=min_price,
            max_price=max_price,
            exclude=exclude,
            max_per_category=max_per_category,
            mmr_lambda=mmr_lambda,
            consent=consent,
        )
        request_id = request_id or new_request_id()
        response = await self._invoke(self._ranking.Recommend, request, timeout, request_id)
        return convert.recommendation(response, request_id)

    async def rank_ads(
        self,
        user_id: str,
        ads: Iterable[AdBid | Mapping[str, Any]],
        *,
        slots: int = 1,
        reserve_price: float = 0.0,
        context: Mapping[str, Any] | None = None,
        all_ranked: bool = False,
        consent: str | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> AdAuction:
        """Run a pCTR x bid auction over `ads` (AdBid or dicts) for `slots` slots. The result
        holds the winners, or with `all_ranked` every eligible ad by expected value. `consent`
        as in `recommend`."""
        request = convert.rank_ads_request(
            user_id,
            ads,
            slots=slots,
            reserve_price=reserve_price,
            context=context,
            all_ranked=all_ranked,
            consent=consent,
        )
        request_id = request_id or new_request_id()
        response = await self._invoke(self._ranking.RankAds, request, timeout, request_id)
        return convert.ad_auction(response, request_id)

    async def score(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: int = 0,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> ScoreResult:
        """Run `model` (version 0: the serving one) on named input arrays."""
        request = convert.score_request(model, inputs, version)
        response = await self._invoke(self._ranking.Score, request, timeout, request_id)
        return convert.score_result(response)

    async def similar_items(
        self,
        item_id: str,
        k: int = 10,
        *,
        categories: str | Iterable[str] | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> SimilarItems:
        """The `k` items most like `item_id` ("more like this"), best first."""
        request = convert.similar_items_request(
            item_id, k, categories=categories, min_price=min_price, max_price=max_price
        )
        response = await self._invoke(self._ranking.SimilarItems, request, timeout, request_id)
        return convert.similar_items(response)

    async def audience(
        self,
        item_ids: str | Iterable[str],
        n: int = 100,
        *,
        segments: str | Iterable[str] | None = None,
        include_consumers: bool = False,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> Audience:
        """The `n` users likeliest to respond to an item or a campaign of items."""
        request = convert.audience_request(
            item_ids, n, segments=segments, include_consumers=include_consumers
        )
        response = await self._invoke(self._ranking.Audience, request, timeout, request_id)
        return convert.audience(response)

    async def plan_campaign(
        self,
        campaign_id: str,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Any,
    ) -> CampaignPlan:
        """As `ReachRankClient.plan_campaign`."""
        request = campaign_request(campaign_id, **options)
        response = await self._invoke(self._campaigns.Plan, request, timeout, request_id)
        return campaign_plan(response)

    async def profile(
        self, user_id: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> Profile:
        """A user's profile features and segments (`known` is False for a new user)."""
        request = convert.profile_request(user_id)
        response = await self._invoke(self._ranking.Profile, request, timeout, request_id)
        return convert.profile(response)

    async def log_events(
        self,
        events: Iterable[FeedbackEvent | Mapping[str, Any]],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> int:
        """Append feedback events to the server's durable log; returns how many it wrote.

        Never retried (the log appends, so a resend could double-count): on UNAVAILABLE the
        caller decides whether to send again.
        """
        request = convert.log_events_request(events)
        response = await self._invoke(
            self._feedback.LogEvents, request, timeout, request_id, retryable=False
        )
        return response.accepted

    async def forget_user(
        self, user_id: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> dict[str, int]:
        """Admin: erase `user_id` everywhere the server keeps data and serve them as a new user
        from now on (see `ReachRankClient.forget_user`). Returns what was erased per place;
        `timeout` defaults to `ERASURE_TIMEOUT_S`."""
        request = privacy_pb2.ForgetUserRequest(user_id=user_id)
        timeout = ERASURE_TIMEOUT_S if timeout is None else timeout
        response = await self._invoke(self._privacy.ForgetUser, request, timeout, request_id)
        return dict(response.erased)

    async def models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        """Every model in the server's repository and its state."""
        request = models_pb2.ListModelsRequest()
        response = await self._invoke(self._models.List, request, timeout, None)
        return [convert.model_status(status) for status in response.models]

    async def load_model(
        self, name: str, version: int = 0, *, timeout: float | None = None
    ) -> ModelStatus:
        """Load or reload `name` (version 0: as its policy says; else pin that version).

        The server validates and warms the new version before it takes traffic; a failed load
        keeps the serving version and reports why in `last_error`.
        """
        request = models_pb2.LoadModelRequest(name=name, version=version)
        response = await self._invoke(self._models.Load, request, timeout, None)
        return convert.model_status(response.model)

    async def unload_model(self, name: str, *, timeout: float | None = None) -> ModelStatus:
        """Stop serving `name` and free its memory."""
        request = models_pb2.UnloadModelRequest(name=name)
        response = await self._invoke(self._models.Unload, request, timeout, None)
        return convert.model_status(response.model)

    async def experiments(self, *, timeout: float | None = None) -> list[Experiment]:
        """The server's A/B experiments."""
        request = models_pb2.ListExperimentsRequest()
        response = await self._invoke(self._experiments.List, request, timeout, None)
        return [convert.experiment(message) for message in response.experiments]

    async def set_experiment(
        self, experiment: Experiment, *, timeout: float | None = None
    ) -> Experiment:
        """Create or replace an experiment; returns it as the server stored it."""
        request = convert.experiment_message(experiment)
        response = await self._invoke(self._experiments.Set, request, timeout, None)
        return convert.experiment(response)

    async def delete_experiment(self, name: str, *, timeout: float | None = None) -> None:
        """Remove an experiment (its users go back to the default models)."""
        request = models_pb2.DeleteExperimentRequest(name=name)
        await self._invoke(self._experiments.Delete, request, timeout, None)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's grpc.health.v1 status: "SERVING", "NOT_SERVING", "UNKNOWN", ..."""
        request = health_pb2.HealthCheckRequest(service=service)
        return serving_status_name(await self._invoke(self._health.Check, request, timeout, None))

    async def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Wait until health reports SERVING; ReachRankError(DEADLINE_EXCEEDED) otherwise."""
        wait = ReadyWait(timeout)
        while (remaining := wait.remaining()) > 0:
            try:
                if wait.observe(await self.health(service, timeout=remaining)):
                    return
            except ReachRankError as error:
                wait.observe_error(error)
            await asyncio.sleep(wait.pause())
        raise wait.timed_out()

    async def _invoke(
        self,
        method: Any,
        request: Any,
        timeout: float | None,
        request_id: str | None,
        *,
        retryable: bool = True,
    ) -> Any:
        """Call `method`, retrying UNAVAILABLE with back-off until the call's deadline."""
        attempts = CallAttempts(self.options, timeout, request_id, self._rng, retryable)
        while True:
            remaining = attempts.start()
            try:
                return await method(request, timeout=remaining, metadata=attempts.metadata)
            except grpc.RpcError as error:
                await asyncio.sleep(attempts.failed(error))
