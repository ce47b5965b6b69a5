"""TLS, mutual TLS and the bearer token between a toy edge and a toy cloud on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from picospec.certs import make_test_certs
from picospec.cli import build_parser
from picospec.cloud.server import CloudServerThread
from picospec.edge.client import CloudError, CloudGeneration, generate
from picospec.edge.config import EdgeConfig, Recovery
from picospec.errors import InvalidInputError
from picospec.sampling import SamplingParams
from picospec.security import TOKEN_ENV, ChannelSecurity, ServerSecurity, read_token
from picospec.verify import VerifyConfig
from test_edge import PROMPT, reference, toy_drafter, toy_target
from clouds import cloud_thread

# Failing at once, not after reconnection attempts: a handshake the edge refuses would fail again.
CONFIG = EdgeConfig(params=SamplingParams(temperature=0), verify=VerifyConfig(mode="exact"), max_new_tokens=12,
                    recovery=Recovery(on_loss="fail"))  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_test_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    return make_test_certs(tmp_path_factory.mktemp("other"))


def secure_cloud(certs, mutual: bool = False) -> CloudServerThread:
    security = ServerSecurity(certs.server_cert, certs.server_key, certs.ca if mutual else None, read_token(certs.token))
    return cloud_thread(toy_target, security=security)


def edge_security(certs, token: str | None = "from-file", ca: Path | None = None, client: bool = False) -> ChannelSecurity:
    token = read_token(certs.token) if token == "from-file" else token
    cert, key = (certs.client_cert, certs.client_key) if client else (None, None)
    return ChannelSecurity(tls=True, tls_ca=ca or certs.ca, tls_cert=cert, tls_key=key, token=token)


def run(cloud: CloudServerThread, security: ChannelSecurity) -> list[int]:
    return generate(f"localhost:{cloud.port}", toy_drafter(), PROMPT, CONFIG, security=security).token_ids


def test_an_edge_with_the_ca_and_the_token_generates_over_tls(certs):
    with secure_cloud(certs) as cloud:
        assert run(cloud, edge_security(certs)) == reference(CONFIG.params, CONFIG.verify, 12)


@pytest.mark.parametrize(
    "token, says", [(None, "requires a token"), ("wrong", "not accepted"), ("", "requires a token")], ids=["missing", "wrong", "empty"]
)
def test_a_bad_token_is_unauthenticated_and_costs_no_session(certs, token, says):
    with secure_cloud(certs) as cloud:
        with pytest.raises(CloudError, match=f"UNAUTHENTICATED: .*{says}"):
            run(cloud, edge_security(certs, token=token))
        assert cloud.server.sessions_ended == 0 and cloud.server.pool.in_use == 0
        assert run(cloud, edge_security(certs)) == reference(CONFIG.params, CONFIG.verify, 12)  # still serving


def test_an_edge_that_does_not_trust_the_certificate_cannot_connect(certs, other_certs):
    with secure_cloud(certs) as cloud:
        with pytest.raises(CloudError, match="UNAVAILABLE"):
            run(cloud, edge_security(certs, ca=other_certs.ca))
        assert cloud.server.sessions_ended == 0


def test_plaintext_to_a_tls_cloud_fails(certs):
    with secure_cloud(certs) as cloud:
        with pytest.raises(CloudError, match="UNAVAILABLE"):
            run(cloud, ChannelSecurity(token=read_token(certs.token)))


def test_mutual_tls_needs_a_client_certificate_from_the_ca(certs, other_certs):
    with secure_cloud(certs, mutual=True) as cloud:
        with pytest.raises(CloudError, match="UNAVAILABLE"):
            run(cloud, edge_security(certs))
        with pytest.raises(CloudError, match="UNAVAILABLE"):
            run(cloud, ChannelSecurity(tls_ca=certs.ca, tls_cert=other_certs.client_cert, tls_key=other_certs.client_key,
                                       token=read_token(certs.token)))  # fmt: skip
        assert cloud.server.sessions_ended == 0
        assert run(cloud, edge_security(certs, client=True)) == reference(CONFIG.params, CONFIG.verify, 12)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "cloud.example.com"])
def test_the_cloud_refuses_to_listen_beyond_loopback_without_tls_and_a_token(certs, host):
    for security in (ServerSecurity(), ServerSecurity(certs.server_cert, certs.server_key), ServerSecurity(token="t")):
        with pytest.raises(InvalidInputError, match=f"refusing to listen on {host}"):
            security.check_listen(host)
    assert "WARNING" in ServerSecurity(insecure=True).check_listen(host)
    assert ServerSecurity(certs.server_cert, certs.server_key, token="t").check_listen(host) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_credentials(host):
    assert ServerSecurity().check_listen(host) is None


def test_a_cloud_refuses_before_loading_its_model():
    loaded = []
    with pytest.raises(InvalidInputError, match="refusing to listen on 0.0.0.0 without TLS and a token"):
        cloud_thread(lambda: loaded.append(1) or toy_target(), host="0.0.0.0").start()
    assert loaded == []


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, " s3cret \n")
    assert read_token(None) == "s3cret"
    (tmp_path / "tok").write_text("from-file\n")
    assert read_token(tmp_path / "tok") == "from-file"  # the file wins
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidInputError, match="is empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="cannot read the token file"):
        read_token(tmp_path / "missing")


def test_half_a_certificate_pair_is_refused():
    with pytest.raises(InvalidInputError, match="both --tls-cert and --tls-key"):
        ChannelSecurity(tls_cert=Path("c.pem"))
    with pytest.raises(InvalidInputError, match="both --tls-cert and --tls-key"):
        ServerSecurity(tls_key=Path("k.pem"))
    with pytest.raises(InvalidInputError, match="mutual TLS"):
        ServerSecurity(tls_client_ca=Path("ca.pem"))


def test_the_token_is_not_printed_with_the_settings():
    assert "s3cret" not in repr(ChannelSecurity(token="s3cret")) + repr(ServerSecurity(token="s3cret"))


def test_generate_and_cloud_take_the_security_flags(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    (tmp_path / "tok").write_text("t0k\n")
    args = build_parser().parse_args(["generate", "--cloud", "h:1", "--tls-ca", "ca.pem", "--tls-cert", "c.pem",
                                      "--tls-key", "k.pem", "--token-file", str(tmp_path / "tok")])  # fmt: skip
    security = ChannelSecurity.from_args(args)
    assert (security.tls, security.tls_ca, security.tls_cert, security.token) == (True, Path("ca.pem"), Path("c.pem"), "t0k")
    assert security.metadata() == (("authorization", "Bearer t0k"),)
    args = build_parser().parse_args(["cloud", "--host", "0.0.0.0", "--tls-cert", "s.pem", "--tls-key", "k.pem",
                                      "--tls-client-ca", "ca.pem", "--token-file", str(tmp_path / "tok")])  # fmt: skip
    server = ServerSecurity.from_args(args)
    assert (server.tls, server.tls_client_ca, server.token, server.insecure) == (True, Path("ca.pem"), "t0k", False)


def test_certs_command_writes_everything(tmp_path, capsys):
    args = build_parser().parse_args(["certs", str(tmp_path / "c"), "--host", "edge.example.com", "--host", "10.0.0.5"])
    assert args.func(args) == 0
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["ca.pem", "client-key.pem", "client.pem", "server-key.pem", "server.pem", "token"]
    assert (tmp_path / "c" / "server-key.pem").stat().st_mode & 0o077 == 0
    assert "--tls-ca" in capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((tmp_path / "c" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "edge.example.com"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.5"]


def test_an_edge_warns_before_sending_a_token_without_tls_beyond_loopback(caplog):
    for address, warns in (("10.0.0.1:50051", True), ("127.0.0.1:50051", False)):
        caplog.clear()
        CloudGeneration(address, ChannelSecurity(token="t"), toy_drafter(), PROMPT, CONFIG, None)
        assert ("without TLS" in caplog.text) == warns
    CloudGeneration("10.0.0.1:50051", ChannelSecurity(tls=True, token="t"), toy_drafter(), PROMPT, CONFIG, None)
    assert "without TLS" not in caplog.text
