from reachrank.v1 import privacy_pb2 as _privacy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackEvent(_message.Message):
    __slots__ = ("user_id", "item_id", "event", "ts_unix_ms", "request_id", "experiment", "variant", "model", "model_version", "position", "price", "value", "context", "charge", "consent")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHARGE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    event: str
    ts_unix_ms: int
    request_id: str
    experiment: str
    variant: str
    model: str
    model_version: int
    position: int
    price: float
    value: float
    context: _containers.ScalarMap[str, str]
    charge: float
    consent: _privacy_pb2.Consent
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event: _Optional[str] = ..., ts_unix_ms: _Optional[int] = ..., request_id: _Optional[str] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ..., position: _Optional[int] = ..., price: _Optional[float] = ..., value: _Optional[float] = ..., context: _Optional[_Mapping[str, str]] = ..., charge: _Optional[float] = ..., consent: _Optional[_Union[_privacy_pb2.Consent, str]] = ...) -> None: ...

class LogEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class LogEventsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
