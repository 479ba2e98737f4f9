"""The trainer's time budget (`reachrank train --budget-minutes`) and the small hyper-parameter
searches that spend it: each searched model tries its settings in order (the default first)
until its share of the budget is spent, and keeps the best on validation.

A share is the time left divided among the models still to train, so a model that finishes
early leaves its time to the next ones, and the first setting of every model always runs: a
tight budget trains every candidate at its defaults instead of dropping some.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Shares of --budget-minutes: the CTR settings search and the sequence model's epochs (the
# closed-form and ALS retrieval fits are not budgeted: they cost seconds to a few minutes).
CTR_SHARE = 0.5
SEQUENCE_SHARE = 0.3


@dataclass(frozen=True)
class Budget:
    """Seconds from a start (``time.monotonic``), or no limit when ``seconds`` is None."""

    seconds: float | None
    start: float

    @classmethod
    def of_minutes(cls, minutes: float | None) -> Budget:
        return cls(None if minutes is None else 60.0 * minutes, time.monotonic())

    def left(self) -> float | None:
        if self.seconds is None:
            return None
        return max(0.0, self.start + self.seconds - time.monotonic())

    def share(self, parts_left: int) -> float | None:
        """A deadline (``time.monotonic``) for the next of ``parts_left`` equal parts."""
        left = self.left()
        return None if left is None else time.monotonic() + left / max(1, parts_left)


@dataclass
class Searched(Generic[T]):
    """The best setting found, what it fitted, its validation loss, and every tried loss."""

    setting: dict[str, Any]
    fitted: T
    loss: float
    tried: dict[str, float]


def search(
    settings: Sequence[dict[str, Any]],
    fit: Callable[[dict[str, Any]], tuple[T, float]],
    deadline: float | None,
    label: Callable[[dict[str, Any]], str],
) -> Searched[T]:
    """Fit ``settings`` in order (``fit`` returns what it fitted and a validation loss to
    minimise) while time is left before ``deadline``; the first always runs."""
    best: Searched[T] | None = None
    tried: dict[str, float] = {}
    for setting in settings:
        if best is not None and deadline is not None and time.monotonic() >= deadline:
            break
        fitted, loss = fit(setting)
        tried[label(setting)] = loss
        if best is None or loss < best.loss:
            best = Searched(setting, fitted, loss, tried)
    assert best is not None, "search needs at least one setting"
    best.tried = tried
    return best


def setting_label(setting: dict[str, Any]) -> str:
    """A short, stable name for a searched setting."""
    return (
        ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())
        or "default"
    )
