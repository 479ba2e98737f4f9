"""ReachRank client SDK: typed sync and asyncio clients needing only grpcio, protobuf and numpy.

from clients import ReachRankClient
with ReachRankClient("127.0.0.1:50051", timeout=0.2) as rr:
    top = rr.recommend("u42", k=10, context={"device": "mobile"})
"""

from clients.aio import AsyncReachRankClient
from clients.client import ReachRankClient
from clients.errors import ReachRankError
from clients.options import ClientOptions
from clients.tensors import from_tensor, to_tensor
from clients.tracecontext import trace_context
from clients.types import (
    AdAuction,
    AdBid,
    Audience,
    AudienceMember,
    Experiment,
    FeedbackEvent,
    Guardrail,
    ModelInfo,
    ModelStatus,
    Profile,
    RankedAd,
    Recommendation,
    RecommendedItem,
    ScoreResult,
    Shadow,
    SimilarItems,
    Variant,
)

__all__ = [
    "AdAuction",
    "AdBid",
    "AsyncReachRankClient",
    "Audience",
    "AudienceMember",
    "ClientOptions",
    "Experiment",
    "FeedbackEvent",
    "Guardrail",
    "ModelInfo",
    "ModelStatus",
    "Profile",
    "RankedAd",
    "ReachRankClient",
    "ReachRankError",
    "Recommendation",
    "RecommendedItem",
    "ScoreResult",
    "Shadow",
    "SimilarItems",
    "Variant",
    "from_tensor",
    "to_tensor",
    "trace_context",
]
