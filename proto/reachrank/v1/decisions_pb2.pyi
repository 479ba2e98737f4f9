from reachrank.v1 import ranking_pb2 as _ranking_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(_message.Message):
    __slots__ = ("request_id", "ts_unix_ms", "rpc", "user_id", "context", "experiment", "variant", "models", "strategy", "item_ids", "scores", "positions", "propensities", "bids", "prices", "treatments", "cat", "num", "feature_schema", "exploration", "explored", "propensity_method")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    TREATMENTS_FIELD_NUMBER: _ClassVar[int]
    CAT_FIELD_NUMBER: _ClassVar[int]
    NUM_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_METHOD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    ts_unix_ms: int
    rpc: str
    user_id: str
    context: _containers.ScalarMap[str, str]
    experiment: str
    variant: str
    models: _containers.RepeatedCompositeFieldContainer[_ranking_pb2.ModelRef]
    strategy: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    positions: _containers.RepeatedScalarFieldContainer[int]
    propensities: _containers.RepeatedScalarFieldContainer[float]
    bids: _containers.RepeatedScalarFieldContainer[float]
    prices: _containers.RepeatedScalarFieldContainer[float]
    treatments: _containers.RepeatedScalarFieldContainer[str]
    cat: _ranking_pb2.Tensor
    num: _ranking_pb2.Tensor
    feature_schema: str
    exploration: str
    explored: bool
    propensity_method: str
    def __init__(self, request_id: _Optional[str] = ..., ts_unix_ms: _Optional[int] = ..., rpc: _Optional[str] = ..., user_id: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_ranking_pb2.ModelRef, _Mapping]]] = ..., strategy: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., positions: _Optional[_Iterable[int]] = ..., propensities: _Optional[_Iterable[float]] = ..., bids: _Optional[_Iterable[float]] = ..., prices: _Optional[_Iterable[float]] = ..., treatments: _Optional[_Iterable[str]] = ..., cat: _Optional[_Union[_ranking_pb2.Tensor, _Mapping]] = ..., num: _Optional[_Union[_ranking_pb2.Tensor, _Mapping]] = ..., feature_schema: _Optional[str] = ..., exploration: _Optional[str] = ..., explored: _Optional[bool] = ..., propensity_method: _Optional[str] = ...) -> None: ...
