"""Verification algorithms (pure functions, no I/O): full, topk, exact and gumbel."""

from picospec.verify.algorithms import (
    VerifyConfig,
    accept_count,
    cloud_verify,
    draft_token,
    draw_candidates,
    edge_correction,
    take_candidate,
    top_k_entries,
)
from picospec.verify.material import Candidates, ProbFormat, SparseDist, Verdict, VerifyMode

__all__ = [
    "Candidates",
    "ProbFormat",
    "SparseDist",
    "Verdict",
    "VerifyConfig",
    "VerifyMode",
    "accept_count",
    "cloud_verify",
    "draft_token",
    "draw_candidates",
    "edge_correction",
    "take_candidate",
    "top_k_entries",
]
