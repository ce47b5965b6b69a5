"""Command-line options that several commands share (generate, demo, bench run), with every default
read from the configuration dataclasses, so that a default is written once, where it is used.

`bench run` adds the same edge options with no defaults of their own (None: keep the benchmark's
configuration, itself built from the same dataclass defaults).
"""

from __future__ import annotations

import argparse

from picospec.edge.config import DrafterConfig, EdgeConfig
from picospec.edge.controller import DEFAULT_POLICY, POLICIES, ControllerConfig
from picospec.launch import CloudProcessConfig
from picospec.models.registry import DEFAULT_DRAFT, DEFAULT_TARGET
from picospec.sampling import SamplingParams
from picospec.verify import VerifyConfig

EDGE = EdgeConfig()
SAMPLING = SamplingParams()
VERIFY = VerifyConfig()
CONTROLLER = ControllerConfig()
CLOUD_PROCESS = CloudProcessConfig()
DRAFTER = DrafterConfig()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help, and keeps epilogs as written."""


def add_edge_options(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    """The sampling cuts, verify-mode parameters, chunking policy, llama.cpp configuration and
    models of an edge generation. with_defaults=False gives every option the default None."""

    def default(value: object) -> object:
        return value if with_defaults else None

    parser.add_argument("--top-k", type=int, default=default(SAMPLING.top_k), help="sampling: keep the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=default(SAMPLING.top_p), help="sampling: nucleus mass (1: all)")
    parser.add_argument("--topk-entries", type=int, default=default(VERIFY.topk), metavar="K",
                        help="--verify topk: how many target entries a rejection sends back")  # fmt: skip
    parser.add_argument("--candidates", type=int, default=default(VERIFY.n_candidates), metavar="M",
                        help="--verify exact: target candidates a rejection sends back")  # fmt: skip
    parser.add_argument(
        "--policy", choices=POLICIES, default=default(DEFAULT_POLICY),
        help="picospec: adaptive = the cost-model controller (chunks sized by the drafter's confidence, first token "
        "from the cloud's prompt pass, fallback to cloud decoding); fixed = chunks of --chunk-len",
    )  # fmt: skip
    parser.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=default(CONTROLLER.fallback),
                        help="adaptive: let the cloud decode when speculation does not pay")  # fmt: skip
    parser.add_argument("--confidence", action=argparse.BooleanOptionalAction, default=default(CONTROLLER.confidence),
                        help="adaptive: cut chunks by the drafter's confidence in each token")  # fmt: skip
    parser.add_argument(
        "--lookup", action=argparse.BooleanOptionalAction, default=default(EDGE.lookup is not None),
        help="speculative methods: draft tokens copied from earlier in the prompt or output where it repeats itself "
        "(prompt lookup), the drafter drafting elsewhere; the controller weighs them by their own acceptance and "
        "speculates on them alone when a copied run pays. Exact in every verify mode. Off by default: on the 2-core "
        "CPU it did not beat the drafter alone on code edits (whose copied runs the 0.5B drafter drafts as well; "
        "docs/benchmarks.md); try it with a weaker or slower drafter, or a GPU cloud",
    )  # fmt: skip
    parser.add_argument("--chunk-len", type=int, default=default(EDGE.chunk_len),
                        help="fixed policy (and sync, vanilla): draft tokens per chunk")  # fmt: skip
    parser.add_argument("--lookahead", type=int, default=None,
                        help="fixed policy: most unverified draft tokens (picospec); at least --chunk-len "
                        "(None: twice --chunk-len)")  # fmt: skip
    parser.add_argument(
        "--deterministic", action=argparse.BooleanOptionalAction, default=default(CLOUD_PROCESS.deterministic),
        help="batch-invariant llama.cpp on both sides (about 35%% slower): greedy output then equals ar's token for "
        "token. Without it (the fast configuration) the output is still an exact sample of the target as llama.cpp "
        "computes it, but near-ties can flip between batchings",
    )  # fmt: skip
    parser.add_argument("--draft", default=default(DEFAULT_DRAFT), metavar="MODEL",
                        help="drafter: a default model name (draft-q4_0, draft), a GGUF path or a Hugging Face checkpoint directory")  # fmt: skip
    parser.add_argument("--target", default=default(DEFAULT_TARGET), metavar="MODEL",
                        help="target of the local cloud: a default model name (target), a GGUF path or a checkpoint directory")  # fmt: skip
    parser.add_argument("--draft-threads", type=int, default=default(DRAFTER.threads), metavar="T",
                        help="llama.cpp threads of the drafter")  # fmt: skip
    parser.add_argument("--draft-gpu-layers", type=int, default=default(DRAFTER.gpu_layers), metavar="N",
                        help="drafter layers offloaded to a GPU (-1: all); needs llama-cpp-python built with a GPU "
                        "backend (README)")  # fmt: skip
    parser.add_argument("--target-threads", type=int, default=default(CLOUD_PROCESS.threads), metavar="T",
                        help="llama.cpp threads of the local cloud's target")  # fmt: skip
    parser.add_argument("--target-gpu-layers", type=int, default=default(CLOUD_PROCESS.gpu_layers), metavar="N",
                        help="local cloud: target layers offloaded to a GPU (-1: all)")  # fmt: skip
