"""`picospec certs DIR`: a throw-away CA, a server certificate, a client certificate and a token,
for trying TLS and mutual TLS. For production, use certificates from your own CA."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from picospec.errors import InvalidInputError

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class CertFiles:
    """Where `make_test_certs` wrote each file."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    token: Path


def make_test_certs(directory: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS) -> CertFiles:
    """Write a CA, a server certificate valid for `hosts` (DNS names or IP addresses), a client
    certificate, their keys (mode 0600) and a random token into `directory`."""
    if days < 1:
        raise InvalidInputError(f"days must be >= 1, got {days}")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("picospec test CA")
    ca = (
        _builder(ca_name, ca_name, ca_key, now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(*(directory / name for name in
                        ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem", "token")))  # fmt: skip
    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM))
    sans = [_san(host) for host in hosts]
    for cert_path, key_path, common_name, usage, extra in (
        (files.server_cert, files.server_key, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, [x509.SubjectAlternativeName(sans)]),
        (files.client_cert, files.client_key, "picospec edge", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(_name(common_name), ca_name, key, now, days).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        _write(cert_path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        _write(key_path, _key_pem(key), private=True)
    _write(files.token, (secrets.token_urlsafe(32) + "\n").encode(), private=True)
    return files


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key, now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `certs` command."""
    parser = subparsers.add_parser("certs", help="make a test CA, server and client certificates and a token")
    parser.add_argument("directory", type=Path, help="where to write them (created if missing)")
    parser.add_argument(
        "--host", action="append", default=None, metavar="NAME",
        help="a DNS name or IP address the server certificate is valid for, besides localhost and 127.0.0.1; repeatable",
    )  # fmt: skip
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *(args.host or ()))))
    files = make_test_certs(args.directory, hosts, args.days)
    d = args.directory
    print(f"wrote a test CA, certificates for {', '.join(hosts)}, a client certificate and a token to {d}")
    print(f"cloud: picospec cloud --host 0.0.0.0 --tls-cert {files.server_cert} --tls-key {files.server_key} "
          f"--token-file {files.token} [--tls-client-ca {files.ca}]")  # fmt: skip
    print(f"edge:  picospec generate --cloud HOST:50051 --tls-ca {files.ca} --token-file {files.token} "
          f"[--tls-cert {files.client_cert} --tls-key {files.client_key}]")  # fmt: skip
    return 0
