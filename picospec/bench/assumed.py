"""Cost profiles that are assumed rather than measured: from a profile file, the paper's setups
(derived from a memory-bandwidth roofline), or the benchmark machine for planning; message sizes
come from the wire format."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from picospec.bench.costs import CostProfile, VerifyCost
from picospec.edge.config import Method
from picospec.errors import InvalidInputError
from picospec.transport.netem import LinkProfile
from picospec.verify import ProbFormat, Verdict, VerifyMode
from picospec.wire.messages import chunk_message, verdict_message


def wire_bytes(n_vocab: int, chunk_len: int) -> tuple[dict[VerifyMode, float], dict[VerifyMode, float]]:
    """Uplink bytes per draft token and downlink bytes per round of each verify mode, as the
    protocol encodes them for a vocabulary of n_vocab. Verdicts are counted as greedy ones (one
    token); the material of a sampled rejection (topk: K ids and probs, exact: m candidates) adds
    under a hundred bytes, which no link in the matrix notices."""
    tokens = np.full(chunk_len, n_vocab - 1, dtype=np.int64)
    probs = np.full((chunk_len, n_vocab), 1.0 / n_vocab)  # (k, V)
    start = 10_000  # a typical position: the varint width of `start` counts
    verdict = verdict_message(1, start, Verdict(chunk_len - 1, True, token=n_vocab - 1), ProbFormat.F16, 0.05, 100)
    up = {mode: chunk_message(mode, 1, start, tokens, probs, None).ByteSize() / chunk_len for mode in VerifyMode}
    return up, {mode: float(verdict.ByteSize()) for mode in VerifyMode}


FILE_FIELDS = {
    "name": "profile name",
    "source": "where the numbers come from",
    "draft_ms": "edge: one draft token",
    "target_ms": "cloud: one autoregressive decode step",
    "verify_intercept_ms": "cloud: verify(m) = intercept + per_token * m",
    "verify_per_token_ms": "",
    "cloud_prefill_ms": "cloud: the prompt pass",
    "edge_prefill_ms": "edge: the prompt pass",
    "rtt_ms": "link round-trip time",
    "bandwidth_mbps": "link bandwidth per direction",
    "n_vocab": "vocabulary size, for message sizes from the wire format",
    "chunk_len": "chunk length the message sizes are computed for (default 4)",
    "round_overhead_ms": "per-round protocol overhead (default 0)",
}


def profile_from_dict(data: dict) -> CostProfile:
    """A CostProfile from a profile file's keys (see FILE_FIELDS)."""
    unknown = set(data) - set(FILE_FIELDS)
    if unknown:
        raise InvalidInputError(f"unknown profile keys {sorted(unknown)}; known: {', '.join(FILE_FIELDS)}")
    try:
        ms = {k: float(data[k]) / 1000 for k in data if k.endswith("_ms") and k != "rtt_ms"}
        up, down = wire_bytes(int(data["n_vocab"]), int(data.get("chunk_len", 4)))
        link = LinkProfile(float(data["rtt_ms"]), float(data["bandwidth_mbps"]))
        return CostProfile(
            name=str(data.get("name", "file")),
            draft_s=ms["draft_ms"],
            verify=VerifyCost(ms["verify_intercept_ms"], ms["verify_per_token_ms"]),
            target_s=ms["target_ms"],
            cloud_prefill_s=ms["cloud_prefill_ms"],
            edge_prefill_s=ms["edge_prefill_ms"],
            link=link,
            bytes_up_per_draft_token=up,
            bytes_down_per_round=down,
            bytes_down_per_ar_token=down[VerifyMode.EXACT],
            round_overhead_s=ms.get("round_overhead_ms", 0.0),
            source=str(data.get("source", "a profile file")),
        )
    except KeyError as exc:
        raise InvalidInputError(f"the profile lacks {exc.args[0]!r} ({FILE_FIELDS.get(exc.args[0], '')})") from None


# Literature-based profiles of the paper's setups (arXiv 2603.19133: Jetson AGX Orin edge, A100
# cloud). The paper gives no per-token timings, so these are ASSUMPTIONS derived from a memory-
# bandwidth roofline, decode time = weight bytes / (peak bandwidth x 0.6 achieved):
# - Jetson AGX Orin 64GB: 204.8 GB/s LPDDR5 (NVIDIA Jetson AGX Orin data sheet).
# - A100 80GB SXM: 2,039 GB/s HBM2e, 312 TFLOPS dense FP16 (NVIDIA A100 data sheet); Orin's GPU:
#   170 sparse INT8 TOPS, taken as 42.5 TFLOPS dense FP16.
# - Llama-3.2-1B (1.24 B params) and Qwen3-0.6B (0.6 B) in FP16 on the edge; Llama-3.1-70B in 4-bit
#   AWQ (~39.5 GB with scales) and Qwen3-32B in FP16 (65.5 GB) on one A100 (assumed deployments).
# - On a GPU a pass over a few tokens is memory-bound: verify(m) = decode + 1% per extra token.
# - Prefill of a ~200-token prompt at 50% of peak FLOPs: 2 * params * 200 / (0.5 * peak).
# - The paper's RTT/bandwidth settings are not reproduced: 50 ms and 100 Mbit/s are placeholders.
LITERATURE_PROFILES: dict[str, dict] = {
    "orin-a100-llama": {
        "name": "orin-a100-llama",
        "source": "assumed: roofline of Llama-3.2-1B FP16 on Jetson AGX Orin, Llama-3.1-70B AWQ-4bit on A100 80GB",
        "draft_ms": 20.1,
        "target_ms": 32.3,
        "verify_intercept_ms": 32.0,
        "verify_per_token_ms": 0.32,
        "cloud_prefill_ms": 180.0,
        "edge_prefill_ms": 23.0,
        "rtt_ms": 50.0,
        "bandwidth_mbps": 100.0,
        "n_vocab": 128_256,
    },
    "orin-a100-qwen3": {
        "name": "orin-a100-qwen3",
        "source": "assumed: roofline of Qwen3-0.6B FP16 on Jetson AGX Orin, Qwen3-32B FP16 on A100 80GB",
        "draft_ms": 9.8,
        "target_ms": 53.6,
        "verify_intercept_ms": 53.1,
        "verify_per_token_ms": 0.54,
        "cloud_prefill_ms": 84.0,
        "edge_prefill_ms": 11.0,
        "rtt_ms": 50.0,
        "bandwidth_mbps": 100.0,
        "n_vocab": 151_936,
    },
}


def load_profile(spec: str) -> CostProfile:
    """A built-in literature profile by name, or a JSON/TOML profile file."""
    if spec in LITERATURE_PROFILES:
        return profile_from_dict(LITERATURE_PROFILES[spec])
    path = Path(spec)
    if not path.is_file():
        raise InvalidInputError(f"no profile file {spec!r}; built-in profiles: {', '.join(LITERATURE_PROFILES)}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{spec}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    return profile_from_dict(data)


# The benchmark machine with the default pair, for planning how long a benchmark takes (runner.py):
# a 2-core CPU without AVX-512, one core and one llama.cpp thread per side, Qwen2.5-Coder 0.5B
# drafting for 1.5B. Rough figures of the earlier benchmark (docs/benchmarks.md): decode steps of
# 135 ms (1.5B) and 67 ms (0.5B), 80 ms for each token of a verified chunk beyond the first. The
# link and the prompt passes are each run's own (planning_profile).
BENCH_MACHINE = {
    "name": "bench-machine",
    "source": "assumed: the benchmark's 2-core CPU with Qwen2.5-Coder 0.5B drafting for 1.5B, for planning",
    "draft_ms": 67.0,
    "target_ms": 135.0,
    "verify_intercept_ms": 55.0,
    "verify_per_token_ms": 80.0,
    "cloud_prefill_ms": 0.0,
    "edge_prefill_ms": 0.0,
    "rtt_ms": 20.0,
    "bandwidth_mbps": 100.0,
    "n_vocab": 151_936,
}
PREFILL_S_PER_TOKEN = 0.04  # the 1.5B's prompt pass per prompt token (5-10 s for 105-247 tokens); the 0.5B's is half
VANILLA_ROW_S = 0.09  # what vanilla's edge adds to each draft: making, encoding and relaying its float16 row


def planning_profile(prompt_tokens: dict[str, int]) -> CostProfile:
    """BENCH_MACHINE with each prompt's passes ("workload:prompt_id" -> prompt tokens)."""
    base = profile_from_dict(BENCH_MACHINE)
    cloud = {prompt: n * PREFILL_S_PER_TOKEN for prompt, n in prompt_tokens.items()}
    return replace(
        base,
        cloud_prefill_by_prompt=cloud,
        edge_prefill_by_prompt={prompt: s / 2 for prompt, s in cloud.items()},
        draft_s_by_method={Method.VANILLA: base.draft_s + VANILLA_ROW_S},
    )
