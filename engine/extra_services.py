"""The Feedback and Experiments services, built from the settings and added to a gRPC server,
with what must be closed after the server has drained."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc, models_pb2, models_pb2_grpc

from engine.experiments import ExperimentStore, load_experiments
from engine.experiments_servicer import ExperimentsServicer
from engine.feedback.log import FeedbackLog
from engine.feedback.servicer import FeedbackServicer
from engine.settings import Settings

log = logging.getLogger(__name__)
FEEDBACK_SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["Feedback"].full_name
EXPERIMENTS_SERVICE = models_pb2.DESCRIPTOR.services_by_name["Experiments"].full_name


@dataclass
class ExtraServices:
    experiments: ExperimentStore
    feedback: FeedbackLog | None
    # Full names of the services added, for reflection.
    service_names: tuple[str, ...]

    def close(self) -> None:
        """Flush the feedback log into Parquet; call after the server stopped taking RPCs."""
        if self.feedback is not None:
            self.feedback.close()


def add_extra_services(
    server: grpc.Server,
    settings: Settings,
    prepare: Callable[[models_pb2.Experiment], None] | None = None,
) -> ExtraServices:
    """Experiments always (from ``experiments_file`` if set); Feedback when ``feedback_dir`` is.
    ``prepare`` readies an experiment's models before it is stored (file or RPC)."""
    initial = load_experiments(settings.experiments_file) if settings.experiments_file else []
    if prepare is not None:
        for experiment in initial:
            prepare(experiment)
    store = ExperimentStore(initial)
    models_pb2_grpc.add_ExperimentsServicer_to_server(ExperimentsServicer(store, prepare), server)
    names = [EXPERIMENTS_SERVICE]
    feedback = None
    if settings.feedback_dir is not None:
        feedback = FeedbackLog(
            settings.feedback_dir,
            fsync_interval_ms=settings.feedback_fsync_interval_ms,
            max_segment_bytes=settings.feedback_segment_bytes,
            max_segment_age_s=settings.feedback_segment_age_s,
        )
        recovered = feedback.recovery
        log.info(
            "feedback log %s: %d records in %d segments recovered, %d bytes cut",
            settings.feedback_dir,
            recovered.records,
            recovered.segments,
            recovered.truncated_bytes,
        )
        feedback_pb2_grpc.add_FeedbackServicer_to_server(
            FeedbackServicer(feedback, settings.feedback_max_events), server
        )
        names.append(FEEDBACK_SERVICE)
    return ExtraServices(store, feedback, tuple(names))
