"""Who may talk to a cloud: TLS on the channel and a bearer token in every call's metadata.

The edge's side is ChannelSecurity (one set of flags, added by add_edge_arguments, for every
command that connects); the cloud's is ServerSecurity (add_server_arguments). The token is checked
by a server interceptor before the Generate handler runs, so a caller without it costs the cloud
no session, no runner and no model work. See docs/reliability.md for the threat model.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from picospec.errors import InvalidInputError

TOKEN_ENV = "PICOSPEC_TOKEN"
AUTH_METADATA_KEY = "authorization"  # gRPC metadata keys are lower case
BEARER = "Bearer "
# Methods answered without a token: load balancers' and Kubernetes' gRPC probes cannot send one, and
# the health service tells only whether the cloud takes sessions (picospec/cloud/health.py).
OPEN_METHOD_PREFIX = "/grpc.health.v1.Health/"


def read_token(path: str | Path | None) -> str | None:
    """The token in `path` (surrounding whitespace stripped), else $PICOSPEC_TOKEN, else None."""
    if path is not None:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise InvalidInputError(f"cannot read the token file {path}: {exc.strerror}") from None
        if not token:
            raise InvalidInputError(f"the token file {path} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _read_pem(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the {what} {path}: {exc.strerror}") from None


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


# -------------------------------------------------------------------------------------------------
# The edge


@dataclass(frozen=True)
class ChannelSecurity:
    """How an edge authenticates its cloud and itself.

    tls: use TLS, verifying the cloud's certificate against tls_ca (a PEM file) or, without one,
    the system's trust store. tls_cert / tls_key: a client certificate for mutual TLS. token: sent
    as `authorization: Bearer <token>` with every call.
    """

    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInputError("a client certificate needs both --tls-cert and --tls-key")
        if not self.tls and (self.tls_ca or self.tls_cert):
            object.__setattr__(self, "tls", True)  # a CA or a client certificate only makes sense over TLS

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for the channel, or None for plaintext."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.tls_ca, "CA certificate"),
            private_key=_read_pem(self.tls_key, "client key"),
            certificate_chain=_read_pem(self.tls_cert, "client certificate"),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata that carries the token (empty without one)."""
        return ((AUTH_METADATA_KEY, BEARER + self.token),) if self.token else ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ChannelSecurity":
        """The security the flags of add_edge_arguments describe (the token may come from the environment)."""
        return cls(args.tls, args.tls_ca, args.tls_cert, args.tls_key, read_token(args.token_file))


def add_edge_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that connects to a cloud."""
    group = parser.add_argument_group("connecting to a cloud securely (with --cloud)")
    group.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CA store (implied by --tls-ca)")
    group.add_argument("--tls-ca", type=Path, metavar="PEM", help="verify the cloud's certificate against this CA")
    group.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate, for mutual TLS")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="client private key, for mutual TLS")
    group.add_argument("--token-file", type=Path, metavar="FILE", help=f"bearer token for the cloud (None: ${TOKEN_ENV})")


# -------------------------------------------------------------------------------------------------
# The cloud


@dataclass(frozen=True)
class ServerSecurity:
    """What a cloud demands of its edges.

    tls_cert / tls_key: the server's certificate and key (TLS on); tls_client_ca: also demand a
    client certificate signed by this CA (mutual TLS); token: the bearer token every call must
    carry; insecure: allow listening beyond loopback without TLS and a token.
    """

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token: str | None = field(default=None, repr=False)
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInputError("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise InvalidInputError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def check_listen(self, host: str) -> str | None:
        """Refuse to serve beyond loopback without TLS and a token unless insecure; return a warning, if any."""
        if is_loopback(host) or (self.tls and self.token):
            return None
        missing = " and ".join(what for what, have in (("TLS", self.tls), ("a token", self.token)) if not have)
        if not self.insecure:
            raise InvalidInputError(
                f"refusing to listen on {host} without {missing}: anyone who reaches it could use the model. "
                "Give --tls-cert/--tls-key and --token-file (or $PICOSPEC_TOKEN), or --insecure to serve anyway"
            )
        return f"WARNING: serving on {host} without {missing} (--insecure): anyone who can reach it can use this cloud"

    def describe(self) -> str:
        """One line for the log, e.g. 'mutual TLS, token required'."""
        tls = "mutual TLS" if self.tls_client_ca else "TLS" if self.tls else "plaintext"
        return f"{tls}, {'token required' if self.token else 'no token'}"

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for the listening port, or None for plaintext."""
        if not self.tls:
            return None
        pair = (_read_pem(self.tls_key, "server key"), _read_pem(self.tls_cert, "server certificate"))
        client_ca = _read_pem(self.tls_client_ca, "client CA certificate")
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The token check, when a token is set."""
        return [TokenInterceptor(self.token)] if self.token else []

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerSecurity":
        """The security the flags of add_server_arguments describe."""
        return cls(args.tls_cert, args.tls_key, args.tls_client_ca, read_token(args.token_file), args.insecure)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The cloud's security flags."""
    group = parser.add_argument_group("security")
    group.add_argument("--tls-cert", type=Path, metavar="PEM", help="server certificate (turns TLS on)")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="server private key")
    group.add_argument("--tls-client-ca", type=Path, metavar="PEM", help="demand client certificates signed by this CA (mutual TLS)")
    group.add_argument("--token-file", type=Path, metavar="FILE", help=f"bearer token every edge must send (None: ${TOKEN_ENV})")
    group.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without TLS and a token")


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Ends every call whose `authorization` metadata is not `Bearer <token>` with UNAUTHENTICATED,
    before the service sees it; the health service (OPEN_METHOD_PREFIX) is open to all. The comparison
    takes constant time, so timing tells nothing."""

    def __init__(self, token: str) -> None:
        self._expected = (BEARER + token).encode()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIX):
            return await continuation(handler_call_details)
        sent = [value for key, value in handler_call_details.invocation_metadata or () if key == AUTH_METADATA_KEY]
        if not sent:
            return _refusal("this cloud requires a token: give the edge --token-file or set $" + TOKEN_ENV)
        presented = sent[0].encode() if isinstance(sent[0], str) else sent[0]
        if len(sent) > 1 or not hmac.compare_digest(presented, self._expected):
            return _refusal("the token was not accepted by this cloud")
        return await continuation(handler_call_details)


REFUSAL_READ_S = 5.0  # how long a refused call may take to send its first message


def _refusal(message: str) -> grpc.RpcMethodHandler:
    async def refuse(request_iterator, context: grpc.aio.ServicerContext) -> None:
        # Wait for the caller's first message (the hello; it is parsed by nobody) before ending the
        # call: a grpc.aio client whose write races an immediate abort reports INTERNAL ("Internal
        # error from Core") instead of the status sent, and the edge would not learn why.
        try:
            await asyncio.wait_for(anext(aiter(request_iterator), None), REFUSAL_READ_S)
        except (TimeoutError, grpc.RpcError):
            pass
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Generate, the only RPC, is stream-stream; the refusal takes the same shape.
    return grpc.stream_stream_rpc_method_handler(refuse)
