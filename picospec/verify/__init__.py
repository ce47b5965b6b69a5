"""Verification algorithms (pure functions, no I/O): full, topk, exact and gumbel."""

from picospec.verify.algorithms import (
    VerifyConfig,
    accept_count,
    cloud_verify,
    draft_token,
    draw_candidates,
    edge_correction,
    shadow_pass_chance,
    take_candidate,
    top_k_entries,
)
from picospec.sampling import ProbFormat
from picospec.verify.material import CANDIDATE_FORMAT, Candidates, SparseDist, Verdict, VerifyMode

__all__ = [
    "CANDIDATE_FORMAT",
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
    "shadow_pass_chance",
    "take_candidate",
    "top_k_entries",
]
