"""The models the server answers with, loaded from the repository, and their versions.

Each model name has a *slot*: a version policy (``latest``, or ``pinned:<v>``), the version
taking traffic, and any other versions kept loaded (e.g. for an A/B experiment). A new
version is built, validated and warmed up completely before it replaces the serving one; a
request holds a reference to the model object it started with, so it finishes on that
version and the old one is released when its last request is done. A failed load leaves the
serving version in place and records why.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import BundleError, InvalidArgument, NotFound
from engine.live_history import LiveHistory
from engine.models.base import ServedModel
from engine.models.ctr import CTRModel
from engine.models.profiles import ProfilesModel
from engine.models.retrieval import RetrievalModel
from engine.models.sequence import SequenceRetrievalModel, served_kind
from engine.models.triton import TritonModel
from engine.models.uplift import UpliftModel
from engine.repository import is_model_name, is_triton_model, model_names, read_model, versions
from engine.settings import Settings
from engine.triton_config import TritonRef, config_path, read_config, select_versions

log = logging.getLogger(__name__)

MODEL_KINDS: dict[str, Callable[..., ServedModel]] = {
    "ctr": CTRModel,
    "retrieval": RetrievalModel,
    "profiles": ProfilesModel,
    "uplift": UpliftModel,
    "onnx": TritonModel,  # any ONNX model in Triton's layout (engine.triton_config)
}


@dataclass(frozen=True)
class LoadEvent:
    name: str
    version: int | None
    ok: bool
    reason: str
    seconds: float
    at: float = field(default_factory=time.time)


@dataclass
class ModelSlot:
    name: str
    policy: str = "latest"
    serving: ServedModel | None = None
    # Versions loaded besides the serving one (experiments), by version.
    extra: dict[int, ServedModel] = field(default_factory=dict)
    # Versions an experiment routes to (load_version): a Load or hot reload that replaces the
    # serving version keeps a held one loaded beside the new one instead of closing it.
    held: set[int] = field(default_factory=set)
    last_error: str = ""
    failed_version: int | None = None
    # Unloaded on request: the poller leaves it alone until an explicit Load.
    unloaded: bool = False
    # A Triton model: the versions its policy chose and its config.pbtxt text when loaded
    # (the poller reloads when either changes), and a configuration sent with Load.
    source: tuple[tuple[int, ...], str] | None = None
    failed_plan: tuple[tuple[int, ...], str] | None = None
    override: mc.ModelConfig | None = None


@dataclass(frozen=True)
class ModelState:
    """A snapshot of one model for ModelService.List / RepositoryIndex."""

    name: str
    version: int
    kind: str
    provider: str
    available_versions: list[int]
    loaded_versions: list[int]
    state: str
    last_error: str
    policy: str


def parse_policy(policy: str) -> int | None:
    """``latest`` → None, ``pinned:<v>`` → v."""
    if policy == "latest":
        return None
    if policy.startswith("pinned:") and policy[7:].isdigit() and int(policy[7:]) > 0:
        return int(policy[7:])
    raise InvalidArgument(f"version policy must be 'latest' or 'pinned:<version>', got {policy!r}")


class ModelRegistry:
    """Thread-safe name → slot map over a repository."""

    def __init__(
        self, settings: Settings, on_event: Callable[[LoadEvent], None] | None = None
    ) -> None:
        self.settings = settings
        self._slots: dict[str, ModelSlot] = {}
        self._lock = threading.RLock()
        # One load at a time: loads are CPU-heavy and must not race on the same slot.
        self._load_lock = threading.Lock()
        self.events: list[LoadEvent] = []
        self._on_event = on_event
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        # Events the server logs, handed to every CTR model it loads (None: no live histories).
        self.live_history: LiveHistory | None = None
        for name, policy in settings.version_policies.items():
            parse_policy(policy)
            self._slot(name).policy = policy

    def _slot(self, name: str) -> ModelSlot:
        with self._lock:
            return self._slots.setdefault(name, ModelSlot(name))

    def _record(self, event: LoadEvent) -> None:
        self.events.append(event)
        del self.events[:-1000]
        if self._on_event is not None:
            self._on_event(event)

    def _build(self, name: str, version: int | None) -> ServedModel:
        start = time.perf_counter()
        try:
            ref = read_model(self.settings.repo, name, version)
            override = self._slot(name).override
            if isinstance(ref, TritonRef) and override is not None:
                ref = dataclasses.replace(ref, config=override, overridden=True)
            model = served_kind(ref, MODEL_KINDS[ref.kind])(ref, self.settings)
            if isinstance(model, CTRModel | SequenceRetrievalModel):
                model.live = self.live_history
        except BundleError as exc:
            slot = self._slot(name)
            if version is None:  # read_bundle tried the newest: that one must not be retried
                found = versions(self.settings.repo, name)
                version = found[-1] if found else None
            slot.last_error, slot.failed_version = str(exc), version
            self._record(LoadEvent(name, version, False, str(exc), time.perf_counter() - start))
            log.error("refused %s: %s", name, exc)
            raise
        self._record(LoadEvent(name, ref.version, True, "loaded", time.perf_counter() - start))
        return model

    def load(
        self, name: str, version: int | None = None, config: mc.ModelConfig | None = None
    ) -> ServedModel:
        """Load and swap in ``name``: the given version (and pin it) or the policy's choice;
        a Triton model also loads the other versions its version_policy serves, and
        ``config`` (Triton models only) replaces its config.pbtxt until the next Load.
        Raises BundleError (serving versions unchanged) when the model is refused."""
        with self._load_lock:
            slot = self._slot(name)
            if version is not None:
                slot.policy = f"pinned:{version}"
            previous_override = slot.override
            slot.override = config
            try:
                plan = self._triton_plan(name)
            except BundleError as exc:  # an unreadable config.pbtxt or version policy
                slot.override, slot.last_error = previous_override, str(exc)
                slot.failed_plan = self._unreadable_plan(name)
                self._record(LoadEvent(name, version, False, str(exc), 0.0))
                log.error("refused %s: %s", name, exc)
                raise
            try:
                if plan is None:
                    model, extras = self._build(name, parse_policy(slot.policy)), {}
                else:
                    model = self._build(name, plan[0][-1])
                    extras = {}
                    try:
                        for v in plan[0][:-1]:
                            extras[v] = self._build(name, v)
                    except BundleError:
                        model.close()
                        for other in extras.values():
                            other.close()
                        raise
            except BundleError as exc:
                slot.override = previous_override
                slot.last_error, slot.failed_plan = str(exc), plan
                raise
            with self._lock:
                old = slot.serving
                replaced = [m for v, m in slot.extra.items() if plan is not None or v in extras]
                slot.serving = model
                if plan is not None:
                    slot.extra = extras
                    slot.source = plan
                else:
                    # The new serving model stands in for the same version loaded beside it.
                    same = slot.extra.pop(model.id.version, None)
                    if same is not None:
                        replaced.append(same)
                # An experiment still routes to the replaced version: keep serving it there.
                held = old is not None and old.id.version in slot.held
                if held and old.id.version != model.id.version:
                    slot.extra[old.id.version] = old
                    old = None
                slot.last_error, slot.failed_version, slot.unloaded = "", None, False
                slot.failed_plan = None
            for gone in [old, *replaced]:
                if gone is not None and gone is not model:
                    gone.close()
            log.info(
                "serving %s version %d (%s, %s)",
                name,
                model.id.version,
                model.id.kind,
                model.id.provider,
            )
            return model

    def _triton_plan(self, name: str) -> tuple[tuple[int, ...], str] | None:
        """For a Triton model: the versions to load (its version policy, or the pinned one)
        and the text of its config.pbtxt; None for a ReachRank bundle."""
        repo = self.settings.repo
        if not is_model_name(name) or not is_triton_model(repo / name):
            return None
        path = config_path(repo / name)
        text = path.read_text() if path.is_file() else ""
        available = versions(repo, name)
        if not available:
            raise BundleError(f"model {name!r} has no versions in {repo}")
        slot = self._slot(name)
        pinned = parse_policy(slot.policy)
        if pinned is not None:
            return (pinned,), text
        config = slot.override or read_config(repo / name) or mc.ModelConfig()
        return tuple(select_versions(config.version_policy, available, str(path))), text

    def _unreadable_plan(self, name: str) -> tuple[tuple[int, ...], str]:
        """What a Triton model whose plan cannot be made is remembered by: its config text."""
        path = config_path(self.settings.repo / name)
        try:
            return (), path.read_text() if path.is_file() else ""
        except OSError:
            return (), ""

    def load_version(self, name: str, version: int) -> ServedModel:
        """Keep ``version`` loaded beside the serving one (for experiments)."""
        with self._load_lock:
            slot = self._slot(name)
            if slot.serving is not None and slot.serving.id.version == version:
                slot.held.add(version)
                return slot.serving
            if version in slot.extra:
                slot.held.add(version)
                return slot.extra[version]
            model = self._build(name, version)
            with self._lock:
                slot.extra[version] = model
                slot.held.add(version)
            return model

    def release_version(self, name: str, version: int) -> None:
        with self._lock:
            slot = self._slot(name)
            slot.held.discard(version)
            model = slot.extra.pop(version, None)
        if model is not None:
            model.close()

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (every version); requests already running finish."""
        with self._load_lock, self._lock:
            slot = self._slots.get(name)
            if slot is None or (slot.serving is None and not slot.extra):
                raise NotFound(f"model {name!r} is not loaded")
            models = [slot.serving, *slot.extra.values()]
            slot.serving, slot.extra, slot.unloaded = None, {}, True
        for model in models:
            if model is not None:
                model.close()

    def load_all(self) -> list[str]:
        """Load every model in the repository (explicit model control: only those named by
        ``load_models``); returns the names that failed."""
        failed = []
        names = model_names(self.settings.repo)
        if self.settings.model_control_mode == "explicit" and "*" not in self.settings.load_models:
            names = list(self.settings.load_models)
        for name in names:
            try:
                self.load(name)
            except BundleError:
                failed.append(name)
        return failed

    def refresh(self) -> list[str]:
        """Load what changed on disk: new models, and newer versions of models that follow
        ``latest``. A version that failed once is not retried until a newer one appears.
        Returns the names (re)loaded."""
        changed = []
        explicit = self.settings.model_control_mode == "explicit"
        for name in model_names(self.settings.repo):
            slot = self._slot(name)
            if explicit and slot.serving is None:
                continue  # explicit model control: only Load brings a model in
            try:
                plan = self._triton_plan(name)
            except (BundleError, OSError):  # retried once the file changes
                plan = self._unreadable_plan(name)
            if plan is not None:
                if not slot.unloaded and plan != slot.source and plan != slot.failed_plan:
                    try:
                        self.load(name)
                        changed.append(name)
                    except BundleError:
                        slot.failed_plan = plan
                continue
            wanted = parse_policy(slot.policy)
            target = wanted if wanted is not None else versions(self.settings.repo, name)[-1]
            current = slot.serving.id.version if slot.serving is not None else None
            if slot.unloaded:
                continue
            if target != current and target != slot.failed_version:
                try:
                    self.load(name)
                    changed.append(name)
                except BundleError:
                    slot.failed_version = target
        return changed

    def start_polling(self) -> None:
        """Poll the repository every ``repo_poll_interval_s`` seconds (0: never; never under
        explicit model control)."""
        interval = self.settings.repo_poll_interval_s
        if self.settings.model_control_mode == "explicit":
            return
        if interval <= 0 or self._poller is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # the poller must survive anything the disk throws at it
                    log.exception("repository poll failed")

        self._poller = threading.Thread(target=loop, name="repo-poller", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def get(self, name: str, version: int | None = None) -> ServedModel:
        """The serving model (or a specific loaded version) of ``name``."""
        slot = self._slots.get(name)
        model = slot.serving if slot is not None else None
        if model is None:
            raise NotFound(f"model {name!r} is not loaded (loaded: {self.names()})")
        if version is None or version == model.id.version:
            return model
        extra = slot.extra.get(version) if slot is not None else None
        if extra is None:
            raise NotFound(
                f"version {version} of model {name!r} is not loaded (serving {model.id.version})"
            )
        return extra

    def find(self, name: str) -> ServedModel | None:
        slot = self._slots.get(name)
        return slot.serving if slot is not None else None

    def names(self) -> list[str]:
        return sorted(n for n, s in self._slots.items() if s.serving is not None)

    def ready(self) -> bool:
        """Some model serves (with explicit model control, a server with none is ready too:
        models arrive by Load, as in Triton)."""
        if self.settings.model_control_mode == "explicit":
            return True
        return any(s.serving is not None for s in self._slots.values())

    def states(self) -> list[ModelState]:
        names = sorted(set(model_names(self.settings.repo)) | set(self._slots))
        out = []
        for name in names:
            slot = self._slots.get(name) or ModelSlot(name)
            serving = slot.serving
            loaded = sorted({*slot.extra, *([serving.id.version] if serving else [])})
            state = (
                "SERVING"
                if serving
                else ("FAILED" if slot.last_error and not loaded else "UNLOADED")
            )
            out.append(
                ModelState(
                    name=name,
                    version=serving.id.version if serving else 0,
                    kind=serving.id.kind if serving else "",
                    provider=serving.id.provider if serving else "",
                    available_versions=versions(self.settings.repo, name),
                    loaded_versions=loaded,
                    state=state,
                    last_error=slot.last_error,
                    policy=slot.policy,
                )
            )
        return out
