from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VariantState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VARIANT_STATE_RUNNING: _ClassVar[VariantState]
    VARIANT_STATE_STOPPED: _ClassVar[VariantState]
VARIANT_STATE_RUNNING: VariantState
VARIANT_STATE_STOPPED: VariantState

class ModelStatus(_message.Message):
    __slots__ = ("name", "version", "kind", "provider", "available_versions", "loaded_versions", "state", "last_error", "policy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    kind: str
    provider: str
    available_versions: _containers.RepeatedScalarFieldContainer[int]
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    state: str
    last_error: str
    policy: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., provider: _Optional[str] = ..., available_versions: _Optional[_Iterable[int]] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., state: _Optional[str] = ..., last_error: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelStatus
    def __init__(self, model: _Optional[_Union[ModelStatus, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelStatus
    def __init__(self, model: _Optional[_Union[ModelStatus, _Mapping]] = ...) -> None: ...

class Variant(_message.Message):
    __slots__ = ("name", "weight", "ctr_model", "ctr_version", "retrieval_model", "retrieval_version", "state", "stop_reason", "stopped_unix_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CTR_MODEL_FIELD_NUMBER: _ClassVar[int]
    CTR_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    STOPPED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    ctr_model: str
    ctr_version: int
    retrieval_model: str
    retrieval_version: int
    state: VariantState
    stop_reason: str
    stopped_unix_ms: int
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., ctr_model: _Optional[str] = ..., ctr_version: _Optional[int] = ..., retrieval_model: _Optional[str] = ..., retrieval_version: _Optional[int] = ..., state: _Optional[_Union[VariantState, str]] = ..., stop_reason: _Optional[str] = ..., stopped_unix_ms: _Optional[int] = ...) -> None: ...

class Guardrail(_message.Message):
    __slots__ = ("metric", "alpha", "min_samples", "margin")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    metric: str
    alpha: float
    min_samples: int
    margin: float
    def __init__(self, metric: _Optional[str] = ..., alpha: _Optional[float] = ..., min_samples: _Optional[int] = ..., margin: _Optional[float] = ...) -> None: ...

class Shadow(_message.Message):
    __slots__ = ("name", "ctr_model", "ctr_version", "sample_rate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CTR_MODEL_FIELD_NUMBER: _ClassVar[int]
    CTR_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    ctr_model: str
    ctr_version: int
    sample_rate: float
    def __init__(self, name: _Optional[str] = ..., ctr_model: _Optional[str] = ..., ctr_version: _Optional[int] = ..., sample_rate: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "salt", "rpcs", "variants", "segments", "enabled", "guardrails", "control", "shadows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    RPCS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    salt: str
    rpcs: _containers.RepeatedScalarFieldContainer[str]
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    segments: _containers.RepeatedScalarFieldContainer[str]
    enabled: bool
    guardrails: _containers.RepeatedCompositeFieldContainer[Guardrail]
    control: str
    shadows: _containers.RepeatedCompositeFieldContainer[Shadow]
    def __init__(self, name: _Optional[str] = ..., salt: _Optional[str] = ..., rpcs: _Optional[_Iterable[str]] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., segments: _Optional[_Iterable[str]] = ..., enabled: _Optional[bool] = ..., guardrails: _Optional[_Iterable[_Union[Guardrail, _Mapping]]] = ..., control: _Optional[str] = ..., shadows: _Optional[_Iterable[_Union[Shadow, _Mapping]]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class DeleteExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteExperimentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
