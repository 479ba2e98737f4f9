"""TLS and mutual TLS against a fake server holding certificates made in the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients import ReachRankClient, ReachRankError

from .conftest import FakeServer, start_fake_server


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def _issue(name: str, issuer: Pem | None, sans: list[x509.GeneralName], is_ca: bool) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    if issuer is None:
        issuer_name, signing_key = subject, key
    else:
        issuer_name = x509.load_pem_x509_certificate(issuer.cert).subject
        signing_key = serialization.load_pem_private_key(issuer.key, password=None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@dataclass(frozen=True)
class Pki:
    ca: Pem
    server: Pem
    client: Pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = _issue("ReachRank test CA", None, [], is_ca=True)
    server = _issue(
        "ranker.test",
        ca,
        [x509.DNSName("ranker.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        is_ca=False,
    )
    client = _issue("ad-server", ca, [x509.DNSName("ad-server")], is_ca=False)
    return Pki(ca, server, client)


def _serve(pki: Pki, mutual: bool) -> Iterator[FakeServer]:
    credentials = grpc.ssl_server_credentials(
        [(pki.server.key, pki.server.cert)],
        root_certificates=pki.ca.cert if mutual else None,
        require_client_auth=mutual,
    )
    fake = start_fake_server(credentials)
    yield fake
    fake.server.stop(grace=None)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[FakeServer]:
    yield from _serve(pki, mutual=False)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[FakeServer]:
    yield from _serve(pki, mutual=True)


def test_tls_with_the_ca_bundle(tls_server: FakeServer, pki: Pki) -> None:
    with ReachRankClient(tls_server.target, root_certificates=pki.ca.cert, token="t0k") as sdk:
        assert sdk.recommend("u1", 1).item_ids == ["i0"]
    assert tls_server.servicer.calls[-1].metadata["authorization"] == "Bearer t0k"


def test_tls_server_name_override(tls_server: FakeServer, pki: Pki) -> None:
    target = f"localhost:{tls_server.port}"  # "localhost" is not in the certificate
    with ReachRankClient(
        target, root_certificates=pki.ca.cert, tls_server_name="ranker.test"
    ) as sdk:
        assert sdk.health() == "SERVING"


def test_untrusted_server_is_refused(tls_server: FakeServer) -> None:
    # tls=True with the system roots: the test CA is not among them.
    sdk = ReachRankClient(tls_server.target, tls=True, max_attempts=1, timeout=5.0)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.recommend("u1", 1)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert not tls_server.servicer.calls


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: FakeServer) -> None:
    sdk = ReachRankClient(tls_server.target, max_attempts=1, timeout=5.0)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.recommend("u1", 1)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_with_a_client_certificate(mtls_server: FakeServer, pki: Pki) -> None:
    with ReachRankClient(
        mtls_server.target,
        root_certificates=pki.ca.cert,
        certificate_chain=pki.client.cert,
        private_key=pki.client.key,
    ) as sdk:
        assert sdk.recommend("u1", 2).item_ids == ["i0", "i1"]


def test_mutual_tls_without_a_client_certificate_fails(mtls_server: FakeServer, pki: Pki) -> None:
    sdk = ReachRankClient(
        mtls_server.target, root_certificates=pki.ca.cert, max_attempts=1, timeout=5.0
    )
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.recommend("u1", 1)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert not mtls_server.servicer.calls
