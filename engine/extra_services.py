"""The Feedback and Experiments services, built from the settings and added to a gRPC server,
with what must be closed after the server has drained."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc, models_pb2, models_pb2_grpc

from engine.contacts import ContactStore, InProcessContacts, replay_contacts
from engine.decisions.log import DecisionLog, open_decision_log
from engine.experiment_file import ExperimentFile
from engine.experiments import ExperimentStore
from engine.experiments_servicer import ExperimentsServicer
from engine.feedback.log import FeedbackLog
from engine.feedback.servicer import FeedbackServicer
from engine.guardrails import tap_feedback
from engine.live_history import replay_feedback, sibling_logs
from engine.privacy.policy import policy_for
from engine.settings import Settings
from engine.state import HistoryStore, StateStore

log = logging.getLogger(__name__)
FEEDBACK_SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["Feedback"].full_name
EXPERIMENTS_SERVICE = models_pb2.DESCRIPTOR.services_by_name["Experiments"].full_name


@dataclass
class ExtraServices:
    experiments: ExperimentStore
    feedback: FeedbackLog | None
    # Full names of the services added, for reflection.
    service_names: tuple[str, ...]
    # Campaign contact counts and consent from the feedback log (None without one).
    contacts: ContactStore | None = None
    state: StateStore | None = None
    # The server's decision log (engine.decisions; None without decision_log_dir).
    decisions: DecisionLog | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Stop polling the experiments file and flush the feedback log into Parquet; call
        after the server stopped taking RPCs."""
        self._stop.set()
        if self.experiments.shadows is not None:  # the shadows queued, into their log
            self.experiments.shadows.close()
        if self.decisions is not None:
            self.decisions.close()  # what the stopped RPCs decided, into Parquet
        if self.feedback is not None:
            self.feedback.close()
        if self.state is not None:
            self.state.close()  # after the log: LogEvents may write to it until then

    def poll_experiments(self, interval_s: float) -> None:
        """Adopt changes other processes make to the experiments file, every interval."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    if self.experiments.refresh():
                        log.info(
                            "experiments file changed: %d experiments", len(self.experiments.list())
                        )
                except Exception:  # a poll must never kill the thread
                    log.exception("experiments poll failed")

        threading.Thread(target=loop, name="experiments-poll", daemon=True).start()


def add_extra_services(
    server: grpc.Server,
    settings: Settings,
    prepare: Callable[[models_pb2.Experiment], None] | None = None,
    live: HistoryStore | None = None,
    live_since_ms: int | None = None,
    state: StateStore | None = None,
    ads: Any = None,
) -> ExtraServices:
    """Experiments always (from ``experiments_file`` if set); Feedback when ``feedback_dir`` is.
    ``prepare`` readies an experiment's models before it is stored (file or RPC)."""
    backing = ExperimentFile(settings.experiments_file) if settings.experiments_file else None
    initial = backing.read() if backing is not None else []
    if prepare is not None:
        for experiment in initial:
            prepare(experiment)
    store = ExperimentStore(initial, backing, prepare)
    models_pb2_grpc.add_ExperimentsServicer_to_server(ExperimentsServicer(store, prepare), server)
    names = [EXPERIMENTS_SERVICE]
    feedback = None
    # A shared store answers for contacts even where this replica keeps no feedback log.
    contacts: ContactStore | None = state.contacts if state is not None else None
    if settings.feedback_dir is not None:
        contacts = state.contacts if state is not None else InProcessContacts()
        for directory in (settings.feedback_dir, *sibling_logs(settings.feedback_dir)):
            replay_contacts(contacts, directory)
        if live is not None and live_since_ms is not None:
            replayed = replay_feedback(live, settings.feedback_dir, live_since_ms)
            for sibling in sibling_logs(settings.feedback_dir):  # other --workers' logs
                replayed += replay_feedback(live, sibling, live_since_ms, wal=False)
            log.info("live histories: %d logged events since the training cut replayed", replayed)
        feedback = FeedbackLog(
            settings.feedback_dir,
            fsync_interval_ms=settings.feedback_fsync_interval_ms,
            max_segment_bytes=settings.feedback_segment_bytes,
            max_segment_age_s=settings.feedback_segment_age_s,
        )
        # Guardrails count the arms' impressions, clicks and revenue once they are durable.
        tap_feedback(feedback, store.guardrails)
        recovered = feedback.recovery
        log.info(
            "feedback log %s: %d records in %d segments recovered, %d bytes cut",
            settings.feedback_dir,
            recovered.records,
            recovered.segments,
            recovered.truncated_bytes,
        )
        feedback_pb2_grpc.add_FeedbackServicer_to_server(
            FeedbackServicer(
                feedback,
                settings.feedback_max_events,
                live,
                contacts,
                privacy=policy_for(settings),
                ads=ads,
            ),
            server,
        )
        names.append(FEEDBACK_SERVICE)
    extras = ExtraServices(
        store,
        feedback,
        tuple(names),
        contacts=contacts,
        state=state,
        decisions=open_decision_log(settings),
    )
    if backing is not None and settings.experiments_poll_interval_s > 0:
        extras.poll_experiments(settings.experiments_poll_interval_s)
    return extras
