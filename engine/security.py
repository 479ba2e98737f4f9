"""Who may call the server: TLS / mutual-TLS credentials and a bearer-token interceptor.

Every RPC but ``grpc.health.v1.Health/*`` needs ``authorization: Bearer <token>`` matching a
configured token; model management RPCs and erasure (Privacy/ForgetUser) need an admin token.
Server reflection is guarded like any other RPC: it lists the API, and callers that hold a
token can pass it to grpcurl (``-H 'authorization: Bearer ...'``). No token configured means
authentication is off. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter

from engine.settings import Settings

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
ADMIN_METHODS = frozenset(
    {
        "/reachrank.v1.ModelService/Load",
        "/reachrank.v1.ModelService/Unload",
        "/reachrank.v1.Experiments/Set",
        "/reachrank.v1.Experiments/Delete",
        "/reachrank.v1.Privacy/ForgetUser",
        "/reachrank.v1.AdCampaigns/Set",
        "/reachrank.v1.AdCampaigns/Delete",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
    }
)
_BEARER = "bearer "

REFUSED = Counter(
    "reachrank_auth_refused",
    "RPCs refused by access control, by method and status code",
    ["rpc", "code"],
)


def read_tokens(file: Path | None, inline: str | None) -> tuple[bytes, ...]:
    """Tokens from a file (one per line, ``#`` comments and blank lines ignored) and from a
    comma-separated string; duplicates removed."""
    tokens: list[str] = []
    if file is not None:
        for line in file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                tokens.append(line)
    if inline:
        tokens += [t.strip() for t in inline.split(",") if t.strip()]
    return tuple(dict.fromkeys(t.encode() for t in tokens))


def _matches(presented: bytes, tokens: Iterable[bytes]) -> bool:
    # Compare against every token, without stopping at a match, so timing reveals neither
    # a token's content nor its position in the list.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented, token)
    return found


def _presented_token(metadata: Iterable[tuple[str, Any]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if text[: len(_BEARER)].lower() == _BEARER:
                return text[len(_BEARER) :].strip().encode()
            return None
    return None


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same shape as ``handler`` that answers ``code`` without running it."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.ServerInterceptor):
    """Bearer-token access control; admin tokens also pass wherever a plain token does."""

    def __init__(self, tokens: Iterable[bytes], admin_tokens: Iterable[bytes]) -> None:
        self.admin_tokens = tuple(admin_tokens)
        self.tokens = tuple(dict.fromkeys((*tokens, *self.admin_tokens)))

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        presented = _presented_token(handler_call_details.invocation_metadata)
        rpc = method.rsplit("/", 1)[-1]
        if presented is None or not _matches(presented, self.tokens):
            REFUSED.labels(rpc, "UNAUTHENTICATED").inc()
            log.debug("refused %s: no valid bearer token", method)
            return _refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid 'authorization: Bearer <token>' is required",
            )
        if method in ADMIN_METHODS and not _matches(presented, self.admin_tokens):
            REFUSED.labels(rpc, "PERMISSION_DENIED").inc()
            log.debug("refused %s: not an admin token", method)
            return _refusal(
                handler, grpc.StatusCode.PERMISSION_DENIED, f"{method} needs an admin token"
            )
        return handler


def auth_interceptor(settings: Settings) -> AuthInterceptor | None:
    """The interceptor for the configured tokens, or None when none are configured."""
    tokens = read_tokens(settings.auth_tokens_file, _secret(settings.auth_tokens))
    admin = read_tokens(settings.admin_tokens_file, _secret(settings.admin_tokens))
    if not tokens and not admin:
        if not is_loopback(settings.host):
            log.warning(
                "listening on %s without authentication: set REACHRANK_AUTH_TOKENS_FILE",
                settings.host,
            )
        return None
    log.info("token authentication on (%d tokens, %d admin)", len(tokens), len(admin))
    return AuthInterceptor(tokens, admin)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials (mutual TLS when a client CA is set), or None for plaintext."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("tls_cert_file and tls_key_file go together")
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
