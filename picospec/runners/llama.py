"""A ModelRunner over llama.cpp (llama-cpp-python's low-level API), with an explicit, rollback-able context.

Why not `llama_cpp.Llama`: to read the logits of every position it needs `logits_all=True`, which
allocates n_ctx x n_vocab float32 (2.5 GB at 4096 context for a 151,936-token vocabulary). Here a
batch asks llama.cpp for the logits of its new tokens only, so memory grows with the batch, not the
context. `Llama` also offers no way to set the model parameter `use_extra_bufts`, which the
deterministic configuration needs.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import weakref
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from picospec.errors import InvalidInputError, ModelError

try:
    import llama_cpp
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
except ImportError as exc:  # one clear line instead of a traceback from the command that needed it
    raise ModelError(f"llama-cpp-python 0.3.36 is needed to run GGUF models ({exc}); `make setup` installs it") from exc
from picospec.runners.base import SeqEval, VocabInfo, check_rollback, check_token_ids

GGUF_MAGIC = b"GGUF"
ALL_LAYERS = 0x7FFFFFFF  # llama.cpp's n_gpu_layers for "every layer" (what -1 stands for here)


@functools.cache
def _init_backend() -> None:
    """Initialise llama.cpp once per process and route its log through a filter that drops all but errors."""
    set_verbose(False)
    llama_cpp.llama_backend_init()


def check_gpu_layers(gpu_layers: int) -> None:
    """Raise InvalidInputError unless gpu_layers is -1 (all), 0 (none), or positive on a build that can offload."""
    if gpu_layers < -1:
        raise InvalidInputError(f"GPU layers must be -1 (all), 0 (none) or a count, got {gpu_layers}")
    if gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
        raise InvalidInputError(
            f"{gpu_layers} GPU layers asked, but this llama-cpp-python has no GPU backend; rebuild it with one "
            "(e.g. CMAKE_ARGS=-DGGML_CUDA=on, or -DGGML_METAL=on on macOS; see the README) or use 0"
        )


def check_gguf(path: Path) -> None:
    """Raise ModelError unless `path` is a readable file that starts with the GGUF magic bytes."""
    if not path.is_file():
        raise ModelError(f"no model file at {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF model file (it starts with {magic!r}, not {GGUF_MAGIC!r})")


# Loaded models, shared by the runners that hold them (weakly: a model goes with its last runner). A
# cloud with a context per session then loads its target once: with repacked weights each load is
# a private copy, and four sessions held 7.4 GB where one model and four contexts hold about 2.3.
_MODELS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


def _shared_model(path: Path, deterministic: bool, gpu_layers: int) -> _internals.LlamaModel:
    """The model of this file (as it is now) with these settings, loaded once while runners hold it."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, deterministic, gpu_layers)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = LlamaRunner._load_model(path, deterministic, gpu_layers)
    return model


class LlamaRunner:
    """A GGUF causal LM whose context (and KV cache) the caller extends and rolls back.

    As a ModelRunner it holds one sequence. With n_seq > 1 it is also a MultiSeqRunner: n_seq
    sequences, each of n_ctx tokens in a KV stream of its own, that `evaluate` runs in one llama.cpp
    decode; the ModelRunner methods then act on sequence 0.

    deterministic=True selects a batch-invariant configuration: flash attention, no repacked weight
    buffers, and evaluation in sub-batches of at most DETERMINISTIC_CHUNK tokens. Then the logits of
    a position depend only on the tokens before it, not on how callers chunked them, so greedy
    speculative output can be tested for exact equality with greedy target-only output. It holds
    one sequence only: other sequences' tokens in the same decode would change the batch size the
    kernels see, and with it the logits.
    """

    # Measured on our AVX-512 CPU (design.md): with flash attention and use_extra_bufts=False, batches
    # of up to 5 tokens gave logits bitwise identical to one token at a time; batches of 8 and 16 did
    # not (llama.cpp switches to another matmul path). 4 keeps a margin below the measured limit.
    DETERMINISTIC_CHUNK = 4

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_ctx: int = 4096,
        n_threads: int = 1,
        deterministic: bool = False,
        n_batch: int = 64,
        n_seq: int = 1,
        gpu_layers: int = 0,
        kv_unified: bool = False,
    ) -> None:
        """Load the model and create an empty context.

        n_ctx is per sequence. kv_unified keeps every sequence's KV cells in one buffer (a token then
        attends over all sequences' cells, masked) instead of a stream per sequence; llama.cpp splits
        a pass over streams into sub-batches with as many tokens of each sequence, which costs extra
        passes when sequences bring different counts. n_batch bounds the tokens per llama.cpp decode call (all sequences
        together), and with it llama.cpp's logits buffer (n_batch x n_vocab float32: 39 MB at 64
        for Qwen2.5). gpu_layers offloads that many layers (-1: all) to a GPU, which needs a
        llama-cpp-python built with a GPU backend (CUDA, Metal, Vulkan, ...).
        """
        path = Path(model_path).expanduser()
        check_gguf(path)
        if n_ctx < 1 or n_threads < 1 or n_batch < 1 or n_seq < 1:
            raise InvalidInputError(
                f"n_ctx, n_threads, n_batch and n_seq must be positive, got {n_ctx}, {n_threads}, {n_batch}, {n_seq}"
            )
        if deterministic and n_seq > 1:
            raise InvalidInputError("the deterministic configuration holds one sequence: batching would change its logits")
        _init_backend()
        check_gpu_layers(gpu_layers)
        self.model_path = path
        self.deterministic = deterministic
        self._model = _shared_model(path, deterministic, gpu_layers)
        self._batch_size = min(n_batch, self.DETERMINISTIC_CHUNK) if deterministic else n_batch
        # A prompt is always prefilled in batches of n_batch, whatever the mode: every method's cloud
        # prefills the same prompt the same way, so outputs still match, and prefill stays fast.
        self._prefill_batch_size = n_batch
        self._n_batch = n_batch
        self._ctx = self._create_context(n_ctx, n_threads, n_batch, n_seq, deterministic, kv_unified)
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._n_vocab = self._model.n_vocab()
        self._seq_tokens: list[list[int]] = [[] for _ in range(n_seq)]

    @staticmethod
    def _load_model(path: Path, deterministic: bool, gpu_layers: int) -> _internals.LlamaModel:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = ALL_LAYERS if gpu_layers == -1 else gpu_layers
        if deterministic:
            # Repacked weights (extra buffer types) choose their matmul kernel by batch size.
            params.use_extra_bufts = False
        try:
            return _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as exc:
            raise ModelError(f"llama.cpp could not load {path}: {exc}") from exc

    def _create_context(
        self, n_ctx: int, n_threads: int, batch_size: int, n_seq: int, deterministic: bool, kv_unified: bool
    ) -> _internals.LlamaContext:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * n_seq
        params.n_batch = batch_size
        params.n_ubatch = batch_size
        params.n_seq_max = n_seq
        params.kv_unified = kv_unified
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if deterministic else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        try:
            return _internals.LlamaContext(model=self._model, params=params, verbose=False)
        except ValueError as exc:
            raise ModelError(
                f"llama.cpp could not create a context of {n_seq} x {n_ctx} tokens for {self.model_path}: {exc}"
            ) from exc

    # State

    @property
    def n_vocab(self) -> int:
        """Vocabulary size: the width of every logits row."""
        return self._n_vocab

    @property
    def n_seq(self) -> int:
        """How many sequences the context holds."""
        return len(self._seq_tokens)

    @property
    def n_ctx(self) -> int:
        """How many tokens one sequence can hold (llama.cpp may round the requested size up)."""
        return self._ctx.n_ctx() // self.n_seq

    @property
    def seq_capacity(self) -> int:
        """The same as n_ctx: what MultiSeqRunner calls it."""
        return self.n_ctx

    @property
    def n_tokens(self) -> int:
        """How many tokens sequence 0 (and its KV range) holds now."""
        return len(self._seq_tokens[0])

    @property
    def tokens(self) -> list[int]:
        """The token ids in sequence 0 now (a copy)."""
        return list(self._seq_tokens[0])

    # Evaluation

    def extend(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` after the context; return their logits rows, shape (len(tokens), n_vocab) float32.

        Row i holds the logits for the token that follows tokens[i].
        """
        ids = self._checked_new(0, tokens)
        logits = np.empty((len(ids), self._n_vocab), dtype=np.float32)  # (n, V)
        for start in range(0, len(ids), self._batch_size):
            sub_batch = tuple(ids[start : start + self._batch_size])
            logits[start : start + len(sub_batch)] = self._decode([SeqEval(0, self.n_tokens, sub_batch, len(sub_batch))])[0]
        return logits

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate `tokens` (a prompt) after the context; return only the last logits row, shape (n_vocab,).

        llama.cpp then computes the output layer for one position only, and no (n, V) array is built.
        """
        ids = self._checked_new(0, tokens)
        if not ids:
            raise InvalidInputError("prefill needs at least one token")
        for start in range(0, len(ids), self._prefill_batch_size):
            sub_batch = tuple(ids[start : start + self._prefill_batch_size])
            last = self._decode([SeqEval(0, self.n_tokens, sub_batch, 1)])[0]
        return last[-1]

    def evaluate(self, evals: Sequence[SeqEval]) -> list[np.ndarray]:
        """Evaluate every SeqEval (at most one per sequence, n_batch tokens in all) in one llama.cpp
        decode; per SeqEval its logits rows, shape (n_rows, n_vocab) float32."""
        if self.deterministic:
            raise InvalidInputError("the deterministic configuration evaluates through extend, in sub-batches")
        seqs = [item.seq for item in evals]
        if len(set(seqs)) != len(seqs):
            raise InvalidInputError(f"one pass evaluates each sequence at most once, got sequences {seqs}")
        total = sum(len(item.tokens) for item in evals)
        if total > self._n_batch:
            raise InvalidInputError(f"{total} tokens in one pass exceed n_batch {self._n_batch}")
        for item in evals:
            if not item.tokens:
                raise InvalidInputError(f"an evaluation of sequence {item.seq} holds no tokens")
            if not 0 <= item.seq < self.n_seq:
                raise InvalidInputError(f"sequence {item.seq} is outside [0, {self.n_seq})")
            if item.start != len(self._seq_tokens[item.seq]):
                raise InvalidInputError(f"sequence {item.seq} holds {len(self._seq_tokens[item.seq])} tokens, not {item.start}")
            self._checked_new(item.seq, item.tokens)
        return self._decode(evals) if evals else []

    def _checked_new(self, seq: int, tokens: Sequence[int]) -> list[int]:
        ids = check_token_ids(tokens, self._n_vocab).tolist()
        held = len(self._seq_tokens[seq])
        if held + len(ids) > self.n_ctx:
            raise InvalidInputError(f"context overflow: {held} tokens held + {len(ids)} new > n_ctx {self.n_ctx}")
        return ids

    def _no_rows(self) -> np.ndarray:
        return np.empty((0, self._n_vocab), dtype=np.float32)

    def _decode(self, evals: Sequence[SeqEval]) -> list[np.ndarray]:
        """Run one llama.cpp decode of checked SeqEvals, each non-empty (n_batch tokens at most); return
        each one's rows. Logits are asked for the rows wanted only, so the output layer costs no more."""
        batch = self._batch.batch
        i = 0
        for item in evals:
            first_row = len(item.tokens) - item.n_rows
            for j, token in enumerate(item.tokens):
                batch.token[i], batch.pos[i] = token, item.start + j
                batch.seq_id[i][0], batch.n_seq_id[i] = item.seq, 1
                batch.logits[i] = j >= first_row
                i += 1
        batch.n_tokens = i
        self._ctx.decode(self._batch)
        n_outputs = sum(item.n_rows for item in evals)
        # (outputs, V) view, in batch order; llama.cpp keeps no buffer of outputs for a pass that asked for none
        outputs = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(n_outputs, self._n_vocab)) if n_outputs else None
        rows, offset = [], 0
        for item in evals:
            self._seq_tokens[item.seq].extend(item.tokens)
            rows.append(outputs[offset : offset + item.n_rows].copy() if item.n_rows else self._no_rows())
            offset += item.n_rows
        return rows

    def rollback(self, n: int) -> None:
        """Truncate the context and its KV cache to the first n tokens."""
        self.rollback_seq(0, n)

    def rollback_seq(self, seq: int, n: int) -> None:
        """Truncate sequence `seq` and its KV range to its first n tokens."""
        if not 0 <= seq < self.n_seq:
            raise InvalidInputError(f"sequence {seq} is outside [0, {self.n_seq})")
        check_rollback(n, len(self._seq_tokens[seq]))
        if not self._ctx.kv_cache_seq_rm(seq, n, -1):
            raise ModelError(f"llama.cpp could not remove positions {n}.. of sequence {seq} from the KV cache")
        del self._seq_tokens[seq][n:]

    # Vocabulary

    def token_bytes(self, token: int, special: bool = True) -> bytes:
        """The bytes of one token; control tokens render as their text (e.g. b"<|im_end|>") when special."""
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._model.vocab, token, buffer, len(buffer), 0, special)
        if size < 0:  # the buffer was too small; -size is the length needed
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._model.vocab, token, buffer, len(buffer), 0, special)
        return buffer.raw[:size]

    def eos_ids(self) -> tuple[int, ...]:
        """Every end-of-generation id (EOS, EOT such as <|im_end|>, ...), as llama.cpp classifies them."""
        vocab = self._model.vocab
        return tuple(t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t))

    def bos_id(self) -> int | None:
        """The beginning-of-sequence id, or None if the model has none."""
        bos = self._model.token_bos()
        return None if bos < 0 else bos

    @functools.cached_property
    def _all_token_bytes(self) -> tuple[bytes, ...]:
        return tuple(self.token_bytes(t) for t in range(self._n_vocab))

    def all_token_bytes(self) -> list[bytes]:
        """Every token's bytes in id order, control tokens as their text (computed once)."""
        return list(self._all_token_bytes)

    @functools.cached_property
    def _vocab_info(self) -> VocabInfo:
        return VocabInfo.from_token_bytes(self._all_token_bytes, self.eos_ids(), self.bos_id())

    def vocab_info(self) -> VocabInfo:
        """Vocabulary size, special ids and a fingerprint of every token's bytes (computed once)."""
        return self._vocab_info

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`; add_special adds BOS if the model wants it, parse_special reads "<|im_end|>" as one token."""
        return self._model.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> str:
        """The text of `tokens`; control tokens are left out unless `special`; broken UTF-8 becomes U+FFFD."""
        ids = check_token_ids(tokens, self._n_vocab).tolist()
        return b"".join(self.token_bytes(t, special) for t in ids).decode("utf-8", errors="replace")

    def chat_tokens(self, user_message: str) -> list[int]:
        """Token ids of a one-turn chat prompt in the GGUF's chat template, ready for the assistant's reply."""
        return self.chat_messages_tokens([{"role": "user", "content": user_message}])

    def chat_messages_tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a conversation ({"role", "content"} dicts) in the GGUF's chat template, ready for the assistant's reply."""
        template = llama_cpp.llama_model_chat_template(self._model.model, None)
        if template is None:
            raise ModelError(f"{self.model_path} has no chat template (tokenizer.chat_template)")
        bos = self.bos_id()
        formatter = Jinja2ChatFormatter(
            template=template.decode("utf-8"),
            eos_token=self.token_bytes(self._model.token_eos()).decode("utf-8", errors="replace"),
            bos_token="" if bos is None else self.token_bytes(bos).decode("utf-8", errors="replace"),
            add_generation_prompt=True,
        )
        prompt = formatter(messages=[dict(message) for message in messages]).prompt
        ids = self.tokenize(prompt, add_special=False, parse_special=True)
        # Add BOS as the model asks, unless the template already wrote it.
        if bos is not None and self._model.add_bos_token() and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids
