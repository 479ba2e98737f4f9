"""The set of models the server answers with, loaded from the repository.

Loading happens off to the side: a model is built and warmed up completely before it
replaces the one serving, and requests hold a reference to the model they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from engine.errors import BundleError, NotFound
from engine.models.base import OnnxModel
from engine.models.ctr import CTRModel
from engine.models.retrieval import RetrievalModel
from engine.repository import model_names, read_bundle
from engine.settings import Settings

log = logging.getLogger(__name__)

MODEL_KINDS: dict[str, type[OnnxModel]] = {"ctr": CTRModel, "retrieval": RetrievalModel}


@dataclass(frozen=True)
class LoadEvent:
    name: str
    version: int | None
    ok: bool
    reason: str
    seconds: float


class ModelRegistry:
    """Thread-safe name → serving model map."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[str, OnnxModel] = {}
        self._lock = threading.Lock()
        self.events: list[LoadEvent] = []

    def load(self, name: str, version: int | None = None) -> OnnxModel:
        """Load (latest or given version), validate, warm up, then swap in. On failure the
        serving version (if any) stays and BundleError says why."""
        start = time.perf_counter()
        try:
            ref = read_bundle(self.settings.repo, name, version)
            model = MODEL_KINDS[ref.kind](ref, self.settings)
        except BundleError as exc:
            self.events.append(
                LoadEvent(name, version, False, str(exc), time.perf_counter() - start)
            )
            log.error("refused %s: %s", name, exc)
            raise
        with self._lock:
            self._models[name] = model
        elapsed = time.perf_counter() - start
        self.events.append(LoadEvent(name, ref.version, True, "loaded", elapsed))
        log.info(
            "serving %s version %d (%s, %s) after %.2f s",
            name,
            ref.version,
            ref.kind,
            model.id.provider,
            elapsed,
        )
        return model

    def load_all(self) -> list[str]:
        """Load every model in the repository; returns the names that failed."""
        failed = []
        for name in model_names(self.settings.repo):
            try:
                self.load(name)
            except BundleError:
                failed.append(name)
        return failed

    def unload(self, name: str) -> bool:
        """Stop serving ``name``; requests already holding the model finish on it. Returns
        whether it was loaded."""
        with self._lock:
            model = self._models.pop(name, None)
        if model is not None:
            log.info("unloaded %s version %d", name, model.id.version)
        return model is not None

    def get(self, name: str) -> OnnxModel:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"model {name!r} is not loaded (loaded: {sorted(self._models)})")
        return model

    def find(self, name: str) -> OnnxModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return sorted(self._models)

    def ready(self) -> bool:
        return bool(self._models)
