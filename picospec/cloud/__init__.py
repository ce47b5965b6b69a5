"""The cloud side: a gRPC server that verifies draft chunks for many concurrent edge sessions."""

from picospec.cloud.config import CloudConfig
from picospec.cloud.server import CloudServer, CloudServerThread, start_server

__all__ = ["CloudConfig", "CloudServer", "CloudServerThread", "start_server"]
