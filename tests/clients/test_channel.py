"""Targets, channel arguments and round-robin over several servers."""

from __future__ import annotations

import json

import pytest

from clients import ClientOptions, ReachRankClient
from clients.channel import channel_arguments, grpc_target

from .conftest import FakeServer, start_fake_server


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("dns:///ranker.internal:50051", "dns:///ranker.internal:50051"),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (["10.0.0.1:1", "10.0.0.2:2"], "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (["[::1]:1", "[fe80::2]:2"], "ipv6:[::1]:1,[fe80::2]:2"),
        (["ranker:7"], "ranker:7"),
    ],
)
def test_grpc_target(target: str | list[str], expected: str) -> None:
    assert grpc_target(target) == expected


def test_host_names_in_a_list_are_resolved_once() -> None:
    assert grpc_target(["localhost:1", "127.0.0.2:2"]).startswith("ipv4:127.0.0.1:1,")


@pytest.mark.parametrize(
    "target",
    [[], ["10.0.0.1", "10.0.0.2:1"], ["10.0.0.1:1", "[::1]:2"], ["10.0.0.1:x", "10.0.0.2:1"]],
)
def test_bad_targets_are_refused(target: list[str]) -> None:
    with pytest.raises(ValueError):
        grpc_target(target)


def test_channel_arguments_carry_the_options() -> None:
    args = dict(
        channel_arguments(
            ClientOptions(
                keepalive_time=30,
                keepalive_timeout=5,
                tls_server_name="ranker",
                max_message_bytes=1 << 20,
            )
        )
    )
    assert args["grpc.keepalive_time_ms"] == 30_000
    assert args["grpc.keepalive_timeout_ms"] == 5_000
    assert args["grpc.ssl_target_name_override"] == "ranker"
    assert args["grpc.max_receive_message_length"] == 1 << 20
    assert json.loads(args["grpc.service_config"]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert "grpc.keepalive_time_ms" not in dict(
        channel_arguments(ClientOptions(keepalive_time=None))
    )


def test_round_robin_reaches_every_server(fake_server: FakeServer) -> None:
    other = start_fake_server()
    try:
        with ReachRankClient([fake_server.target, other.target], timeout=5.0) as sdk:
            # The channel connects to both servers in the background; round-robin then
            # alternates between the ready ones. A pick-first policy would never reach both.
            for _ in range(200):
                sdk.recommend("u1", 1)
                if fake_server.servicer.calls and other.servicer.calls:
                    break
        assert fake_server.servicer.calls
        assert other.servicer.calls
    finally:
        other.server.stop(grace=None)


def test_round_robin_skips_a_dead_server(fake_server: FakeServer, closed_port: int) -> None:
    with ReachRankClient(f"127.0.0.1:{closed_port},{fake_server.target}", timeout=5.0) as sdk:
        results = [sdk.recommend("u1", 1) for _ in range(20)]
    assert all(result.item_ids == ["i0"] for result in results)
    assert len(fake_server.servicer.calls) >= 20
