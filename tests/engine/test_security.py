"""Access control against real servers: TLS, mutual TLS and bearer tokens (plain and admin),
with certificates generated here, called through the real SDK client."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from reachrank.kserve.v2 import grpc_service_pb2 as kserve_pb
from reachrank.kserve.v2 import grpc_service_pb2_grpc as kserve_grpc

from clients import ReachRankClient
from clients.errors import ReachRankError
from engine.security import AuthInterceptor, auth_interceptor, read_tokens, server_credentials
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.rpc_helpers import raw_call, unary_paths

USER_TOKEN = "user-7f3a9c1e2b4d6f80a1c3e5"
ADMIN_TOKEN = "admin-0d2c4e6a8b1f3e5d7c9a"
WRONG_TOKEN = "user-7f3a9c1e2b4d6f80a1c3e6"  # differs from USER_TOKEN in the last character


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    ca_file: Path
    client_cert: bytes
    client_key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    out = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _cert("ReachRank test CA", ca_key, None, ca_key, ca=True)
    server = _cert(
        "localhost",
        server_key,
        ca.subject,
        ca_key,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client = _cert(
        "ad-server", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    pem = serialization.Encoding.PEM
    (out / "server.pem").write_bytes(server.public_bytes(pem))
    (out / "server.key").write_bytes(_pem_key(server_key))
    (out / "ca.pem").write_bytes(ca.public_bytes(pem))
    return Pki(
        ca=ca.public_bytes(pem),
        server_cert=out / "server.pem",
        server_key=out / "server.key",
        ca_file=out / "ca.pem",
        client_cert=client.public_bytes(pem),
        client_key=_pem_key(client_key),
    )


@pytest.fixture(scope="module")
def tls_server(
    trained_repo: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """TLS with tokens: user tokens from a file, admin tokens from the comma-separated field."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"# ad servers\n{USER_TOKEN}\n\n")
    running = start_server(
        Settings(
            repo=trained_repo,
            host="127.0.0.1",
            port=0,
            grace_period_s=0.5,
            tls_cert_file=pki.server_cert,
            tls_key_file=pki.server_key,
            auth_tokens_file=tokens,
            admin_tokens=f"{ADMIN_TOKEN}, another-admin",
            feedback_dir=tmp_path_factory.mktemp("feedback"),  # every service is served
        )
    )
    yield running
    running.stop(0)


def tls_client(server: RunningServer, pki: Pki, **options: object) -> ReachRankClient:
    options.setdefault("timeout", 10.0)
    return ReachRankClient(f"127.0.0.1:{server.port}", root_certificates=pki.ca, **options)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(ReachRankError) as error:
        call()  # type: ignore[operator]
    return error.value.code


def test_tls_with_a_token_serves(tls_server: RunningServer, pki: Pki) -> None:
    with tls_client(tls_server, pki, token=USER_TOKEN) as client:
        client.wait_ready(timeout=10)
        assert len(client.recommend("u1", k=3).items) == 3


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: RunningServer) -> None:
    with ReachRankClient(
        f"127.0.0.1:{tls_server.port}", token=USER_TOKEN, max_attempts=1, timeout=2.0
    ) as client:
        assert code_of(lambda: client.recommend("u1", k=3)) == grpc.StatusCode.UNAVAILABLE


def test_missing_or_wrong_token_is_unauthenticated(tls_server: RunningServer, pki: Pki) -> None:
    for token in (None, WRONG_TOKEN, "", f"{USER_TOKEN}x", USER_TOKEN[:-1]):
        with tls_client(tls_server, pki, token=token) as client:
            code = code_of(lambda client=client: client.recommend("u1", k=3))
            assert code == grpc.StatusCode.UNAUTHENTICATED, token
    # A token in another scheme than Bearer does not count either.
    with tls_client(
        tls_server, pki, metadata=(("authorization", f"Basic {USER_TOKEN}"),)
    ) as client:
        assert code_of(lambda: client.models()) == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token(tls_server: RunningServer, pki: Pki) -> None:
    with tls_client(tls_server, pki) as client:
        assert client.health() == "SERVING"
        assert client.health("reachrank.v1.Ranking") == "SERVING"


def test_reflection_needs_a_token(tls_server: RunningServer, pki: Pki) -> None:
    # Reflection is a bidirectional stream: the refusal must come back on that shape too.
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with tls_client(tls_server, pki) as client:
        stub = reflection_pb2_grpc.ServerReflectionStub(client._channel)
        with pytest.raises(grpc.RpcError) as error:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            stub.ServerReflectionInfo(
                iter([request]), timeout=5, metadata=(("authorization", f"Bearer {USER_TOKEN}"),)
            )
        )
    names = {s.name for s in answers[0].list_services_response.service}
    assert "reachrank.v1.Ranking" in names


def test_model_management_needs_an_admin_token(tls_server: RunningServer, pki: Pki) -> None:
    with tls_client(tls_server, pki, token=USER_TOKEN) as user:
        assert {m.name for m in user.models()} >= {"ctr"}  # reading the list is allowed
        assert code_of(lambda: user.load_model("ctr")) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: user.unload_model("ctr")) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: user.delete_experiment("x")) == grpc.StatusCode.PERMISSION_DENIED
        stub = kserve_grpc.GRPCInferenceServiceStub(user._channel)
        metadata = (("authorization", f"Bearer {USER_TOKEN}"),)
        for call in (stub.RepositoryModelLoad, stub.RepositoryModelUnload):
            with pytest.raises(grpc.RpcError) as error:
                call(kserve_pb.RepositoryModelLoadRequest(model_name="ctr"), metadata=metadata)
            assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert user.recommend("u1", k=2).items  # ctr is still served
    with tls_client(tls_server, pki, token=ADMIN_TOKEN) as admin:
        assert admin.load_model("ctr").name == "ctr"
        assert len(admin.recommend("u1", k=2).items) == 2  # admin tokens pass everywhere
    with tls_client(tls_server, pki, token="another-admin") as admin:
        assert admin.load_model("ctr").name == "ctr"


def test_tokens_never_reach_the_logs(
    tls_server: RunningServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(auth_tokens=f"{USER_TOKEN},{WRONG_TOKEN}x", admin_tokens=ADMIN_TOKEN)
    assert auth_interceptor(settings) is not None  # what the server logs at start
    logging.getLogger("engine").info("settings: %r", settings)
    with tls_client(tls_server, pki, token=WRONG_TOKEN) as client:
        assert code_of(lambda: client.load_model("ctr")) == grpc.StatusCode.UNAUTHENTICATED
    with tls_client(tls_server, pki, token=USER_TOKEN) as client:
        assert code_of(lambda: client.load_model("ctr")) == grpc.StatusCode.PERMISSION_DENIED
    with tls_client(tls_server, pki, token=ADMIN_TOKEN) as client:
        assert client.load_model("ctr").name == "ctr"
    assert "refused /reachrank.v1.ModelService/Load" in caplog.text  # the refusals were logged
    for token in (USER_TOKEN, WRONG_TOKEN, ADMIN_TOKEN):
        assert token not in caplog.text


@pytest.fixture(scope="module")
def mtls_server(trained_repo: Path, pki: Pki) -> Iterator[RunningServer]:
    running = start_server(
        Settings(
            repo=trained_repo,
            host="127.0.0.1",
            port=0,
            grace_period_s=0.5,
            tls_cert_file=pki.server_cert,
            tls_key_file=pki.server_key,
            tls_client_ca_file=pki.ca_file,
        )
    )
    yield running
    running.stop(0)


def test_mutual_tls_needs_a_client_certificate(mtls_server: RunningServer, pki: Pki) -> None:
    with tls_client(mtls_server, pki, max_attempts=1, timeout=2.0) as anonymous:
        assert code_of(lambda: anonymous.health()) == grpc.StatusCode.UNAVAILABLE
    with tls_client(
        mtls_server, pki, certificate_chain=pki.client_cert, private_key=pki.client_key
    ) as client:
        client.wait_ready(timeout=10)
        assert len(client.recommend("u1", k=3).items) == 3


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: RunningServer, pki: Pki
) -> None:
    other_ca_key, key = _key(), _key()
    other_ca = _cert("someone else", other_ca_key, None, other_ca_key, ca=True)
    cert = _cert("intruder", key, other_ca.subject, other_ca_key)
    with tls_client(
        mtls_server,
        pki,
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
        private_key=_pem_key(key),
        max_attempts=1,
        timeout=2.0,
    ) as client:
        assert code_of(lambda: client.health()) == grpc.StatusCode.UNAVAILABLE


def test_tokens_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "tokens"
    file.write_text("a  # first\n\n# comment\nb\na\n")
    assert read_tokens(file, " c, ,d,b") == (b"a", b"b", b"c", b"d")
    monkeypatch.setenv("REACHRANK_AUTH_TOKENS", "e1,e2")
    monkeypatch.setenv("REACHRANK_ADMIN_TOKENS", "root")
    settings = Settings()
    assert "e1" not in repr(settings)
    interceptor = auth_interceptor(settings)
    assert isinstance(interceptor, AuthInterceptor)
    assert interceptor.tokens == (b"e1", b"e2", b"root")
    assert interceptor.admin_tokens == (b"root",)


def test_no_tokens_means_auth_off_with_a_warning_off_loopback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.security")
    assert auth_interceptor(Settings(host="127.0.0.1")) is None
    assert auth_interceptor(Settings(host="localhost")) is None
    assert "without authentication" not in caplog.text
    assert auth_interceptor(Settings(host="0.0.0.0")) is None
    assert "listening on 0.0.0.0 without authentication" in caplog.text


def test_tls_settings_must_be_complete(pki: Pki) -> None:
    assert server_credentials(Settings()) is None
    with pytest.raises(ValueError, match="go together"):
        server_credentials(Settings(tls_cert_file=pki.server_cert))
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        server_credentials(Settings(tls_client_ca_file=pki.ca_file))


def test_every_method_but_health_is_guarded(tls_server: RunningServer, pki: Pki) -> None:
    # Garbage bytes without a token: refused before decoding, so UNAUTHENTICATED everywhere
    # (never INVALID_ARGUMENT); health answers without one.
    paths = unary_paths()
    with tls_client(tls_server, pki) as client:
        for path in paths:
            code = raw_call(client._channel, path, b"\xff\xff garbage")
            if path.startswith("/grpc.health.v1.Health/"):
                assert code != grpc.StatusCode.UNAUTHENTICATED, path
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, path


def test_cli_options_reach_the_settings(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import engine.observability
    import engine.server
    from engine.cli import serve

    seen: list[Settings] = []
    monkeypatch.setattr(engine.server, "serve_forever", seen.append)
    monkeypatch.setattr(engine.observability, "configure_logging", lambda *a, **k: None)
    tokens = tmp_path / "tokens"
    tokens.write_text("t1\n")
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    args += ["--tls-client-ca", str(pki.ca_file), "--auth-tokens-file", str(tokens)]
    args += ["--admin-tokens-file", str(tokens)]
    result = CliRunner().invoke(serve, args)
    assert result.exit_code == 0, result.output
    (settings,) = seen
    assert settings.tls_cert_file == pki.server_cert
    assert settings.tls_key_file == pki.server_key
    assert settings.tls_client_ca_file == pki.ca_file
    assert settings.auth_tokens_file == settings.admin_tokens_file == tokens
