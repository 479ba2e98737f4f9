from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Consent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_DEFAULT: _ClassVar[Consent]
    CONSENT_PERSONALISED: _ClassVar[Consent]
    CONSENT_CONTEXT_ONLY: _ClassVar[Consent]
CONSENT_DEFAULT: Consent
CONSENT_PERSONALISED: Consent
CONSENT_CONTEXT_ONLY: Consent

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("erased", "already_forgotten")
    class ErasedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ERASED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    erased: _containers.ScalarMap[str, int]
    already_forgotten: bool
    def __init__(self, erased: _Optional[_Mapping[str, int]] = ..., already_forgotten: _Optional[bool] = ...) -> None: ...
