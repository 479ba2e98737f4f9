from reachrank.v1 import ranking_pb2 as _ranking_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShadowScores(_message.Message):
    __slots__ = ("request_id", "ts_unix_ms", "rpc", "user_id", "experiment", "variant", "shadow", "served_model", "shadow_model", "item_ids", "served_scores", "shadow_scores", "served_positions", "shadow_positions", "shadow_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SERVED_SCORES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SCORES_FIELD_NUMBER: _ClassVar[int]
    SERVED_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ts_unix_ms: int
    rpc: str
    user_id: str
    experiment: str
    variant: str
    shadow: str
    served_model: _ranking_pb2.ModelRef
    shadow_model: _ranking_pb2.ModelRef
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    served_scores: _containers.RepeatedScalarFieldContainer[float]
    shadow_scores: _containers.RepeatedScalarFieldContainer[float]
    served_positions: _containers.RepeatedScalarFieldContainer[int]
    shadow_positions: _containers.RepeatedScalarFieldContainer[int]
    shadow_ms: float
    def __init__(self, request_id: _Optional[str] = ..., ts_unix_ms: _Optional[int] = ..., rpc: _Optional[str] = ..., user_id: _Optional[str] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., shadow: _Optional[str] = ..., served_model: _Optional[_Union[_ranking_pb2.ModelRef, _Mapping]] = ..., shadow_model: _Optional[_Union[_ranking_pb2.ModelRef, _Mapping]] = ..., item_ids: _Optional[_Iterable[str]] = ..., served_scores: _Optional[_Iterable[float]] = ..., shadow_scores: _Optional[_Iterable[float]] = ..., served_positions: _Optional[_Iterable[int]] = ..., shadow_positions: _Optional[_Iterable[int]] = ..., shadow_ms: _Optional[float] = ...) -> None: ...
