"""Fuzzing the cloud: hostile frames against a running cloud beside healthy sessions, and property
tests of every parser of the wire protocol. `make soak` runs the large version (10,000 frames)."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from picospec.edge.client import generate
from picospec.edge.config import EdgeConfig, Method
from picospec.costmodel import MAX_PASS_TOKENS
from picospec.errors import ProtocolError
from picospec.sampling import SamplingParams
from picospec.verify import VerifyConfig, VerifyMode
from picospec.wire import picospec_pb2 as pb
from picospec.wire.messages import (
    PROTOCOL_VERSION,
    SessionSpec,
    chunk_message,
    hello_message,
    parse_chunk,
    parse_decode,
    parse_hello,
    parse_tokens,
    parse_verdict,
    parse_welcome,
)
from fuzz import run_fuzz
from test_edge import PROMPT, V, reference, toy_drafter, toy_target
from clouds import cloud_thread

FUZZ_FRAMES = int(os.environ.get("PICOSPEC_FUZZ_FRAMES", "400"))  # `make soak` sets 10,000
HEALTHY = EdgeConfig(method=Method.PICOSPEC, params=SamplingParams(temperature=0), verify=VerifyConfig(mode="exact"),
                     max_new_tokens=20, controller=None)  # fmt: skip


def valid_messages() -> tuple[pb.EdgeMessage, pb.EdgeMessage]:
    vocab = toy_target().vocab_info()
    spec = SessionSpec(PROMPT, SamplingParams(temperature=1.0), VerifyConfig(mode="exact", seed=1),
                       vocab_fingerprint=vocab.fingerprint, n_vocab=vocab.n_vocab)  # fmt: skip
    chunk = chunk_message(VerifyMode.EXACT, 0, len(PROMPT), np.array([1, 2]), np.full((2, V), 0.2), None)
    return hello_message(spec), chunk


def test_hostile_frames_get_clear_statuses_while_healthy_sessions_finish_exactly():
    expected = reference(HEALTHY.params, HEALTHY.verify, HEALTHY.max_new_tokens)

    def healthy() -> str | None:
        try:
            tokens = generate(f"127.0.0.1:{cloud.port}", toy_drafter(noise=1.5), PROMPT, HEALTHY).token_ids
        except Exception as exc:  # a lost healthy session is what this test looks for
            return repr(exc)
        return None if tokens == expected else f"wrong tokens {tokens}"

    with cloud_thread(toy_target, max_sessions=4, max_context=64, max_message_bytes=64 * 1024) as cloud:
        result = run_fuzz(cloud.port, FUZZ_FRAMES, seed=0, valid_hello=valid_messages()[0], valid_chunk=valid_messages()[1],
                          healthy=healthy)  # fmt: skip
        assert healthy() is None  # still serving
    print(f"fuzz: {result.frames} frames in {result.seconds:.1f} s, statuses {result.statuses}, "
          f"{result.healthy_sessions} healthy sessions, {len(result.healthy_failures)} lost")  # fmt: skip
    assert result.frames == FUZZ_FRAMES and not result.unclear, result.unclear[:5]
    assert result.healthy_sessions >= 1 and not result.healthy_failures, result.healthy_failures[:3]
    assert result.statuses.get("INVALID_ARGUMENT", 0) > FUZZ_FRAMES / 2  # most frames really were bad


# -------------------------------------------------------------------------------------------------
# Property tests: every parser returns a valid value or raises ProtocolError, whatever it is given

u32 = st.integers(0, 2**32 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
blobs = st.binary(max_size=64)
N_VOCAB, MAX_TOKENS = 5, 16


def _ids_ok(tokens) -> bool:
    return all(0 <= t < N_VOCAB for t in np.asarray(tokens).tolist())


@given(st.builds(pb.Hello, protocol_version=st.one_of(st.just(3), u32), vocab_fingerprint=st.text(max_size=8), n_vocab=u32,
                 sampling=st.builds(pb.Sampling, temperature=floats, top_k=u32, top_p=floats),
                 verify=st.builds(pb.VerifySettings, mode=st.sampled_from(["full", "topk", "exact", "gumbel", "", "?"]),
                                  topk=u32, n_candidates=u32, seed=st.integers(0, 2**64 - 1),
                                  sparse_format=st.sampled_from(["f32", "f16", "q8", "", "x"])),
                 prompt_tokens=blobs, method=st.integers(0, 3), max_new_tokens=u32, bonus=st.booleans(), resumed=u32,
                 committed_tokens=st.one_of(st.integers(0, 20), u32)))  # fmt: skip
def test_parse_hello_accepts_only_sane_sessions(hello):
    try:
        spec = parse_hello(hello, N_VOCAB)
    except ProtocolError:
        return
    assert spec.prompt and _ids_ok(spec.prompt) and spec.original_prompt and 0 <= spec.committed < len(spec.prompt)
    assert spec.params.temperature >= 0 and 0 < spec.params.top_p <= 1


@given(st.sampled_from(list(VerifyMode)), st.builds(pb.DraftChunk, epoch=u32, start=u32, tokens=blobs, token_probs=blobs,
                                                     draft_probs=blobs, correction=st.one_of(st.none(), u32)))  # fmt: skip
def test_parse_chunk_accepts_only_sane_chunks(mode, chunk):
    try:
        request = parse_chunk(chunk, mode, N_VOCAB, MAX_TOKENS)
    except ProtocolError:
        return
    assert 1 <= request.tokens.size <= MAX_TOKENS and _ids_ok(request.tokens)
    assert request.correction is None or request.correction < N_VOCAB
    if request.token_probs is not None:
        assert np.all((request.token_probs > 0) & (request.token_probs <= 1))
    if request.draft_probs is not None:
        assert np.all(request.draft_probs >= 0) and np.allclose(request.draft_probs.sum(axis=1), 1, atol=1e-2)


@given(st.builds(pb.Decode, epoch=u32, start=u32, count=u32, correction=st.one_of(st.none(), u32)))
def test_parse_decode_accepts_only_sane_requests(decode):
    try:
        request = parse_decode(decode, N_VOCAB, MAX_TOKENS)
    except ProtocolError:
        return
    assert 1 <= request.count <= MAX_TOKENS and (request.correction is None or request.correction < N_VOCAB)


@given(st.builds(pb.Verdict, epoch=u32, start=u32, accepted=u32, rejected=st.booleans(), token=st.one_of(st.none(), u32),
                 sparse=blobs, candidates=blobs, verify_s=floats, cloud_passes=u32, prefill_s=floats, shared_tokens=u32))  # fmt: skip
def test_parse_verdict_accepts_only_sane_verdicts(verdict):
    try:
        report = parse_verdict(verdict, N_VOCAB)
    except ProtocolError:
        return
    v = report.verdict
    assert v.token is None or v.token < N_VOCAB
    assert report.shared_tokens <= MAX_PASS_TOKENS
    if v.rejected:
        assert (v.token is not None) + (v.sparse is not None) + (v.candidates is not None) == 1


@given(st.builds(pb.Welcome, protocol_version=st.one_of(st.just(PROTOCOL_VERSION), u32), model=st.text(max_size=8), max_context=u32,
                 costs=st.builds(pb.CostCurve, verify_s=st.lists(floats, max_size=6), decode_s=floats),
                 max_chunk_tokens=u32))  # fmt: skip
def test_parse_welcome_accepts_only_usable_limits_and_costs(welcome):
    try:
        info = parse_welcome(welcome)
    except ProtocolError:
        return
    assert info.max_context >= 1 and info.max_chunk_tokens >= 1
    assert all(np.isfinite(info.costs.verify_s)) and np.isfinite(info.costs.decode_s)


@given(st.builds(pb.Tokens, tokens=blobs, compute_s=floats, start=u32, cloud_passes=u32, prefill_s=floats, shared_tokens=u32,
                 token_probs=st.lists(floats, max_size=4)))  # fmt: skip
def test_parse_tokens_accepts_only_tokens_in_the_vocabulary_with_sane_probabilities(tokens):
    try:
        report = parse_tokens(tokens, N_VOCAB)
    except ProtocolError:
        return
    assert report.tokens and _ids_ok(report.tokens) and report.shared_tokens <= MAX_PASS_TOKENS
    assert not report.token_probs or (len(report.token_probs) == len(report.tokens) and all(0 < p <= 1 for p in report.token_probs))
