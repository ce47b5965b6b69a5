"""Conversion between protocol messages and PicoSpec's own types, with validation of every field.

Parsers raise ProtocolError with a message that says which field is wrong; they never trust a
length, an id or a probability that came off the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from picospec.costmodel import MAX_PASS_TOKENS, CostCurve
from picospec.errors import InvalidInputError, ProtocolError
from picospec.sampling import SamplingParams
from picospec.verify import Candidates, ProbFormat, Verdict, VerifyConfig, VerifyMode
from picospec.wire import codec
from picospec.wire import picospec_pb2 as pb

PROTOCOL_VERSION = 3

# Full mode uplinks a float16 row of 151,936 entries per draft token (about 300 KB): a chunk of
# 64 tokens is about 19.5 MB, so 64 MiB leaves room without letting one message exhaust memory.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Random streams derived from the session seed: the edge's drafter draws from (seed,
# DRAFTER_STREAM), the cloud's sampler from (seed), or (seed, RESUMED_STREAM, n) in the n-th
# resumed session. They must never coincide: a cloud stream equal to the drafter's would correlate
# the accept tests with the drafts (tests/test_faults.py caught exactly that).
DRAFTER_STREAM = 1
RESUMED_STREAM = 2


@dataclass(frozen=True)
class SessionSpec:
    """What an edge asks for in its Hello."""

    prompt: list[int]
    params: SamplingParams
    verify: VerifyConfig
    autoregressive: bool = False
    max_new_tokens: int = 0
    bonus: bool = False
    vocab_fingerprint: str = ""
    n_vocab: int = 0
    resumed: int = 0  # 0 for a new generation, n for its n-th resumed session
    committed: int = 0  # the last `committed` prompt tokens were generated before this (resumed) session

    @property
    def original_prompt(self) -> list[int]:
        """The prompt the generation started from."""
        return self.prompt[: len(self.prompt) - self.committed]

    @property
    def committed_tokens(self) -> list[int]:
        """What earlier sessions of this generation committed (empty for a new generation)."""
        return self.prompt[len(self.prompt) - self.committed :]

    def sampler_rng(self) -> np.random.Generator:
        """The cloud's random stream for this session: (seed) for a new generation, (seed,
        RESUMED_STREAM, n) for its n-th resumption, so draws that decided committed tokens are
        never reused, and no stream is the edge's drafter's."""
        seed = self.verify.seed
        return np.random.default_rng(seed if self.resumed == 0 else [seed, RESUMED_STREAM, self.resumed])


@dataclass(frozen=True)
class ChunkRequest:
    """A draft chunk as the cloud received it."""

    epoch: int
    start: int  # position of tokens[0]; the correction, if any, sits at start - 1
    tokens: np.ndarray  # (n,) int64
    token_probs: np.ndarray | None  # (n,) float64
    draft_probs: np.ndarray | None  # (n, V) float64
    correction: int | None


@dataclass(frozen=True)
class WelcomeInfo:
    """What the cloud tells an edge when it accepts a session."""

    model: str
    max_context: int
    max_chunk_tokens: int
    costs: CostCurve


@dataclass(frozen=True)
class DecodeRequest:
    """A Decode message as the cloud received it."""

    epoch: int
    start: int
    count: int
    correction: int | None


@dataclass(frozen=True)
class TokensReport:
    """Tokens the cloud decoded itself, as the edge received them."""

    start: int
    tokens: list[int]
    compute_s: float
    cloud_passes: int
    prefill_s: float = 0.0
    shared_tokens: int = 0  # other sessions' tokens in the passes that decoded these
    token_probs: tuple[float, ...] = ()  # (n,) each token's probability under the sampling settings, or ()


@dataclass(frozen=True)
class VerdictReport:
    """A verdict as the edge received it, with the cloud's bookkeeping."""

    epoch: int
    start: int
    verdict: Verdict
    verify_s: float
    cloud_passes: int
    prefill_s: float = 0.0  # the cloud's prompt pass, reported with the first verdict
    shared_tokens: int = 0  # other sessions' tokens in the pass that verified the chunk


def reject_unknown_fields(message: Message) -> None:
    """Refuse fields this version does not know: a newer edge must not be half-understood."""
    if len(unknown_fields.UnknownFieldSet(message)):
        raise ProtocolError(
            f"{type(message).__name__} carries fields unknown to protocol version {PROTOCOL_VERSION} (a newer peer?)"
        )
    for field, value in message.ListFields():
        if field.message_type is not None and not field.is_repeated:
            reject_unknown_fields(value)


# ---------------------------------------------------------------------------------------------
# Hello


def hello_message(spec: SessionSpec) -> pb.EdgeMessage:
    """The opening message of a session."""
    verify = spec.verify
    return pb.EdgeMessage(
        hello=pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            vocab_fingerprint=spec.vocab_fingerprint,
            n_vocab=spec.n_vocab,
            sampling=pb.Sampling(temperature=spec.params.temperature, top_k=spec.params.top_k, top_p=spec.params.top_p),
            verify=pb.VerifySettings(
                mode=verify.mode.value,
                topk=verify.topk,
                n_candidates=verify.n_candidates,
                seed=verify.seed,
                sparse_format=verify.sparse_format.value,
            ),
            prompt_tokens=codec.encode_tokens(np.asarray(spec.prompt)),
            method=pb.AUTOREGRESSIVE if spec.autoregressive else pb.SPECULATIVE,
            max_new_tokens=spec.max_new_tokens,
            bonus=spec.bonus,
            resumed=spec.resumed,
            committed_tokens=spec.committed,
        )
    )


def parse_hello(hello: pb.Hello, n_vocab: int) -> SessionSpec:
    """Validate a Hello against the cloud's vocabulary size; return the session it asks for."""
    if hello.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {hello.protocol_version} is not supported (this cloud speaks {PROTOCOL_VERSION})")
    if hello.method == pb.METHOD_UNSPECIFIED:
        raise ProtocolError("hello.method is missing")
    prompt = codec.decode_tokens(hello.prompt_tokens, n_vocab).tolist()
    if not prompt:
        raise ProtocolError("hello.prompt_tokens is empty")
    if hello.committed_tokens >= len(prompt):
        raise ProtocolError(
            f"hello.committed_tokens ({hello.committed_tokens}) must leave at least one token of the {len(prompt)}-token prompt"
        )
    try:
        params = SamplingParams(hello.sampling.temperature, hello.sampling.top_k, hello.sampling.top_p)
        settings = hello.verify
        verify = VerifyConfig(
            mode=VerifyMode(settings.mode),
            topk=settings.topk,
            n_candidates=settings.n_candidates,
            seed=settings.seed,
            sparse_format=ProbFormat(settings.sparse_format or "f16"),
        )
    except (InvalidInputError, ValueError) as exc:
        raise ProtocolError(f"bad sampling or verify settings: {exc}") from None
    return SessionSpec(
        prompt=prompt,
        params=params,
        verify=verify,
        autoregressive=hello.method == pb.AUTOREGRESSIVE,
        max_new_tokens=hello.max_new_tokens,
        bonus=hello.bonus,
        vocab_fingerprint=hello.vocab_fingerprint,
        n_vocab=hello.n_vocab,
        resumed=hello.resumed,
        committed=hello.committed_tokens,
    )


# ---------------------------------------------------------------------------------------------
# Welcome


def welcome_message(model: str, max_context: int, max_chunk_tokens: int, costs: CostCurve) -> pb.CloudMessage:
    """The cloud's answer to an accepted hello: its model, limits and cost curve."""
    curve = pb.CostCurve(verify_s=list(costs.verify_s), decode_s=costs.decode_s)
    welcome = pb.Welcome(
        protocol_version=PROTOCOL_VERSION, model=model, max_context=max_context, max_chunk_tokens=max_chunk_tokens, costs=curve
    )
    return pb.CloudMessage(welcome=welcome)


def parse_welcome(welcome: pb.Welcome) -> WelcomeInfo:
    """Validate a welcome; a cost curve that makes no sense is refused with a clear error."""
    if welcome.protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(f"the cloud speaks protocol version {welcome.protocol_version}, this edge {PROTOCOL_VERSION}")
    if welcome.max_context < 1 or welcome.max_chunk_tokens < 1:
        raise ProtocolError("the welcome's max_context and max_chunk_tokens must be >= 1")
    try:
        costs = CostCurve(tuple(welcome.costs.verify_s), welcome.costs.decode_s)
    except InvalidInputError as exc:
        raise ProtocolError(f"the cloud reported an unusable cost curve: {exc}") from None
    return WelcomeInfo(welcome.model, welcome.max_context, welcome.max_chunk_tokens, costs)


# ---------------------------------------------------------------------------------------------
# Cloud-side decoding


def decode_message(epoch: int, start: int, count: int, correction: int | None) -> pb.EdgeMessage:
    """Ask the cloud to decode `count` tokens from `start` itself."""
    message = pb.Decode(epoch=epoch, start=start, count=count)
    if correction is not None:
        message.correction = correction
    return pb.EdgeMessage(decode=message)


def parse_decode(message: pb.Decode, n_vocab: int, max_tokens: int) -> DecodeRequest:
    """Validate a Decode request's count and correction."""
    if not 1 <= message.count <= max_tokens:
        raise ProtocolError(f"a decode request asks for 1 to {max_tokens} tokens, got {message.count}")
    correction = message.correction if message.HasField("correction") else None
    if correction is not None and correction >= n_vocab:
        raise ProtocolError(f"correction token {correction} is outside the vocabulary")
    return DecodeRequest(message.epoch, message.start, message.count, correction)


def tokens_message(
    start: int,
    tokens: list[int],
    compute_s: float,
    cloud_passes: int,
    prefill_s: float = 0.0,
    shared_tokens: int = 0,
    token_probs: Sequence[float] = (),
) -> pb.CloudMessage:
    """Tokens the cloud decoded, from position `start`, with their probabilities where given."""
    body = pb.Tokens(
        tokens=codec.encode_tokens(np.asarray(tokens)), compute_s=compute_s, start=start,
        cloud_passes=cloud_passes, prefill_s=prefill_s, shared_tokens=shared_tokens, token_probs=token_probs,
    )  # fmt: skip
    return pb.CloudMessage(tokens=body)


def parse_tokens(message: pb.Tokens, n_vocab: int) -> TokensReport:
    """Validate decoded tokens (and their probabilities, when sent: one per token, each in (0, 1])."""
    tokens = codec.decode_tokens(message.tokens, n_vocab).tolist()
    if not tokens:
        raise ProtocolError("a tokens message carries no tokens")
    probs = tuple(message.token_probs)
    if probs and (len(probs) != len(tokens) or not all(0.0 < p <= 1.0 for p in probs)):
        raise ProtocolError(f"a tokens message needs one probability in (0, 1] per token, got {len(probs)} for {len(tokens)}")
    shared = _checked_shared(message.shared_tokens)
    return TokensReport(message.start, tokens, message.compute_s, message.cloud_passes, message.prefill_s, shared, probs)


def _checked_shared(shared_tokens: int) -> int:
    if shared_tokens > MAX_PASS_TOKENS:
        raise ProtocolError(f"the cloud reports a pass shared with {shared_tokens} tokens (at most {MAX_PASS_TOKENS})")
    return shared_tokens


# ---------------------------------------------------------------------------------------------
# Draft chunks


def chunk_message(
    mode: VerifyMode, epoch: int, start: int, tokens: np.ndarray, draft_probs: np.ndarray, correction: int | None
) -> pb.EdgeMessage:
    """A draft chunk carrying what `mode` needs: tokens, plus one probability each or whole rows."""
    message = pb.DraftChunk(epoch=epoch, start=start, tokens=codec.encode_tokens(tokens))
    if mode.sends_token_probs:
        message.token_probs = codec.encode_probs(draft_probs[np.arange(tokens.size), tokens], ProbFormat.F32)
    elif mode.sends_draft_probs:
        message.draft_probs = codec.encode_draft_probs(draft_probs)
    if correction is not None:
        message.correction = correction
    return pb.EdgeMessage(chunk=message)


def parse_chunk(chunk: pb.DraftChunk, mode: VerifyMode, n_vocab: int, max_tokens: int) -> ChunkRequest:
    """Validate a chunk's fields for the session's mode and vocabulary."""
    tokens = codec.decode_tokens(chunk.tokens, n_vocab)
    if not 1 <= tokens.size <= max_tokens:
        raise ProtocolError(f"a chunk holds 1 to {max_tokens} draft tokens, got {tokens.size}")
    token_probs = draft_probs = None
    if mode.sends_token_probs:
        token_probs = codec.decode_probs(chunk.token_probs, ProbFormat.F32, tokens.size)
        if np.any(token_probs <= 0):
            raise ProtocolError("draft token probabilities must be positive")
    elif chunk.token_probs:
        raise ProtocolError(f"{mode.value} mode sends no token_probs")
    if mode.sends_draft_probs:
        draft_probs = codec.decode_draft_probs(chunk.draft_probs, tokens.size, n_vocab)
    elif chunk.draft_probs:
        raise ProtocolError(f"{mode.value} mode sends no draft_probs")
    correction = chunk.correction if chunk.HasField("correction") else None
    if correction is not None and correction >= n_vocab:
        raise ProtocolError(f"correction token {correction} is outside the vocabulary")
    return ChunkRequest(chunk.epoch, chunk.start, tokens, token_probs, draft_probs, correction)


# ---------------------------------------------------------------------------------------------
# Verdicts


def verdict_message(
    epoch: int,
    start: int,
    verdict: Verdict,
    fmt: ProbFormat,
    verify_s: float,
    cloud_passes: int,
    prefill_s: float = 0.0,
    shared_tokens: int = 0,
) -> pb.CloudMessage:
    """The cloud's answer to one chunk, with its material encoded by the codec."""
    message = pb.Verdict(
        epoch=epoch,
        start=start,
        accepted=verdict.accepted,
        rejected=verdict.rejected,
        verify_s=verify_s,
        cloud_passes=cloud_passes,
        prefill_s=prefill_s,
        shared_tokens=shared_tokens,
    )
    if verdict.token is not None:
        message.token = verdict.token
    if verdict.sparse is not None:
        message.sparse = codec.encode_sparse(verdict.sparse, fmt)
    if verdict.candidates is not None:
        message.candidates = codec.encode_candidates(verdict.candidates)
    return pb.CloudMessage(verdict=message)


def parse_verdict(message: pb.Verdict, n_vocab: int) -> VerdictReport:
    """Validate a verdict; exactly one of token / material must be present after a rejection."""
    token = message.token if message.HasField("token") else None
    if token is not None and token >= n_vocab:
        raise ProtocolError(f"verdict token {token} is outside the vocabulary")
    sparse = codec.decode_sparse(message.sparse, n_vocab) if message.sparse else None
    candidates = codec.decode_candidates(message.candidates, n_vocab) if message.candidates else None
    if message.rejected and (token is not None) + (sparse is not None) + (candidates is not None) != 1:
        raise ProtocolError("a rejecting verdict needs exactly one of token, sparse or candidates")
    verdict = Verdict(message.accepted, message.rejected, token=token, sparse=sparse, candidates=candidates)
    shared = _checked_shared(message.shared_tokens)
    return VerdictReport(message.epoch, message.start, verdict, message.verify_s, message.cloud_passes, message.prefill_s, shared)


def candidates_message(epoch: int, candidates: Candidates) -> pb.CloudMessage:
    """More exact-mode candidates for the rejection that started `epoch`."""
    return pb.CloudMessage(candidates=pb.CandidateBatch(epoch=epoch, candidates=codec.encode_candidates(candidates)))
