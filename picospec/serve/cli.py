"""`picospec serve`: the OpenAI-compatible HTTP server on the edge.

Only argparse and app.py's flag helpers are imported at start-up; the ASGI stack and the models
load when the command runs, so `picospec --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from picospec.app import add_edge_args
from picospec.edge.config import Method
from picospec.options import EDGE
from picospec.serve.config import ServeConfig

API_KEY_ENV = "PICOSPEC_API_KEY"
DEFAULTS = ServeConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    parser = subparsers.add_parser("serve", help="an OpenAI-compatible HTTP API on the edge (/v1/chat/completions, ...)")
    parser.add_argument("--method", choices=[m.value for m in Method], default=EDGE.method.value, help="decoding method")
    add_edge_args(parser)
    parser.add_argument("--host", default=DEFAULTS.host, help="address to listen on (loopback: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULTS.port, help="HTTP port")
    parser.add_argument("--api-key", default=None,
                        help=f"require `Authorization: Bearer KEY` on /v1 routes (None: ${API_KEY_ENV}, else no key)")  # fmt: skip
    parser.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                        help="requests that may wait for the edge; more are refused with 429")  # fmt: skip
    parser.add_argument("--max-context", type=int, default=DEFAULTS.max_context,
                        help="tokens a request may use, prompt plus max_tokens; without max_tokens a request may fill it")  # fmt: skip
    parser.add_argument("--model-name", help="the model id /v1/models lists and responses carry (None: the drafter's file name)")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from picospec.app import cloud_context, load_drafter
    from picospec.serve.engine import EdgeEngine
    from picospec.serve.http import create_app

    config = ServeConfig(host=args.host, port=args.port, max_queue=args.max_queue, max_context=args.max_context)
    # uvicorn stops on SIGTERM and then raises the signal again; by default that would kill this
    # process before the local cloud is stopped. As an exception it unwinds through the cleanup.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with cloud_context(args) as local:
        runner = load_drafter(args)
        address = args.cloud or local.address
        engine = EdgeEngine(runner, address, args, config.max_context, config.max_queue)
        name = args.model_name or f"picospec:{runner.model_path.name}"
        app = create_app(engine, name, args.api_key or os.environ.get(API_KEY_ENV))
        server_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning")
        # Listen before announcing: a client that connects as soon as it reads the line below
        # waits in the backlog instead of being refused while uvicorn starts up.
        listening = server_config.bind_socket()
        listening.listen()
        print(f"picospec serve: {name} on http://{config.host}:{config.port}/v1 (cloud {address})", flush=True)
        try:
            uvicorn.Server(server_config).run(sockets=[listening])
        finally:
            engine.close()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)
