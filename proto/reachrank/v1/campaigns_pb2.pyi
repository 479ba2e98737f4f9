from reachrank.v1 import privacy_pb2 as _privacy_pb2
from reachrank.v1 import ranking_pb2 as _ranking_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContactCaps(_message.Message):
    __slots__ = ("max_contacts", "window_hours", "quiet_hours_after_purchase")
    MAX_CONTACTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_HOURS_FIELD_NUMBER: _ClassVar[int]
    QUIET_HOURS_AFTER_PURCHASE_FIELD_NUMBER: _ClassVar[int]
    max_contacts: int
    window_hours: float
    quiet_hours_after_purchase: float
    def __init__(self, max_contacts: _Optional[int] = ..., window_hours: _Optional[float] = ..., quiet_hours_after_purchase: _Optional[float] = ...) -> None: ...

class CampaignRequest(_message.Message):
    __slots__ = ("campaign_id", "model", "fraction", "budget", "costs", "value_per_conversion", "control_fraction", "caps", "user_ids", "segments", "consent")
    class CostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_PER_CONVERSION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    model: str
    fraction: float
    budget: float
    costs: _containers.ScalarMap[str, float]
    value_per_conversion: float
    control_fraction: float
    caps: ContactCaps
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    segments: _containers.RepeatedScalarFieldContainer[str]
    consent: _privacy_pb2.Consent
    def __init__(self, campaign_id: _Optional[str] = ..., model: _Optional[str] = ..., fraction: _Optional[float] = ..., budget: _Optional[float] = ..., costs: _Optional[_Mapping[str, float]] = ..., value_per_conversion: _Optional[float] = ..., control_fraction: _Optional[float] = ..., caps: _Optional[_Union[ContactCaps, _Mapping]] = ..., user_ids: _Optional[_Iterable[str]] = ..., segments: _Optional[_Iterable[str]] = ..., consent: _Optional[_Union[_privacy_pb2.Consent, str]] = ...) -> None: ...

class CampaignSummary(_message.Message):
    __slots__ = ("customers", "eligible", "contacts", "controls", "cost", "expected_conversions", "expected_revenue", "roi", "contacts_per_treatment", "capped", "no_consent", "unknown_users")
    class ContactsPerTreatmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    CONTACTS_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVENUE_FIELD_NUMBER: _ClassVar[int]
    ROI_FIELD_NUMBER: _ClassVar[int]
    CONTACTS_PER_TREATMENT_FIELD_NUMBER: _ClassVar[int]
    CAPPED_FIELD_NUMBER: _ClassVar[int]
    NO_CONSENT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_USERS_FIELD_NUMBER: _ClassVar[int]
    customers: int
    eligible: int
    contacts: int
    controls: int
    cost: float
    expected_conversions: float
    expected_revenue: float
    roi: float
    contacts_per_treatment: _containers.ScalarMap[str, int]
    capped: int
    no_consent: int
    unknown_users: int
    def __init__(self, customers: _Optional[int] = ..., eligible: _Optional[int] = ..., contacts: _Optional[int] = ..., controls: _Optional[int] = ..., cost: _Optional[float] = ..., expected_conversions: _Optional[float] = ..., expected_revenue: _Optional[float] = ..., roi: _Optional[float] = ..., contacts_per_treatment: _Optional[_Mapping[str, int]] = ..., capped: _Optional[int] = ..., no_consent: _Optional[int] = ..., unknown_users: _Optional[int] = ...) -> None: ...

class CampaignResponse(_message.Message):
    __slots__ = ("user_ids", "treatments", "expected_uplift", "expected_value", "control_user_ids", "control_treatments", "summary", "models", "consent_mode")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TREATMENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_UPLIFT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_TREATMENTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_MODE_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    treatments: _containers.RepeatedScalarFieldContainer[str]
    expected_uplift: _containers.RepeatedScalarFieldContainer[float]
    expected_value: _containers.RepeatedScalarFieldContainer[float]
    control_user_ids: _containers.RepeatedScalarFieldContainer[str]
    control_treatments: _containers.RepeatedScalarFieldContainer[str]
    summary: CampaignSummary
    models: _containers.RepeatedCompositeFieldContainer[_ranking_pb2.ModelRef]
    consent_mode: str
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., treatments: _Optional[_Iterable[str]] = ..., expected_uplift: _Optional[_Iterable[float]] = ..., expected_value: _Optional[_Iterable[float]] = ..., control_user_ids: _Optional[_Iterable[str]] = ..., control_treatments: _Optional[_Iterable[str]] = ..., summary: _Optional[_Union[CampaignSummary, _Mapping]] = ..., models: _Optional[_Iterable[_Union[_ranking_pb2.ModelRef, _Mapping]]] = ..., consent_mode: _Optional[str] = ...) -> None: ...
