"""Check before anything runs that a drafter can draft for a target: the same tokens under the same ids."""

from __future__ import annotations

from picospec.errors import ModelError
from picospec.runners.base import VocabInfo


def check_compatible(
    draft: VocabInfo,
    target: VocabInfo,
    draft_token_bytes: list[bytes] | None = None,
    target_token_bytes: list[bytes] | None = None,
) -> None:
    """Raise ModelError, saying what differs, unless `draft` and `target` share their vocabulary.

    VocabInfo carries only a fingerprint of the token texts; pass both token lists (id order) to
    have a mismatch report how many token texts differ and one example id. End-of-generation ids
    may differ (VocabInfo says why), as the cloud's check of a session's hello allows.
    """
    problems = []
    if draft.n_vocab != target.n_vocab:
        problems.append(f"vocabulary size {draft.n_vocab} (draft) != {target.n_vocab} (target)")
    if draft.bos_id != target.bos_id:
        problems.append(f"BOS id {draft.bos_id} (draft) != {target.bos_id} (target)")
    if not problems and draft.fingerprint != target.fingerprint:
        problems.append(_token_text_difference(draft_token_bytes, target_token_bytes))
    if problems:
        raise ModelError("the draft model cannot draft for the target: " + "; ".join(problems))


def _token_text_difference(draft_token_bytes: list[bytes] | None, target_token_bytes: list[bytes] | None) -> str:
    """Describe how the token texts differ, as precisely as the inputs allow."""
    if draft_token_bytes is None or target_token_bytes is None:
        return "token texts differ (vocabulary fingerprints do not match)"
    differing = [i for i, (a, b) in enumerate(zip(draft_token_bytes, target_token_bytes)) if a != b]
    if not differing:
        return "token texts differ (vocabulary fingerprints do not match)"
    first = differing[0]
    return (
        f"{len(differing)} token texts differ, e.g. id {first}: "
        f"{draft_token_bytes[first]!r} (draft) vs {target_token_bytes[first]!r} (target)"
    )
