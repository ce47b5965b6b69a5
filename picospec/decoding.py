"""The two halves of speculative decoding over ModelRunners, and in-process reference loops.

Drafter is the edge's lifecycle (begin, draft, commit); TargetVerifier is the cloud's (begin,
verify, receive the edge's correction). The networked edge and cloud wrap these same objects, so
the in-process loops here are the reference that the distributed system must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from picospec.errors import InvalidInputError, ProtocolError
from picospec.runners.base import ModelRunner
from picospec.sampling import SamplingParams, confidence, logits_to_probs, round_distributions
from picospec.verify import (
    Candidates,
    Verdict,
    VerifyConfig,
    VerifyMode,
    cloud_verify,
    draft_token,
    draw_candidates,
    edge_correction,
    shadow_pass_chance,
    take_candidate,
)


@dataclass(frozen=True)
class DraftChunk:
    """n draft tokens at absolute positions start .. start+n-1, drafted in one epoch."""

    epoch: int
    start: int
    tokens: np.ndarray  # (n,) int64
    draft_probs: np.ndarray  # (n, V) float64, the distributions the tokens were drafted from
    confidences: np.ndarray  # (n,) float64, the drafter's own probability of each token (sampling.confidence)
    looked_up: np.ndarray | None = None  # (n,) bool: proposed by prompt lookup (None: none was)

    @property
    def from_lookup(self) -> np.ndarray:
        """Which tokens prompt lookup proposed, shape (n,) bool (their draft_probs rows are one-hot)."""
        return np.zeros(self.tokens.size, dtype=bool) if self.looked_up is None else self.looked_up

    @property
    def token_probs(self) -> np.ndarray:
        """Each draft token's own draft probability, shape (n,): what separate rejection sampling uplinks."""
        return self.draft_probs[np.arange(self.tokens.size), self.tokens]

    def __len__(self) -> int:
        return int(self.tokens.size)

    @staticmethod
    def concat(chunks: Sequence["DraftChunk"]) -> "DraftChunk":
        """One chunk from consecutive chunks of the same epoch."""
        first = chunks[0]
        return DraftChunk(
            first.epoch,
            first.start,
            np.concatenate([c.tokens for c in chunks]),
            np.concatenate([c.draft_probs for c in chunks]),
            np.concatenate([c.confidences for c in chunks]),
            np.concatenate([c.from_lookup for c in chunks]),
        )


class Drafter:
    """The edge's model: drafts ahead of the verified context and rolls back on a rejection."""

    def __init__(self, runner: ModelRunner, params: SamplingParams, config: VerifyConfig, rng: np.random.Generator):
        self.runner, self.params, self.config, self.rng = runner, params, config, rng
        self.committed = 0  # tokens verified by the cloud (prompt included)
        self.epoch = 0
        self._next_logits: np.ndarray | None = None  # (V,) logits at position runner.n_tokens

    def begin(self, prompt: Sequence[int]) -> None:
        """Start a generation after `prompt` (at least one token)."""
        if len(prompt) == 0:
            raise InvalidInputError("the prompt must hold at least one token")
        self.runner.rollback(0)
        self._next_logits = self.runner.prefill(prompt)
        self.committed, self.epoch = len(prompt), 0

    @property
    def drafted_until(self) -> int:
        """Position after the last drafted (possibly unverified) token."""
        return self.runner.n_tokens

    def draft(self, n: int) -> DraftChunk:
        """Draft n more tokens after everything drafted so far."""
        start = self.drafted_until
        tokens = np.empty(n, dtype=np.int64)
        rows = np.empty((n, self.runner.n_vocab))  # (n, V)
        confidences = np.empty(n)  # (n,)
        for i in range(n):
            rows[i] = self._draft_distribution()
            tokens[i] = draft_token(rows[i], self.config.mode, self.config.seed, start + i, self.rng)
            confidences[i] = confidence(self._next_logits, int(tokens[i]))
            self._next_logits = self.runner.extend([int(tokens[i])])[0]
        return DraftChunk(self.epoch, start, tokens, rows, confidences)

    def absorb(self, tokens: Sequence[int], keep: Callable[[float, float, bool], bool]) -> DraftChunk | None:
        """Draft given tokens (prompt lookup's), evaluated in one pass; None when none is kept.

        Each gets a one-hot draft_probs row: a proposal fixed before verification is a valid draft
        distribution, so rejection sampling stays exact (a rejected token's residual is the target
        row without it), and gumbel mode's verdict is the target's own choice whatever is proposed.
        Its confidence is the drafter's own probability of it. keep(confidence, top confidence,
        the drafter's top token agrees) decides, token by token, whether the drafter should rather
        draft from here itself; the first refused token and those after it are rolled back.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        start, before = self.drafted_until, self._next_logits
        if tokens.size == 0 or not self._keeps(before, int(tokens[0]), keep):
            return None  # refused before any pass: the drafter drafts here itself
        rows = self.runner.extend(tokens.tolist())  # (n, V): row i follows tokens[i]
        kept = next((i for i in range(1, tokens.size) if not self._keeps(rows[i - 1], int(tokens[i]), keep)), tokens.size)
        if kept < tokens.size:
            self.runner.rollback(start + kept)
        self._next_logits = rows[kept - 1]
        confidences = np.array([confidence(before if i == 0 else rows[i - 1], int(tokens[i])) for i in range(kept)])
        one_hot = np.zeros((kept, self.runner.n_vocab))  # (kept, V)
        one_hot[np.arange(kept), tokens[:kept]] = 1.0
        return DraftChunk(self.epoch, start, tokens[:kept], one_hot, confidences, np.ones(kept, dtype=bool))

    @staticmethod
    def _keeps(logits: np.ndarray, token: int, keep: Callable[[float, float, bool], bool]) -> bool:
        top = int(np.argmax(logits))
        return keep(confidence(logits, token), confidence(logits, top), top == token)

    def follow(self, tokens: Sequence[int], target_token_probs: Sequence[float | None] = ()) -> list[tuple[float, float]]:
        """Commit tokens the cloud decoded itself, in one pass (nothing may be drafted beyond the
        verified context); target_token_probs (one per token, or none) are their probabilities
        under the target's sampling distribution, None where the cloud did not send one.

        Returns, per token, how the drafter would have fared there: its confidence in its most
        likely token, and the chance that its draft would have passed (verify.shadow_pass_chance;
        in gumbel mode the target's probabilities are not the accept test's and are not used).
        """
        if self.drafted_until != self.committed:
            raise ProtocolError("the cloud decoded tokens while drafts were outstanding")
        if target_token_probs and len(target_token_probs) != len(tokens):
            raise InvalidInputError(f"{len(target_token_probs)} target probabilities for {len(tokens)} tokens")
        priced = bool(target_token_probs) and self.config.mode is not VerifyMode.GUMBEL
        rows = self.runner.extend([int(t) for t in tokens])  # (n, V): row i follows tokens[i]
        shadow = []
        for i, token in enumerate(tokens):
            row = self._draft_distribution()  # (V,) at the position of tokens[i]
            top = int(np.argmax(self._next_logits))
            passed = shadow_pass_chance(float(row[token]), target_token_probs[i] if priced else None)
            shadow.append((confidence(self._next_logits, top), passed))
            self._next_logits = rows[i]
            self.committed += 1
        return shadow

    def _draft_distribution(self) -> np.ndarray:
        probs = logits_to_probs(self._next_logits, self.params)  # (V,)
        # Full mode ships float16 rows: draft from exactly what the cloud will see.
        return round_distributions(probs)[0] if self.config.mode is VerifyMode.FULL else probs

    def commit(self, chunk: DraftChunk, accepted: int, token: int | None) -> bool:
        """Apply a verdict on `chunk`; return True if the drafted continuation was thrown away.

        token is the correction or bonus now committed after the accepted drafts, or None when the
        whole chunk passed and drafting simply continues.
        """
        if token is None:
            self.committed = chunk.start + len(chunk)
            return False
        self.runner.rollback(chunk.start + accepted)
        self._next_logits = self.runner.extend([token])[0]
        self.committed = chunk.start + accepted + 1
        if accepted < len(chunk):
            self.epoch += 1
        return True


class TargetVerifier:
    """The cloud's model for one session: verifies chunks, keeping its KV cache on the verified prefix."""

    def __init__(self, runner: ModelRunner, params: SamplingParams, config: VerifyConfig, rng: np.random.Generator):
        self.runner, self.params, self.config, self.rng = runner, params, config, rng
        self.epoch = 0
        self.passes = 0  # target forward passes (the cost the benchmark counts)
        self._kept_logits: np.ndarray | None = None  # (V,) at position n_tokens, when known
        self._pending: list[int] = []  # committed tokens not yet evaluated (a correction or bonus)
        self._rejected: tuple[np.ndarray, int] | None = None  # (target row, draft token) awaiting the edge

    def begin(self, prompt: Sequence[int], committed: Sequence[int] = ()) -> None:
        """Evaluate the prompt, then the tokens a resumed generation already committed after it;
        the last row is kept for the first chunk.

        The committed tokens are evaluated as a continuation (extend), as the uninterrupted run
        evaluated them, not within the prompt pass: in the deterministic configuration their
        logits, and so everything after them, are then bitwise those of the uninterrupted run.
        """
        if len(prompt) == 0:
            raise InvalidInputError("the prompt must hold at least one token")
        self.runner.rollback(0)
        self._kept_logits = self.runner.prefill(prompt)
        self.passes = 1
        if committed:
            self._kept_logits = self.runner.extend([int(t) for t in committed])[-1]
            self.passes += 1
        self._pending, self._rejected, self.epoch = [], None, 0

    @property
    def committed(self) -> int:
        """Tokens verified so far: what the next chunk must start at."""
        return self.runner.n_tokens + len(self._pending)

    @property
    def awaiting_correction(self) -> bool:
        """True after a rejection whose correction the edge samples (topk, exact)."""
        return self._rejected is not None

    def verify(
        self,
        start: int,
        tokens: np.ndarray,
        *,
        token_probs: np.ndarray | None = None,
        draft_probs: np.ndarray | None = None,
        bonus: bool = False,
    ) -> Verdict:
        """Verify draft tokens at positions start..; roll the cache back to what was accepted."""
        if self.awaiting_correction:
            raise ProtocolError("the correction of the last rejection has not arrived")
        if start != self.committed:
            raise ProtocolError(f"chunk starts at position {start}, the verified context ends at {self.committed}")
        logits = self._target_logits(tokens)  # (n+1, V)
        target_probs = logits_to_probs(logits, self.params)  # (n+1, V)
        verdict = cloud_verify(
            self.config, tokens, target_probs, start, self.rng,
            draft_token_probs=token_probs, draft_probs=draft_probs, bonus=bonus,
        )  # fmt: skip
        self._settle(start, tokens, logits[-1], target_probs[verdict.accepted], verdict)
        return verdict

    def _target_logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits rows (n+1, V) at the chunk's positions and the one after it."""
        new_rows = self.runner.extend(self._pending + [int(t) for t in tokens])
        self.passes += 1
        if self._pending:
            self._pending = []
            return new_rows
        return np.concatenate([self._kept_logits[None, :], new_rows])

    def _settle(self, start: int, tokens: np.ndarray, last_logits: np.ndarray, row: np.ndarray, verdict: Verdict) -> None:
        """Leave the cache on the verified prefix; remember what the next chunk starts from."""
        if verdict.accepted == len(tokens) and verdict.token is None:
            self._kept_logits = last_logits  # the next chunk's first token needs no recomputation
            return
        self.runner.rollback(start + verdict.accepted)
        self._kept_logits = None
        if verdict.rejected:
            self.epoch += 1
        if verdict.needs_edge_sampling:
            self._rejected = (row, int(tokens[verdict.accepted]))
        else:
            self._pending = [verdict.token]

    def decode(self) -> int:
        """Sample the next token as target-only decoding would (Gumbel-argmax in gumbel mode) and
        commit it; the first one after the prompt needs no pass (the prompt pass's row is kept)."""
        return self.decode_scored()[0]

    def decode_scored(self) -> tuple[int, float]:
        """decode(), and the token's probability under the sampling settings (its target_probs
        entry: what a draft of it would have been judged against)."""
        if self.awaiting_correction:
            raise ProtocolError("the correction of the last rejection has not arrived")
        if self._kept_logits is None:
            self._kept_logits = self.runner.extend(self._pending)[-1]
            self._pending = []
            self.passes += 1
        position = self.committed
        probs = logits_to_probs(self._kept_logits, self.params)  # (V,)
        token = draft_token(probs, self.config.mode, self.config.seed, position, self.rng)
        self._kept_logits, self._pending = None, [token]
        return token, float(probs[token])

    def more_candidates(self) -> Candidates:
        """A fresh batch of exact-mode candidates for the rejection still awaiting its correction."""
        if self._rejected is None or self.config.mode is not VerifyMode.EXACT:
            raise ProtocolError("no exact-mode rejection is awaiting more candidates")
        row, rejected_token = self._rejected
        return draw_candidates(row, rejected_token, self.config.n_candidates, self.rng)

    def receive_correction(self, token: int) -> None:
        """Commit the correction the edge sampled from the material of the last rejection."""
        if self._rejected is None:
            raise ProtocolError("a correction arrived, but no rejection is awaiting one")
        if not 0 <= token < self.runner.n_vocab:
            raise ProtocolError(f"correction token {token} is outside the vocabulary")
        self._rejected, self._pending = None, [int(token)]


# ---------------------------------------------------------------------------------------------
# In-process reference loops (no network): what the distributed edge and cloud must reproduce.


@dataclass
class Generation:
    """New tokens of one generation and how they came about."""

    token_ids: list[int] = field(default_factory=list)
    accepted_lengths: list[int] = field(default_factory=list)  # per round
    target_passes: int = 0
    drafted: int = 0

    @property
    def rounds(self) -> int:
        return len(self.accepted_lengths)

    @property
    def mean_accepted(self) -> float:
        return float(np.mean(self.accepted_lengths)) if self.accepted_lengths else 0.0


def resolve_correction(
    verdict: Verdict, chunk: DraftChunk, rng: np.random.Generator, more_candidates: Callable[[], Candidates]
) -> int:
    """The token the edge commits after a verdict with a correction or bonus.

    In exact mode, when every candidate is refused, `more_candidates` fetches the next batch
    (from the in-process verifier, or from the cloud over the network).
    """
    draft_row = chunk.draft_probs[verdict.accepted] if verdict.rejected else None  # (V,)
    token = edge_correction(verdict, draft_row, rng)
    while token is None:
        token = take_candidate(more_candidates(), draft_row, rng)
    return token


def generate_speculative(
    drafter: Drafter,
    verifier: TargetVerifier,
    prompt: Sequence[int],
    max_new_tokens: int,
    draft_len: int = 4,
    stop_ids: Sequence[int] = (),
) -> Generation:
    """Stop-and-wait speculative decoding with a bonus token per fully accepted chunk."""
    drafter.begin(prompt)
    verifier.begin(prompt)
    result = Generation()
    while len(result.token_ids) < max_new_tokens and not _stopped(result.token_ids, stop_ids):
        chunk = drafter.draft(draft_len)
        verdict = verifier.verify(
            chunk.start, chunk.tokens, token_probs=chunk.token_probs, draft_probs=chunk.draft_probs, bonus=True
        ).as_sent(drafter.config.sparse_format)
        token = resolve_correction(verdict, chunk, drafter.rng, lambda: verifier.more_candidates().as_sent())
        if verdict.needs_edge_sampling:
            verifier.receive_correction(token)
        drafter.commit(chunk, verdict.accepted, token)
        result.token_ids += [int(t) for t in chunk.tokens[: verdict.accepted]] + [token]
        result.accepted_lengths.append(verdict.accepted)
        result.drafted += len(chunk)
    result.target_passes = verifier.passes
    result.token_ids = _truncate(result.token_ids, max_new_tokens, stop_ids)
    return result


def autoregressive_tokens(
    runner: ModelRunner,
    prompt: Sequence[int],
    params: SamplingParams,
    config: VerifyConfig,
    rng: np.random.Generator,
) -> Iterator[int]:
    """One model alone, token by token, sampling as a drafter would (Gumbel-argmax in gumbel mode):
    TargetVerifier.decode, the very step the cloud runs for `ar` and when it decodes for the edge.

    Yields tokens without end; the caller stops it.
    """
    verifier = TargetVerifier(runner, params, config, rng)
    verifier.begin(prompt)
    while True:
        yield verifier.decode()


def generate_autoregressive(
    runner: ModelRunner,
    prompt: Sequence[int],
    params: SamplingParams,
    config: VerifyConfig,
    rng: np.random.Generator,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Up to max_new_tokens of autoregressive_tokens, ending after a stop token."""
    result = Generation()
    for token in autoregressive_tokens(runner, prompt, params, config, rng):
        result.token_ids.append(token)
        result.target_passes += 1
        if on_token:
            on_token(token)
        if len(result.token_ids) >= max_new_tokens or token in stop_ids:
            break
    return result


def _stopped(token_ids: list[int], stop_ids: Sequence[int]) -> bool:
    return any(t in stop_ids for t in token_ids)


def _truncate(token_ids: list[int], max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
    """Cut at max_new_tokens and just after the first stop token."""
    token_ids = token_ids[:max_new_tokens]
    for i, token in enumerate(token_ids):
        if token in stop_ids:
            return token_ids[: i + 1]
    return token_ids
