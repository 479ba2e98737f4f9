"""Turn targets and `ClientOptions` into a configured gRPC channel (sync or asyncio).

Several targets become one static address list (`ipv4:a:p,b:p`) balanced round-robin by
gRPC itself, so every call goes to the next ready server without any Python in the path.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence

import grpc
import grpc.aio

from clients.options import ClientOptions
from clients.tracecontext import trace_headers

# Targets that already name a gRPC resolver are passed through untouched.
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")

_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target {address!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _ip_addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    # A host name inside a list: resolved once, now, because the static resolver takes only
    # literal addresses.
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def grpc_target(target: str | Sequence[str]) -> str:
    """The gRPC target string for one target, a comma-separated list or a sequence of them."""
    if isinstance(target, str):
        if target.startswith(_SCHEMES) or "," not in target:
            return target
        targets = [part for part in target.split(",") if part.strip()]
    else:
        targets = list(target)
    if not targets:
        raise ValueError("no target given")
    if len(targets) == 1:
        return targets[0]
    endpoints = []
    for address in targets:
        host, port = _split_host_port(address)
        endpoints += [(ip, port) for ip in _ip_addresses(host, port)]
    versions = {ip.version for ip, _ in endpoints}
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in endpoints)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in endpoints)
    # The static resolver takes one address family per target string.
    raise ValueError(f"targets mix IPv4 and IPv6 addresses: {targets}")


def channel_arguments(options: ClientOptions) -> list[tuple[str, str | int]]:
    """gRPC channel arguments for these options."""
    args: list[tuple[str, str | int]] = [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.service_config", _ROUND_ROBIN),
    ]
    if options.keepalive_time is not None:
        args += [
            ("grpc.keepalive_time_ms", int(options.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(options.keepalive_timeout * 1000)),
        ]
    if options.tls_server_name:
        args.append(("grpc.ssl_target_name_override", options.tls_server_name))
    return args + list(options.channel_options)


def _credentials(options: ClientOptions) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=options.root_certificates,
        private_key=options.private_key,
        certificate_chain=options.certificate_chain,
    )


def open_channel(target: str | Sequence[str], options: ClientOptions) -> grpc.Channel:
    """A blocking-API channel."""
    address, args = grpc_target(target), channel_arguments(options)
    if options.uses_tls:
        return grpc.secure_channel(address, _credentials(options), options=args)
    return grpc.insecure_channel(address, options=args)


def open_aio_channel(target: str | Sequence[str], options: ClientOptions) -> grpc.aio.Channel:
    """An asyncio channel; create it inside the running event loop."""
    address, args = grpc_target(target), channel_arguments(options)
    if options.uses_tls:
        return grpc.aio.secure_channel(address, _credentials(options), options=args)
    return grpc.aio.insecure_channel(address, options=args)


def base_metadata(options: ClientOptions) -> tuple[tuple[str, str], ...]:
    """Metadata every call carries: the configured pairs and the bearer token."""
    token = (("authorization", f"Bearer {options.token}"),) if options.token else ()
    return (*options.metadata, *token)


def call_metadata(options: ClientOptions, request_id: str) -> tuple[tuple[str, str], ...]:
    """Metadata for one call: `base_metadata`, the request id and the caller's trace
    context (`clients.tracecontext`)."""
    return (*base_metadata(options), ("x-request-id", request_id), *trace_headers())
