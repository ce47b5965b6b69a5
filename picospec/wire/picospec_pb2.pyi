from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    SPECULATIVE: _ClassVar[Method]
    AUTOREGRESSIVE: _ClassVar[Method]
METHOD_UNSPECIFIED: Method
SPECULATIVE: Method
AUTOREGRESSIVE: Method

class Sampling(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ...) -> None: ...

class VerifySettings(_message.Message):
    __slots__ = ("mode", "topk", "n_candidates", "seed", "sparse_format")
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOPK_FIELD_NUMBER: _ClassVar[int]
    N_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    mode: str
    topk: int
    n_candidates: int
    seed: int
    sparse_format: str
    def __init__(self, mode: _Optional[str] = ..., topk: _Optional[int] = ..., n_candidates: _Optional[int] = ..., seed: _Optional[int] = ..., sparse_format: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "vocab_fingerprint", "n_vocab", "sampling", "verify", "prompt_tokens", "method", "max_new_tokens", "bonus", "resumed", "committed_tokens")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VOCAB_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    N_VOCAB_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BONUS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    vocab_fingerprint: str
    n_vocab: int
    sampling: Sampling
    verify: VerifySettings
    prompt_tokens: bytes
    method: Method
    max_new_tokens: int
    bonus: bool
    resumed: int
    committed_tokens: int
    def __init__(self, protocol_version: _Optional[int] = ..., vocab_fingerprint: _Optional[str] = ..., n_vocab: _Optional[int] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., verify: _Optional[_Union[VerifySettings, _Mapping]] = ..., prompt_tokens: _Optional[bytes] = ..., method: _Optional[_Union[Method, str]] = ..., max_new_tokens: _Optional[int] = ..., bonus: _Optional[bool] = ..., resumed: _Optional[int] = ..., committed_tokens: _Optional[int] = ...) -> None: ...

class DraftChunk(_message.Message):
    __slots__ = ("epoch", "start", "tokens", "token_probs", "draft_probs", "correction")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_PROBS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_PROBS_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    start: int
    tokens: bytes
    token_probs: bytes
    draft_probs: bytes
    correction: int
    def __init__(self, epoch: _Optional[int] = ..., start: _Optional[int] = ..., tokens: _Optional[bytes] = ..., token_probs: _Optional[bytes] = ..., draft_probs: _Optional[bytes] = ..., correction: _Optional[int] = ...) -> None: ...

class MoreCandidates(_message.Message):
    __slots__ = ("epoch",)
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    def __init__(self, epoch: _Optional[int] = ...) -> None: ...

class Decode(_message.Message):
    __slots__ = ("epoch", "start", "count", "correction")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    start: int
    count: int
    correction: int
    def __init__(self, epoch: _Optional[int] = ..., start: _Optional[int] = ..., count: _Optional[int] = ..., correction: _Optional[int] = ...) -> None: ...

class Close(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EdgeMessage(_message.Message):
    __slots__ = ("hello", "chunk", "more_candidates", "close", "decode")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    MORE_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    chunk: DraftChunk
    more_candidates: MoreCandidates
    close: Close
    decode: Decode
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., chunk: _Optional[_Union[DraftChunk, _Mapping]] = ..., more_candidates: _Optional[_Union[MoreCandidates, _Mapping]] = ..., close: _Optional[_Union[Close, _Mapping]] = ..., decode: _Optional[_Union[Decode, _Mapping]] = ...) -> None: ...

class CostCurve(_message.Message):
    __slots__ = ("verify_s", "decode_s")
    VERIFY_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    verify_s: _containers.RepeatedScalarFieldContainer[float]
    decode_s: float
    def __init__(self, verify_s: _Optional[_Iterable[float]] = ..., decode_s: _Optional[float] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "model", "max_context", "costs", "max_chunk_tokens")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    model: str
    max_context: int
    costs: CostCurve
    max_chunk_tokens: int
    def __init__(self, protocol_version: _Optional[int] = ..., model: _Optional[str] = ..., max_context: _Optional[int] = ..., costs: _Optional[_Union[CostCurve, _Mapping]] = ..., max_chunk_tokens: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("epoch", "start", "accepted", "rejected", "token", "sparse", "candidates", "verify_s", "cloud_passes", "prefill_s", "shared_tokens")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    VERIFY_S_FIELD_NUMBER: _ClassVar[int]
    CLOUD_PASSES_FIELD_NUMBER: _ClassVar[int]
    PREFILL_S_FIELD_NUMBER: _ClassVar[int]
    SHARED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    start: int
    accepted: int
    rejected: bool
    token: int
    sparse: bytes
    candidates: bytes
    verify_s: float
    cloud_passes: int
    prefill_s: float
    shared_tokens: int
    def __init__(self, epoch: _Optional[int] = ..., start: _Optional[int] = ..., accepted: _Optional[int] = ..., rejected: _Optional[bool] = ..., token: _Optional[int] = ..., sparse: _Optional[bytes] = ..., candidates: _Optional[bytes] = ..., verify_s: _Optional[float] = ..., cloud_passes: _Optional[int] = ..., prefill_s: _Optional[float] = ..., shared_tokens: _Optional[int] = ...) -> None: ...

class CandidateBatch(_message.Message):
    __slots__ = ("epoch", "candidates")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    candidates: bytes
    def __init__(self, epoch: _Optional[int] = ..., candidates: _Optional[bytes] = ...) -> None: ...

class Tokens(_message.Message):
    __slots__ = ("tokens", "compute_s", "start", "cloud_passes", "prefill_s", "shared_tokens", "token_probs")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    CLOUD_PASSES_FIELD_NUMBER: _ClassVar[int]
    PREFILL_S_FIELD_NUMBER: _ClassVar[int]
    SHARED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_PROBS_FIELD_NUMBER: _ClassVar[int]
    tokens: bytes
    compute_s: float
    start: int
    cloud_passes: int
    prefill_s: float
    shared_tokens: int
    token_probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, tokens: _Optional[bytes] = ..., compute_s: _Optional[float] = ..., start: _Optional[int] = ..., cloud_passes: _Optional[int] = ..., prefill_s: _Optional[float] = ..., shared_tokens: _Optional[int] = ..., token_probs: _Optional[_Iterable[float]] = ...) -> None: ...

class CloudMessage(_message.Message):
    __slots__ = ("welcome", "verdict", "candidates", "tokens")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    verdict: Verdict
    candidates: CandidateBatch
    tokens: Tokens
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., candidates: _Optional[_Union[CandidateBatch, _Mapping]] = ..., tokens: _Optional[_Union[Tokens, _Mapping]] = ...) -> None: ...
