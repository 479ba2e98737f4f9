"""Client settings, declared once with their defaults and meaning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a ReachRank client connects, times out and retries.

    Every field has a default that suits a client in the same data centre as the server.
    """

    timeout: float = 1.0
    """Default deadline of one call in seconds, retries and their back-off included."""

    max_attempts: int = 4
    """Attempts per call (1 = no retries). Only UNAVAILABLE is retried: every ReachRank RPC
    is an idempotent read, and UNAVAILABLE means the request did not reach a healthy server."""

    initial_backoff: float = 0.05
    """Upper bound of the first back-off in seconds; the actual sleep is uniform in
    [0, bound] ("full jitter") so that clients failing together do not retry together."""

    max_backoff: float = 1.0
    """Cap on the back-off bound in seconds."""

    multiplier: float = 2.0
    """Growth of the back-off bound per attempt."""

    keepalive_time: float | None = 60.0
    """Seconds between HTTP/2 keepalive pings on a connection with calls in flight (None:
    no pings). Servers reject pings more frequent than their minimum interval (gRPC's
    default is 5 minutes without data), so keep this above the server's setting."""

    keepalive_timeout: float = 20.0
    """Seconds to wait for a ping's acknowledgement before closing the connection."""

    metadata: Sequence[tuple[str, str]] = ()
    """Extra metadata sent with every call (keys lower-case)."""

    token: str | None = None
    """Bearer token sent as `authorization: Bearer <token>`."""

    root_certificates: bytes | None = None
    """PEM CA bundle for TLS. TLS is used when this, `certificate_chain` or `tls` is set."""

    certificate_chain: bytes | None = None
    """PEM client certificate for mutual TLS (with `private_key`)."""

    private_key: bytes | None = None
    """PEM private key of the client certificate."""

    tls: bool = False
    """Use TLS with the system's root certificates when no `root_certificates` are given."""

    tls_server_name: str | None = None
    """Name to verify the server certificate against, when it differs from the target."""

    max_message_bytes: int = 64 * 1024 * 1024
    """Largest request or response message (gRPC's default of 4 MiB is small for Score)."""

    channel_options: Sequence[tuple[str, str | int]] = field(default_factory=tuple)
    """Further raw gRPC channel arguments, applied last."""

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError(
                "back-off needs initial_backoff >= 0, max_backoff >= 0, multiplier >= 1"
            )
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("certificate_chain and private_key go together (mutual TLS)")

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.root_certificates is not None or self.certificate_chain is not None
