"""Server settings, declared once: every field can be set by an environment variable
``REACHRANK_<FIELD>`` (e.g. ``REACHRANK_PORT=6000``) or by the matching CLI option."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.decisions.config import DEFAULT_SAMPLE_RATES, ExplorationSettings


class Settings(BaseSettings):
    """ReachRank server configuration."""

    model_config = SettingsConfigDict(env_prefix="REACHRANK_", extra="ignore")

    repo: Path = Path("model_repo")
    """Model repository: ``<repo>/<model>/<version>/manifest.json`` plus artefacts."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port (0 picks a free one; the server reports the port it bound)."""

    version_policies: dict[str, str] = Field(default_factory=dict)
    """Per-model version policy, ``latest`` (default) or ``pinned:<version>``, e.g.
    ``REACHRANK_VERSION_POLICIES='{"ctr": "pinned:3"}'``."""
    repo_poll_interval_s: float = Field(0.0, ge=0)
    """Poll the repository for new versions every this many seconds (0: only on Load)."""
    model_control_mode: Literal["poll", "explicit"] = "poll"
    """``poll``: load every model at start (and poll when ``repo_poll_interval_s`` is set);
    ``explicit`` (Triton's): load only ``load_models`` at start, never poll, and serve (ready)
    with no model until Load / RepositoryModelLoad brings one in."""
    load_models: list[str] = Field(default_factory=list)
    """Models loaded at start under explicit model control (``*``: all)."""

    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus /metrics HTTP endpoint."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of the /metrics endpoint (None: no endpoint; 0: a free port). `reachrank serve`
    defaults it to 9464."""
    log_json: bool = False
    """Log one JSON object per line (for log shippers) instead of plain text."""

    retrieval_model: str = "retrieval"
    """Repository model that retrieves candidates for Recommend."""
    ctr_model: str = "ctr"
    """Repository model that scores pCTR for Recommend and RankAds."""
    profiles_model: str = "profiles"
    """Repository model holding user profiles and segments (Profile, Audience, cold start)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """onnxruntime device: ``auto`` uses CUDA only when a GPU is visible and the runtime has it."""
    workers: int = Field(1, ge=1)
    """Server processes sharing the port (SO_REUSEPORT), each with its own models and thread
    pools; give each ``cores / workers`` inference threads."""
    so_reuseport: bool = False
    """Let several processes bind the port (set for each worker when ``workers > 1``)."""
    grpc_threads: int = Field(default_factory=lambda: min(16, 2 * (os.cpu_count() or 1)), ge=1)
    """Threads serving RPCs (default: two per core, at most 16). Handlers hold the GIL for their
    Python work and run the inference batches themselves (engine.batching); a request waiting
    for its batch sleeps without the GIL. On 2 cores the demo's RankAds spent no less CPU per
    request with 16 threads than with 4, DeepFM's did up to +25% with 16 and two onnxruntime
    threads, within the machine's noise (BENCHMARKS.md, Serving efficiency)."""
    ort_intra_op_threads: int | None = Field(None, ge=0)
    """onnxruntime threads per inference. None (the default) decides per model at load: one
    thread, or one per core for a compute-heavy graph (engine.runtime.create_session; on 2
    cores DeepFM's 200-ad RankAds served +10-35% with 2 threads, the demo FM spent more CPU per
    request with 2 than with 1; BENCHMARKS.md, Serving efficiency). 0: onnxruntime's own
    default (all cores)."""
    ort_inter_op_threads: int = Field(1, ge=0)
    """onnxruntime threads across graph nodes."""
    numba_threads: int = Field(1, ge=1)
    """Threads for Numba's parallel kernels (retrieval scans)."""
    blas_threads: int = Field(1, ge=1)
    """OpenBLAS/MKL threads; kept low so they don't fight Numba and onnxruntime for cores."""

    # The knobs from here to retrieval_max_queue, and the onnxruntime threads above, are defaults:
    # each model may set its own (engine.model_settings: a bundle's serving.json, a Triton
    # model's config.pbtxt).
    batching: bool = True
    """Dynamic batching of inference calls across concurrent requests."""
    max_batch_rows: int = Field(4096, ge=1)
    """A batch is cut once it holds this many rows..."""
    max_queue_delay_us: int = Field(0, ge=0)
    """...or this long after its first request arrived. 0 (the default) takes only what is
    already queued: under load, requests pile up while the previous batch runs, so batches
    form without adding latency at low load."""
    max_queue_rows: int = Field(131072, ge=1)
    """Rows allowed to wait per model; beyond it requests are refused with RESOURCE_EXHAUSTED."""
    batch_workers: int = Field(1, ge=1)
    """Inference calls in flight per model (each uses ort_intra_op_threads threads); the
    requests that arrive meanwhile queue and run as the next batch."""
    retrieval_max_batch: int = Field(0, ge=0)
    """Recommend queries searched together in one top-k pass over the item table (under
    ``batching``). 0 (auto): 64 when retrieval runs on a GPU, where one launch serves a batch
    for little more than one query; 1 on CPUs, where concurrent requests already scan in
    parallel on their own threads and a shared batch thread measured no faster (BENCHMARKS.md,
    Serving efficiency)."""
    retrieval_max_queue: int = Field(4096, ge=1)
    """Retrieval queries allowed to wait per model; beyond it RESOURCE_EXHAUSTED."""

    max_concurrent_rpcs: int | None = Field(64, ge=1)
    """RPCs admitted at once (running or waiting for one of ``grpc_threads``); beyond it gRPC
    refuses new calls at once with RESOURCE_EXHAUSTED instead of queueing them without
    bound. Those waiting add about ``limit / sustainable rate`` to the latency (64 at ~300
    RankAds/s: ~0.2 s; BENCHMARKS.md, Overload). None: no limit."""

    max_k: int = Field(1000, ge=1)
    """Largest k a Recommend call may ask for."""
    max_audience: int = Field(100_000, ge=1)
    """Most users one Audience call may ask for."""
    max_ads: int = Field(2000, ge=1)
    """Most ads one RankAds call may carry."""
    max_score_rows: int = Field(65536, ge=1)
    """Most rows one Score call may carry."""
    retrieval_search: Literal["auto", "exact", "ivf"] = "auto"
    """Candidate scan: ``auto`` uses the bundle's IVF index when it has one, else exact."""
    ivf_nprobe: int = Field(16, ge=1)
    """Inverted lists scanned per query by IVF retrieval (more: better recall, slower)."""
    retrieval_candidates: int = Field(200, ge=1)
    """Candidates retrieved before CTR ranking (at least k)."""
    default_position: str = "1"
    """Position feature used for ranking when the request's context gives none."""
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest request or response message."""
    grace_period_s: float = Field(5.0, ge=0)
    """On SIGTERM, how long in-flight RPCs may take to finish."""

    feedback_dir: Path | None = None
    """Directory of the durable feedback log served by ``Feedback/LogEvents`` (segments, then
    Parquet under ``<dir>/parquet``); None disables the Feedback service."""
    feedback_fsync_interval_ms: float = Field(0.0, ge=0)
    """Extra wait before each fsync so more appenders share it; 0: fsync at once (appenders that
    arrive during an fsync still share the next one)."""
    feedback_segment_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    """A log segment this large is sealed and converted to Parquet."""
    feedback_segment_age_s: float | None = Field(300.0, gt=0)
    """A non-empty segment this old is sealed too, so the trainer sees quiet hours' events."""
    live_history: bool = True
    """With ``feedback_dir``: the CTR models' user-history features also count the
    impressions and clicks logged since the process started (`engine.live_history`), not only
    those up to the training cut."""
    feedback_max_events: int = Field(1000, ge=1)
    """Most events one LogEvents call may carry."""
    state_store: str = "embedded"
    """Where the online state replicas must agree on lives (live histories, contact counts):
    ``embedded`` (this process) or ``redis://HOST:PORT/DB`` shared by every replica
    (`engine.state`)."""
    state_cache_ms: float = Field(200.0, ge=0)
    """Staleness bound of a replica's local cache of the shared store's histories."""
    state_timeout_ms: float = Field(50.0, gt=0)
    """Longest a request waits on the shared store before it serves the bundle's snapshot."""
    state_retry_s: float = Field(0.5, gt=0)
    """After a store failure, how long requests skip it (and how often queued writes retry)."""
    experiments_file: Path | None = None
    """JSON file of A/B experiments: ``{"experiments": [Experiment, ...]}`` in the protobuf JSON
    mapping of ``reachrank.v1.Experiment``. Loaded at start (it may not exist yet), written
    through by the Experiments RPCs, and polled, so restarts and every ``--workers`` process
    serve the same experiments. Without it, experiments set by RPC live in memory only."""
    experiments_poll_interval_s: float = Field(2.0, ge=0)
    """How often each process re-reads ``experiments_file`` for changes (0: never)."""
    ad_campaigns_file: Path | None = None
    """JSON file of ad campaigns (budgets, flights, pacing, frequency caps for RankAds):
    ``{"campaigns": [AdCampaign, ...]}`` in the protobuf JSON mapping of
    ``reachrank.v1.AdCampaign``; written through by the AdCampaigns RPCs and polled like
    ``experiments_file``. Without any campaign RankAds applies no campaign rules."""
    ad_campaigns_poll_interval_s: float = Field(2.0, ge=0)
    """How often each process re-reads ``ad_campaigns_file`` for changes (0: never)."""
    ads_click_window_s: float = Field(600.0, gt=0)
    """How long after an impression its click (or purchase) may still be billed: the budget
    check counts the expected charge of impressions this recent on top of what was billed."""
    ads_pacing_interval_s: float = Field(300.0, gt=0)
    """How often (in served time) each paced campaign's throttle is decided anew."""
    ads_replay_time: bool = False
    """Honour ``RankAdsRequest.serve_time_unix_ms`` (replays and simulated days): budgets,
    pacing and caps run on the requests' clock instead of the server's."""
    ads_seed: int | None = None
    """Seed of the pacing throttle's random draws (None: from the OS; set for replays)."""

    otlp_endpoint: str | None = None
    """OpenTelemetry collector to send decision traces to over OTLP/gRPC, e.g.
    ``http://127.0.0.1:4317`` (``https://``: TLS); None (the default): no tracing, and no
    per-request cost (engine.tracing)."""
    otlp_service_name: str = "reachrank"
    """The traces' ``service.name`` resource attribute."""
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)
    """Share of the decision calls without a caller's ``traceparent`` that are traced; a
    caller's ``traceparent`` decides for its calls (its sampled flag). Untraced calls make no
    span at all."""
    shadow_log_dir: Path | None = None
    """Directory of the shadow log (`engine.shadow`): what the experiments' shadow models
    scored on sampled live requests beside the served scores, in the feedback log's WAL and
    Parquet form; None: shadows are scored and counted but not logged."""
    shadow_max_pending: int = Field(1000, ge=1)
    """Shadow requests queued at most; beyond it new ones are dropped (counted)."""
    shadow_seed: int | None = None
    """Seed of the shadows' sampling draws (None: fresh per process)."""

    tls_cert_file: Path | None = None
    """PEM server certificate (chain); with ``tls_key_file`` the server speaks TLS only."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle for mutual TLS: every client must present a certificate it signed."""
    auth_tokens_file: Path | None = None
    """File of bearer tokens (one per line, ``#`` comments) accepted on every RPC but health.
    With no token configured at all (here, ``auth_tokens`` or the admin ones), authentication
    is off; read once at start."""
    auth_tokens: SecretStr | None = None
    """Comma-separated bearer tokens, added to those of ``auth_tokens_file``."""
    admin_tokens_file: Path | None = None
    """File of admin tokens: also needed for model management (Load, Unload, experiment
    Set/Delete, KServe repository load/unload). An admin token passes everywhere."""
    admin_tokens: SecretStr | None = None
    """Comma-separated admin tokens, added to those of ``admin_tokens_file``."""

    decision_log_dir: Path | None = None
    """Directory of the decision log (`engine.decisions`): sampled Recommend, RankAds and
    Campaigns.Plan decisions with the features as served and each pick's propensity, in the
    feedback log's WAL and Parquet form; None: off."""
    decision_sample_rates: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SAMPLE_RATES)
    )
    """Share of each RPC's decisions logged (``recommend``, ``rank_ads``, ``plan``)."""
    decision_flush_ms: float = Field(20.0, gt=0)
    """The writer hands queued decisions to the WAL this often: a decision is fsynced within
    about this plus one fsync, and a crash loses at most that window's decisions."""
    decision_max_pending: int = Field(10_000, ge=1)
    """Decisions queued for the writer at most; beyond it new ones are dropped and counted."""
    decision_seed: int | None = None
    """Seed of the sampling and exploration draws (None: fresh per process)."""
    exploration: dict[str, ExplorationSettings] = Field(default_factory=dict)
    """Exploration per RPC (``recommend``, ``rank_ads``), e.g.
    ``{"rank_ads": {"method": "epsilon", "epsilon": 0.1, "budget": 0.2}}``; see
    `engine.decisions.config`. Off by default."""

    default_consent: Literal["personalised", "context_only"] = "personalised"
    """Consent assumed for requests and feedback events that carry none (CONSENT_DEFAULT).
    ``context_only``: such callers are answered from context and popularity only and their
    events never logged with a user id (engine.privacy)."""
    unconsented_events: Literal["drop", "anonymise"] = "anonymise"
    """LogEvents' events of users without consent (or forgotten): ``drop`` them, or
    ``anonymise`` them (logged with an empty user id: counts per item still reach the
    trainer; consent events, opt_out/opt_in, always keep their id)."""
    forgotten_file: Path | None = None
    """The persisted tombstone set of forgotten users (digests only), honoured on every
    request and read by the trainer; None: ``<repo>/forgotten.parquet``."""
    privacy_audit_log: Path | None = None
    """Append-only JSON lines of every ForgetUser (who, when, counts; never the user's data);
    None: ``privacy-audit.jsonl`` beside the tombstone set."""
    pseudonym_key_file: Path | None = None
    """Secret (>= 16 bytes) for pseudonymous ids at rest: user ids are replaced by
    HMAC-SHA256(key, id) at the request boundary, so the feedback log, the state store and
    bundles trained from them hold only pseudonyms (train raw logs with ``--pseudonym-key``)."""
