import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picospec.errors import ProtocolError
from picospec.sampling import round_distributions, round_probs
from picospec.verify import Candidates, ProbFormat, SparseDist
from picospec.wire import codec

N_VOCAB = 151_936


def test_tokens_round_trip_and_cost_four_bytes_each():
    tokens = np.array([0, 5, N_VOCAB - 1])
    data = codec.encode_tokens(tokens)
    assert len(data) == 12
    np.testing.assert_array_equal(codec.decode_tokens(data, N_VOCAB), tokens)


@pytest.mark.parametrize("fmt, width, extra, tol", [("f32", 4, 0, 1e-7), ("f16", 2, 0, 1e-3), ("q8", 1, 4, 1 / 255)])
def test_sparse_round_trip_byte_size_and_precision(fmt, width, extra, tol):
    sparse = SparseDist(indices=np.array([7, 3, 150_000]), probs=np.array([0.6, 0.25, 0.1]))
    data = codec.encode_sparse(sparse, ProbFormat(fmt))
    assert len(data) == 3 + 3 * 4 + 3 * width + extra  # header, ids, probabilities (+ q8 scale)
    back = codec.decode_sparse(data, N_VOCAB)
    np.testing.assert_array_equal(back.indices, sparse.indices)
    np.testing.assert_allclose(back.probs, sparse.probs, atol=tol)
    assert back.tail_mass == pytest.approx(0.05, abs=3 * tol)


def test_candidates_round_trip():
    candidates = Candidates(tokens=np.array([4, 4, 9]), probs=np.array([0.5, 0.5, 0.01]))
    data = codec.encode_candidates(candidates)
    assert len(data) == 3 + 3 * 4 + 3 * 4
    back = codec.decode_candidates(data, N_VOCAB)
    np.testing.assert_array_equal(back.tokens, candidates.tokens)
    np.testing.assert_allclose(back.probs, candidates.probs, rtol=1e-7)


def test_draft_probs_as_sent_is_a_fixed_point():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.full(50, 0.1), size=3)  # (3, 50)
    sent = round_distributions(rows)
    data = codec.encode_draft_probs(rows)
    assert len(data) == 3 * 50 * 2
    np.testing.assert_array_equal(codec.decode_draft_probs(data, 3, 50), sent)
    np.testing.assert_allclose(sent.sum(axis=1), 1)
    np.testing.assert_allclose(sent, rows, atol=1e-3)
    np.testing.assert_array_equal(round_distributions(sent), sent)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0, 1, allow_subnormal=False), max_size=40),
    st.sampled_from(list(ProbFormat)),
)
def test_round_probs_is_exactly_what_the_codec_delivers(values, fmt):
    """The maths rounds with sampling.round_probs; the wire must deliver those very numbers."""
    probs = np.array(values, dtype=np.float64)
    delivered = codec.decode_probs(codec.encode_probs(probs, fmt), fmt, probs.size)
    np.testing.assert_array_equal(round_probs(probs, fmt), delivered)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_material_never_crashes_the_decoders(data):
    for decode in (codec.decode_sparse, codec.decode_candidates):
        try:
            decode(data, N_VOCAB)
        except ProtocolError:
            pass


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01", "shorter than its header"),
        (b"\x01\x00\x07", "unknown probability format"),
        (b"\x01\x00\x00" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x00", "outside the vocabulary"),
        (b"\x02\x00\x00" + b"\x01\x00\x00\x00" * 2 + b"\x00" * 8, "distinct"),
        (b"\x01\x00\x00" + b"\x01\x00\x00\x00" + b"\x00\x00\xc0\x7f", "lie in"),  # NaN
        (b"\x01\x00\x00" + b"\x01\x00\x00\x00" + b"\x00\x00", "need 4 bytes"),
    ],
)
def test_malformed_sparse_material_is_refused(data, message):
    with pytest.raises(ProtocolError, match=message):
        codec.decode_sparse(data, N_VOCAB)


def test_candidates_with_zero_probability_are_refused():
    data = codec.encode_candidates(Candidates(tokens=np.array([1]), probs=np.array([0.0])))
    with pytest.raises(ProtocolError, match="positive"):
        codec.decode_candidates(data, N_VOCAB)


def test_token_bytes_must_be_whole_ids():
    with pytest.raises(ProtocolError, match="multiple of 4"):
        codec.decode_tokens(b"\x00\x01\x02", N_VOCAB)
