from reachrank.v1 import privacy_pb2 as _privacy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BidType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BID_TYPE_CPC: _ClassVar[BidType]
    BID_TYPE_CPA: _ClassVar[BidType]
    BID_TYPE_CPM: _ClassVar[BidType]
BID_TYPE_CPC: BidType
BID_TYPE_CPA: BidType
BID_TYPE_CPM: BidType

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "kind", "provider")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    kind: str
    provider: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., provider: _Optional[str] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("categories", "min_price", "max_price")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    min_price: float
    max_price: float
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., min_price: _Optional[float] = ..., max_price: _Optional[float] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("max_per_category", "mmr_lambda")
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MMR_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    max_per_category: int
    mmr_lambda: float
    def __init__(self, max_per_category: _Optional[int] = ..., mmr_lambda: _Optional[float] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "context", "filters", "exclude", "diversity", "consent")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    context: _containers.ScalarMap[str, str]
    filters: Filters
    exclude: _containers.RepeatedScalarFieldContainer[str]
    diversity: Diversity
    consent: _privacy_pb2.Consent
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., context: _Optional[_Mapping[str, str]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., exclude: _Optional[_Iterable[str]] = ..., diversity: _Optional[_Union[Diversity, _Mapping]] = ..., consent: _Optional[_Union[_privacy_pb2.Consent, str]] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "retrieval_score", "category", "price")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    retrieval_score: float
    category: str
    price: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., category: _Optional[str] = ..., price: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "strategy", "models", "variant", "experiment", "consent_mode")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_MODE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    strategy: str
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    variant: str
    experiment: str
    consent_mode: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., strategy: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., variant: _Optional[str] = ..., experiment: _Optional[str] = ..., consent_mode: _Optional[str] = ...) -> None: ...

class Ad(_message.Message):
    __slots__ = ("ad_id", "bid", "features", "bid_type")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BID_TYPE_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    bid: float
    features: _containers.ScalarMap[str, str]
    bid_type: BidType
    def __init__(self, ad_id: _Optional[str] = ..., bid: _Optional[float] = ..., features: _Optional[_Mapping[str, str]] = ..., bid_type: _Optional[_Union[BidType, str]] = ...) -> None: ...

class AdFeatures(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AdColumns(_message.Message):
    __slots__ = ("ad_ids", "bids", "features", "bid_types")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: AdFeatures
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[AdFeatures, _Mapping]] = ...) -> None: ...
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BID_TYPES_FIELD_NUMBER: _ClassVar[int]
    ad_ids: _containers.RepeatedScalarFieldContainer[str]
    bids: _containers.RepeatedScalarFieldContainer[float]
    features: _containers.MessageMap[int, AdFeatures]
    bid_types: _containers.RepeatedScalarFieldContainer[BidType]
    def __init__(self, ad_ids: _Optional[_Iterable[str]] = ..., bids: _Optional[_Iterable[float]] = ..., features: _Optional[_Mapping[int, AdFeatures]] = ..., bid_types: _Optional[_Iterable[_Union[BidType, str]]] = ...) -> None: ...

class RankAdsRequest(_message.Message):
    __slots__ = ("user_id", "context", "ads", "slots", "reserve_price", "candidates", "all_ranked", "reserve_ecpm", "serve_time_unix_ms", "consent")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ADS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RESERVE_PRICE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ALL_RANKED_FIELD_NUMBER: _ClassVar[int]
    RESERVE_ECPM_FIELD_NUMBER: _ClassVar[int]
    SERVE_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    context: _containers.ScalarMap[str, str]
    ads: _containers.RepeatedCompositeFieldContainer[Ad]
    slots: int
    reserve_price: float
    candidates: AdColumns
    all_ranked: bool
    reserve_ecpm: float
    serve_time_unix_ms: int
    consent: _privacy_pb2.Consent
    def __init__(self, user_id: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., ads: _Optional[_Iterable[_Union[Ad, _Mapping]]] = ..., slots: _Optional[int] = ..., reserve_price: _Optional[float] = ..., candidates: _Optional[_Union[AdColumns, _Mapping]] = ..., all_ranked: _Optional[bool] = ..., reserve_ecpm: _Optional[float] = ..., serve_time_unix_ms: _Optional[int] = ..., consent: _Optional[_Union[_privacy_pb2.Consent, str]] = ...) -> None: ...

class RankedAdColumns(_message.Message):
    __slots__ = ("ad_ids", "pctr", "bid", "expected_value", "slot", "price", "bid_type", "expected_charge", "pcvr")
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    PCTR_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CHARGE_FIELD_NUMBER: _ClassVar[int]
    PCVR_FIELD_NUMBER: _ClassVar[int]
    ad_ids: _containers.RepeatedScalarFieldContainer[str]
    pctr: _containers.RepeatedScalarFieldContainer[float]
    bid: _containers.RepeatedScalarFieldContainer[float]
    expected_value: _containers.RepeatedScalarFieldContainer[float]
    slot: _containers.RepeatedScalarFieldContainer[int]
    price: _containers.RepeatedScalarFieldContainer[float]
    bid_type: _containers.RepeatedScalarFieldContainer[BidType]
    expected_charge: _containers.RepeatedScalarFieldContainer[float]
    pcvr: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, ad_ids: _Optional[_Iterable[str]] = ..., pctr: _Optional[_Iterable[float]] = ..., bid: _Optional[_Iterable[float]] = ..., expected_value: _Optional[_Iterable[float]] = ..., slot: _Optional[_Iterable[int]] = ..., price: _Optional[_Iterable[float]] = ..., bid_type: _Optional[_Iterable[_Union[BidType, str]]] = ..., expected_charge: _Optional[_Iterable[float]] = ..., pcvr: _Optional[_Iterable[float]] = ...) -> None: ...

class RankedAd(_message.Message):
    __slots__ = ("ad_id", "pctr", "bid", "expected_value", "slot", "price", "bid_type", "expected_charge", "pcvr")
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    PCTR_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CHARGE_FIELD_NUMBER: _ClassVar[int]
    PCVR_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    pctr: float
    bid: float
    expected_value: float
    slot: int
    price: float
    bid_type: BidType
    expected_charge: float
    pcvr: float
    def __init__(self, ad_id: _Optional[str] = ..., pctr: _Optional[float] = ..., bid: _Optional[float] = ..., expected_value: _Optional[float] = ..., slot: _Optional[int] = ..., price: _Optional[float] = ..., bid_type: _Optional[_Union[BidType, str]] = ..., expected_charge: _Optional[float] = ..., pcvr: _Optional[float] = ...) -> None: ...

class DroppedAds(_message.Message):
    __slots__ = ("ad_ids", "reasons")
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ad_ids: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ad_ids: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class RankAdsResponse(_message.Message):
    __slots__ = ("ads", "below_reserve", "models", "variant", "experiment", "ranked", "dropped", "consent_mode")
    ADS_FIELD_NUMBER: _ClassVar[int]
    BELOW_RESERVE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RANKED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    CONSENT_MODE_FIELD_NUMBER: _ClassVar[int]
    ads: _containers.RepeatedCompositeFieldContainer[RankedAd]
    below_reserve: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    variant: str
    experiment: str
    ranked: RankedAdColumns
    dropped: DroppedAds
    consent_mode: str
    def __init__(self, ads: _Optional[_Iterable[_Union[RankedAd, _Mapping]]] = ..., below_reserve: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., variant: _Optional[str] = ..., experiment: _Optional[str] = ..., ranked: _Optional[_Union[RankedAdColumns, _Mapping]] = ..., dropped: _Optional[_Union[DroppedAds, _Mapping]] = ..., consent_mode: _Optional[str] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "filters")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    filters: Filters
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "models")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ...) -> None: ...

class AudienceRequest(_message.Message):
    __slots__ = ("item_ids", "n", "segments", "include_consumers")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    n: int
    segments: _containers.RepeatedScalarFieldContainer[str]
    include_consumers: bool
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., n: _Optional[int] = ..., segments: _Optional[_Iterable[str]] = ..., include_consumers: _Optional[bool] = ...) -> None: ...

class AudienceMember(_message.Message):
    __slots__ = ("user_id", "score", "rfm_segment", "cluster")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RFM_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    score: float
    rfm_segment: str
    cluster: int
    def __init__(self, user_id: _Optional[str] = ..., score: _Optional[float] = ..., rfm_segment: _Optional[str] = ..., cluster: _Optional[int] = ...) -> None: ...

class AudienceResponse(_message.Message):
    __slots__ = ("users", "eligible_users", "models")
    USERS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_USERS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[AudienceMember]
    eligible_users: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    def __init__(self, users: _Optional[_Iterable[_Union[AudienceMember, _Mapping]]] = ..., eligible_users: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ...) -> None: ...

class ProfileRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ProfileResponse(_message.Message):
    __slots__ = ("user_id", "known", "features", "attributes", "rfm_segment", "cluster", "models")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RFM_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    known: bool
    features: _containers.ScalarMap[str, float]
    attributes: _containers.ScalarMap[str, str]
    rfm_segment: str
    cluster: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    def __init__(self, user_id: _Optional[str] = ..., known: _Optional[bool] = ..., features: _Optional[_Mapping[str, float]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., rfm_segment: _Optional[str] = ..., cluster: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "version", "inputs")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    inputs: _containers.MessageMap[str, Tensor]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., inputs: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("outputs", "model")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.MessageMap[str, Tensor]
    model: ModelRef
    def __init__(self, outputs: _Optional[_Mapping[str, Tensor]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...
