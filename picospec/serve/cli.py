"""`picospec serve`: the OpenAI-compatible HTTP server on the edge.

Only argparse and app.py's flag helpers are imported at start-up; the ASGI stack and the models
load when the command runs, so `picospec --help` stays fast.
"""

from __future__ import annotations

import argparse
import os

from picospec.app import add_decoding_args, add_deployment_args
from picospec.cloud.config import CloudConfig
from picospec.edge.config import Method

API_KEY_ENV = "PICOSPEC_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    parser = subparsers.add_parser("serve", help="an OpenAI-compatible HTTP API on the edge (/v1/chat/completions, ...)")
    parser.add_argument("--method", choices=[m.value for m in Method], default="picospec")
    add_decoding_args(parser)
    add_deployment_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV),
        help=f"require `Authorization: Bearer KEY` on /v1 routes (default: ${API_KEY_ENV}, else none)",
    )  # fmt: skip
    parser.add_argument("--max-queue", type=int, default=8, help="requests that may wait for the edge; more get 429 (default: 8)")
    parser.add_argument(
        "--max-context", type=int, default=CloudConfig().max_context,
        help="tokens a request may use, prompt plus max_tokens (default: the cloud's, %(default)s); "
        "a request without max_tokens may generate up to this",
    )  # fmt: skip
    parser.add_argument("--model-name", help="the model id /v1/models lists and responses carry (default: the drafter's file name)")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from picospec.app import cloud_context, load_drafter
    from picospec.serve.engine import EdgeEngine
    from picospec.serve.http import create_app

    runner = load_drafter(args)
    with cloud_context(args) as local:
        address = args.cloud or local.address
        engine = EdgeEngine(runner, address, args, args.max_context, args.max_queue)
        name = args.model_name or f"picospec:{runner.model_path.name}"
        app = create_app(engine, name, args.api_key)
        print(f"picospec serve: {name} on http://{args.host}:{args.port}/v1 (cloud {address})", flush=True)
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        finally:
            engine.close()
    return 0
