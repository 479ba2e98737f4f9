from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrequencyCap(_message.Message):
    __slots__ = ("scope", "max_impressions", "window_s")
    class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SCOPE_AD: _ClassVar[FrequencyCap.Scope]
        SCOPE_CAMPAIGN: _ClassVar[FrequencyCap.Scope]
        SCOPE_ADVERTISER: _ClassVar[FrequencyCap.Scope]
    SCOPE_AD: FrequencyCap.Scope
    SCOPE_CAMPAIGN: FrequencyCap.Scope
    SCOPE_ADVERTISER: FrequencyCap.Scope
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    scope: FrequencyCap.Scope
    max_impressions: int
    window_s: int
    def __init__(self, scope: _Optional[_Union[FrequencyCap.Scope, str]] = ..., max_impressions: _Optional[int] = ..., window_s: _Optional[int] = ...) -> None: ...

class AdCampaign(_message.Message):
    __slots__ = ("campaign_id", "advertiser", "daily_budget", "start_date", "end_date", "time_zone", "ad_ids", "caps", "pacing", "traffic_curve", "paused")
    class Pacing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PACING_EVEN: _ClassVar[AdCampaign.Pacing]
        PACING_ASAP: _ClassVar[AdCampaign.Pacing]
    PACING_EVEN: AdCampaign.Pacing
    PACING_ASAP: AdCampaign.Pacing
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISER_FIELD_NUMBER: _ClassVar[int]
    DAILY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    PACING_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_CURVE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    advertiser: str
    daily_budget: float
    start_date: str
    end_date: str
    time_zone: str
    ad_ids: _containers.RepeatedScalarFieldContainer[str]
    caps: _containers.RepeatedCompositeFieldContainer[FrequencyCap]
    pacing: AdCampaign.Pacing
    traffic_curve: _containers.RepeatedScalarFieldContainer[float]
    paused: bool
    def __init__(self, campaign_id: _Optional[str] = ..., advertiser: _Optional[str] = ..., daily_budget: _Optional[float] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., time_zone: _Optional[str] = ..., ad_ids: _Optional[_Iterable[str]] = ..., caps: _Optional[_Iterable[_Union[FrequencyCap, _Mapping]]] = ..., pacing: _Optional[_Union[AdCampaign.Pacing, str]] = ..., traffic_curve: _Optional[_Iterable[float]] = ..., paused: _Optional[bool] = ...) -> None: ...

class ListAdCampaignsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAdCampaignsResponse(_message.Message):
    __slots__ = ("campaigns",)
    CAMPAIGNS_FIELD_NUMBER: _ClassVar[int]
    campaigns: _containers.RepeatedCompositeFieldContainer[AdCampaign]
    def __init__(self, campaigns: _Optional[_Iterable[_Union[AdCampaign, _Mapping]]] = ...) -> None: ...

class DeleteAdCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class DeleteAdCampaignResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CampaignSpendRequest(_message.Message):
    __slots__ = ("campaign_ids", "at_unix_ms")
    CAMPAIGN_IDS_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    campaign_ids: _containers.RepeatedScalarFieldContainer[str]
    at_unix_ms: int
    def __init__(self, campaign_ids: _Optional[_Iterable[str]] = ..., at_unix_ms: _Optional[int] = ...) -> None: ...

class CampaignSpend(_message.Message):
    __slots__ = ("campaign_id", "day", "daily_budget", "billed", "served_expected", "spend", "throttle", "target")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    DAILY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    BILLED_FIELD_NUMBER: _ClassVar[int]
    SERVED_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    SPEND_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    day: str
    daily_budget: float
    billed: float
    served_expected: float
    spend: float
    throttle: float
    target: float
    def __init__(self, campaign_id: _Optional[str] = ..., day: _Optional[str] = ..., daily_budget: _Optional[float] = ..., billed: _Optional[float] = ..., served_expected: _Optional[float] = ..., spend: _Optional[float] = ..., throttle: _Optional[float] = ..., target: _Optional[float] = ...) -> None: ...

class CampaignSpendResponse(_message.Message):
    __slots__ = ("campaigns",)
    CAMPAIGNS_FIELD_NUMBER: _ClassVar[int]
    campaigns: _containers.RepeatedCompositeFieldContainer[CampaignSpend]
    def __init__(self, campaigns: _Optional[_Iterable[_Union[CampaignSpend, _Mapping]]] = ...) -> None: ...
