"""Which models answer a request: the server's defaults, or the arm of an A/B experiment the
user is assigned to (sticky per user, optionally targeted at segments)."""

from __future__ import annotations

from dataclasses import dataclass

from reachrank.v1 import models_pb2

from engine.errors import BundleError, InvalidArgument
from engine.experiments import ExperimentStore, assign
from engine.models.profiles import CLUSTER_PREFIX, UserSegment
from engine.registry import ModelRegistry
from engine.repository import versions
from engine.settings import Settings


@dataclass(frozen=True)
class Route:
    """Models (name, version; None = the serving version) for one request, and the arm."""

    ctr: tuple[str, int | None]
    retrieval: tuple[str, int | None]
    experiment: str = ""
    variant: str = ""


def default_route(settings: Settings) -> Route:
    return Route(ctr=(settings.ctr_model, None), retrieval=(settings.retrieval_model, None))


def user_segments(segment: UserSegment) -> list[str] | None:
    """The segment names a user belongs to (RFM name and ``cluster:<k>``); None if unknown."""
    rfm, cluster = segment.value
    if not rfm and cluster < 0:
        return None
    return [s for s in (rfm, f"{CLUSTER_PREFIX}{cluster}" if cluster >= 0 else "") if s]


def route(
    store: ExperimentStore | None,
    settings: Settings,
    rpc: str,
    user_id: str,
    segment: UserSegment,
) -> Route:
    """The first active experiment for ``rpc`` that takes the user decides; else defaults.
    ``segment`` is the request's own lookup, shared with the pipeline."""
    base = default_route(settings)
    if store is None:
        return base
    segments = None
    for experiment in store.active(rpc):
        if experiment.segments and segments is None:
            segments = user_segments(segment) or []
        name = assign(experiment, user_id, segments)
        if name is None:
            continue
        v = next(v for v in experiment.variants if v.name == name)
        return Route(
            ctr=(v.ctr_model or base.ctr[0], v.ctr_version or None),
            retrieval=(v.retrieval_model or base.retrieval[0], v.retrieval_version or None),
            experiment=experiment.name,
            variant=name,
        )
    return base


def prepare_experiment(
    registry: ModelRegistry, settings: Settings, experiment: models_pb2.Experiment
) -> None:
    """Check every arm's (and shadow's) models exist and load pinned versions beside the
    serving ones, so no request ever waits for a load. Raises InvalidArgument / BundleError
    naming the arm."""
    wanted = [
        (f"variants[{i}].{field}_model", name, version)
        for i, v in enumerate(experiment.variants)
        for field, name, version in (
            ("ctr", v.ctr_model or settings.ctr_model, v.ctr_version),
            ("retrieval", v.retrieval_model or settings.retrieval_model, v.retrieval_version),
        )
    ]
    # Shadow models (engine.shadow) are ready before their first sampled request too.
    wanted += [
        (f"shadows[{i}].ctr_model", s.ctr_model or settings.ctr_model, s.ctr_version)
        for i, s in enumerate(experiment.shadows)
    ]
    for where, name, version in wanted:
        available = versions(settings.repo, name)
        if not available:
            raise InvalidArgument(f"{where}: model {name!r} is not in the repository")
        if version and version not in available:
            raise InvalidArgument(
                f"{where}: model {name!r} has no version {version} (has {available})"
            )
        try:
            if version:
                registry.load_version(name, version)
            elif registry.find(name) is None:
                registry.load(name)
        except BundleError as exc:
            raise BundleError(f"{where}: cannot load {name!r}: {exc}") from None
