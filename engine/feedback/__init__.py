"""The feedback log: served impressions and user outcomes appended durably, rotated into
Parquet in the trainer's event schema, and the ``reachrank.v1.Feedback`` service over it."""

from engine.feedback.log import FeedbackLog, LogFull, LogStats, LogUnavailable

__all__ = ["FeedbackLog", "LogFull", "LogStats", "LogUnavailable"]
