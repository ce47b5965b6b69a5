"""Byte encodings of what travels between edge and cloud. Every encoder returns the exact bytes sent.

Layouts are little-endian and documented per function, so an edge in another language can follow.
Decoders validate lengths, ranges and values and raise ProtocolError on anything malformed.
"""

from __future__ import annotations

import struct
import numpy as np

from picospec.errors import ProtocolError
from picospec.sampling import ProbFormat, q8_scale
from picospec.verify.material import CANDIDATE_FORMAT, Candidates, SparseDist

_HEADER = struct.Struct("<HB")  # entry count, probability format


_FORMAT_CODES = {ProbFormat.F32: 0, ProbFormat.F16: 1, ProbFormat.Q8: 2}
_FORMAT_BY_CODE = {code: fmt for fmt, code in _FORMAT_CODES.items()}


def encode_tokens(tokens: np.ndarray) -> bytes:
    """Token ids as uint32."""
    return np.asarray(tokens, dtype="<u4").tobytes()


def decode_tokens(data: bytes, n_vocab: int) -> np.ndarray:
    """Inverse of encode_tokens; every id must be < n_vocab. Returns (n,) int64."""
    if len(data) % 4:
        raise ProtocolError(f"token bytes must be a multiple of 4, got {len(data)}")
    tokens = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if tokens.size and tokens.max() >= n_vocab:
        raise ProtocolError(f"token id {int(tokens.max())} is outside the vocabulary of {n_vocab}")
    return tokens


def encode_probs(probs: np.ndarray, fmt: ProbFormat) -> bytes:
    """Probabilities in [0, 1] as f32, f16, or q8 (a float32 scale, then round(p / scale) as uint8)."""
    probs = np.asarray(probs, dtype=np.float64)
    if fmt is ProbFormat.F32:
        return probs.astype("<f4").tobytes()
    if fmt is ProbFormat.F16:
        return probs.astype("<f2").tobytes()
    scale = q8_scale(probs)
    return struct.pack("<f", scale) + np.rint(probs / scale).astype(np.uint8).tobytes()


def decode_probs(data: bytes, fmt: ProbFormat, count: int) -> np.ndarray:
    """Inverse of encode_probs for `count` entries; checks the length and that values lie in [0, 1]."""
    width = {ProbFormat.F32: 4, ProbFormat.F16: 2, ProbFormat.Q8: 1}[fmt]
    expected = count * width + (4 if fmt is ProbFormat.Q8 else 0)
    if len(data) != expected:
        raise ProtocolError(f"{count} {fmt.value} probabilities need {expected} bytes, got {len(data)}")
    if fmt is ProbFormat.Q8:
        (scale,) = struct.unpack_from("<f", data)
        probs = np.frombuffer(data, dtype=np.uint8, offset=4).astype(np.float64) * scale
    else:
        probs = np.frombuffer(data, dtype="<f4" if fmt is ProbFormat.F32 else "<f2").astype(np.float64)
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or np.any(probs > 1 + 1e-3):
        raise ProtocolError("probabilities must lie in [0, 1]")
    return probs


def encode_sparse(sparse: SparseDist, fmt: ProbFormat = ProbFormat.F16) -> bytes:
    """Top-K material: header (uint16 K, uint8 format), K uint32 token ids, K probabilities."""
    header = _HEADER.pack(sparse.indices.size, _FORMAT_CODES[fmt])
    return header + encode_tokens(sparse.indices) + encode_probs(sparse.probs, fmt)


def decode_sparse(data: bytes, n_vocab: int) -> SparseDist:
    """Inverse of encode_sparse."""
    count, fmt = _read_header(data)
    split = _HEADER.size + 4 * count
    indices = decode_tokens(data[_HEADER.size : split], n_vocab)
    if indices.size != count or np.unique(indices).size != count:
        raise ProtocolError("top-K material must hold K distinct token ids")
    return SparseDist(indices=indices, probs=decode_probs(data[split:], fmt, count))


def encode_candidates(candidates: Candidates) -> bytes:
    """Candidate material: header (uint16 m, format f32), m uint32 token ids, m float32 target probs."""
    header = _HEADER.pack(candidates.tokens.size, _FORMAT_CODES[CANDIDATE_FORMAT])
    return header + encode_tokens(candidates.tokens) + encode_probs(candidates.probs, CANDIDATE_FORMAT)


def decode_candidates(data: bytes, n_vocab: int) -> Candidates:
    """Inverse of encode_candidates; every candidate must have a positive target probability."""
    count, fmt = _read_header(data)
    split = _HEADER.size + 4 * count
    tokens = decode_tokens(data[_HEADER.size : split], n_vocab)
    if tokens.size != count or count == 0:
        raise ProtocolError("candidate material must hold m >= 1 token ids")
    probs = decode_probs(data[split:], fmt, count)
    if np.any(probs <= 0):
        raise ProtocolError("candidates must have positive target probabilities")
    return Candidates(tokens=tokens, probs=probs)


def _read_header(data: bytes) -> tuple[int, ProbFormat]:
    if len(data) < _HEADER.size:
        raise ProtocolError("material is shorter than its header")
    count, code = _HEADER.unpack_from(data)
    if code not in _FORMAT_BY_CODE:
        raise ProtocolError(f"unknown probability format code {code}")
    return count, _FORMAT_BY_CODE[code]


def encode_draft_probs(draft_probs: np.ndarray) -> bytes:
    """Whole draft distributions (n, V) as float16, row after row (full mode's uplink)."""
    return np.asarray(draft_probs).astype("<f2").tobytes()


def decode_draft_probs(data: bytes, n_rows: int, n_vocab: int) -> np.ndarray:
    """Inverse of encode_draft_probs, renormalised. Returns (n_rows, n_vocab) float64."""
    rows = decode_probs(data, ProbFormat.F16, n_rows * n_vocab).reshape(n_rows, n_vocab)
    sums = rows.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums - 1) > 0.05):
        raise ProtocolError("each draft distribution must sum to 1")
    return rows / sums
