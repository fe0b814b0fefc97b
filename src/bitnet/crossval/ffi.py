"""`CppSession`: the C++ reference driven through ctypes, configured for deterministic comparison.

Deterministic means: F32 KV cache (`type_k = type_v = GGML_TYPE_F32`; F16 on the BitNet fork, which requires
it without flash attention), a fixed thread count (1 by default), flash
attention off, one sequence, logits requested for every position, CPU only. The same session can trace every
intermediate tensor through llama.cpp's `cb_eval` hook (see `bitnet.crossval.cpp_trace`).
"""

from __future__ import annotations

import ctypes as C
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.crossval.cpp import DEFAULT_TEST_FLAVOR, Manifest, find_reference, load_libraries
from bitnet.crossval.llama_api import (
    EVAL_CALLBACK,
    GGML_TYPE_F16,
    GGML_TYPE_F32,
    LLAMA_FLASH_ATTN_TYPE_DISABLED,
    LOG_CALLBACK,
    LlamaLib,
)
from bitnet.errors import InferenceError, InvalidInputError, ReferenceUnavailable

_LIB_CACHE: dict[str, LlamaLib] = {}
_LIB_LOCK = threading.Lock()


def _forward_log(level: int, text: bytes | None, _user: Any) -> None:
    if text and os.environ.get("BITNET_CPP_LOG") == "1":
        sys.stderr.write(text.decode(errors="replace"))


#: kept alive for the life of the process (llama.cpp stores the pointer)
_LOG_CB = LOG_CALLBACK(_forward_log)


def open_library(manifest: Manifest) -> LlamaLib:
    """Load (once per process) the libraries a manifest lists and bind the matching API generation."""
    libs = manifest.libraries()
    key = str(libs.get("llama"))
    with _LIB_LOCK:
        if key in _LIB_CACHE:
            return _LIB_CACHE[key]
        if _LIB_CACHE:
            # two llama.cpp builds in one process can bind to each other's ggml by soname: refuse, do not crash
            other = next(iter(_LIB_CACHE))
            raise ReferenceUnavailable(
                f"this process already uses the C++ reference at {other}; load {key} in another process",
                hint="one C++ reference per process (run each flavor in its own xtask invocation)",
            )
        errors = load_libraries(libs)
        if errors:
            raise ReferenceUnavailable("cannot load the C++ reference:\n" + "\n".join(errors),
                                       hint="rebuild it with `xtask fetch-cpp ... --force`")  # fmt: skip
        llama = C.CDLL(str(libs["llama"]), mode=C.RTLD_LOCAL)
        ggml_path = libs.get("ggml-base") or libs.get("ggml") or libs["llama"]
        ggml = C.CDLL(str(ggml_path), mode=C.RTLD_LOCAL)
        lib = LlamaLib(llama, ggml, manifest.api_generation or None)
        lib.log_set(_LOG_CB, None)
        lib.backend_init()
        _LIB_CACHE[key] = lib
        return lib


class CppSession:
    """One model + one context in the C++ reference. Use as a context manager, or call `close()`.

    `eval_all_logits(tokens)` evaluates a fresh sequence in one batch and returns float32 [T, V].
    `greedy(prompt, n)` decodes n tokens by argmax, one token per call (like our `Engine.generate`).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        manifest: Manifest | None = None,
        flavor: str = DEFAULT_TEST_FLAVOR,
        cpp_dir: Path | None = None,
        n_ctx: int = 512,
        n_threads: int = 1,
        tracer: Any = None,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise InvalidInputError(f"model file not found: {self.model_path}")
        self.manifest = manifest or find_reference(flavor, cpp_dir)
        self.lib = open_library(self.manifest)
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.tracer = tracer
        self._model: int | None = None
        self._ctx: int | None = None
        self._cb = EVAL_CALLBACK(self._on_eval) if tracer is not None else None
        lib = self.lib
        if tracer is not None and hasattr(tracer, "set_generation"):
            tracer.set_generation(lib.generation)
        mp = lib.model_default_params()
        mp.n_gpu_layers = 0
        model = lib.load_model(str(self.model_path).encode(), mp)
        if not model:
            raise InferenceError(
                f"the C++ reference ({self.manifest.flavor}) failed to load {self.model_path}",
                hint="run with BITNET_CPP_LOG=1 to see llama.cpp's own messages",
            )
        self._model = model
        self._vocab = lib.vocab_handle(model)
        self.n_vocab = int(lib.n_vocab_raw(self._vocab))
        cp = lib.context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_ctx
        cp.n_ubatch = n_ctx
        cp.n_seq_max = 1
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        # F32 KV cache where the API allows it; the fork refuses a non-F16 V cache without flash attention, so
        # there the cache is F16 (bitnet.cpp's own default; our engine's `bitnet-cpp` numerics match it)
        self.kv_dtype = "f32" if lib.generation == "upstream-2026" else "f16"
        cp.type_k = GGML_TYPE_F32 if self.kv_dtype == "f32" else GGML_TYPE_F16
        cp.type_v = cp.type_k
        cp.embeddings = False
        cp.offload_kqv = False
        cp.no_perf = True
        if lib.generation == "upstream-2026":
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED
            cp.op_offload = False
        else:
            cp.flash_attn = False
            cp.logits_all = True
        if self._cb is not None:
            cp.cb_eval = self._cb
            cp.cb_eval_user_data = None
        ctx = lib.new_context(model, cp)
        if not ctx:
            self.close()
            raise InferenceError(f"the C++ reference could not create a context for {self.model_path}")
        self._ctx = ctx
        self._n_past = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._ctx:
            self.lib.free_context(self._ctx)
            self._ctx = None
        if self._model:
            self.lib.free_model(self._model)
            self._model = None

    def __enter__(self) -> CppSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"flavor": m.flavor, "revision": m.revision, "api_generation": self.lib.generation,
                "kv_dtype": self.kv_dtype, "threads": self.n_threads, "flash_attn": False, "n_ctx": self.n_ctx}  # fmt: skip

    # -- vocabulary ----------------------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int:
        return int(self.lib.bos_raw(self._vocab))

    @property
    def eos_id(self) -> int:
        return int(self.lib.eos_raw(self._vocab))

    @property
    def add_bos(self) -> bool:
        return bool(self.lib.add_bos_raw(self._vocab))

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of `text` by llama.cpp's own tokenizer (BOS added when `add_bos`, default: the model's flag)."""
        data = text.encode("utf-8")
        add = self.add_bos if add_bos is None else add_bos
        cap = len(data) + 8
        buf = (C.c_int32 * cap)()
        n = self.lib.tokenize_raw(self._vocab, data, len(data), buf, cap, add, parse_special)
        if n < 0:
            cap = -n
            buf = (C.c_int32 * cap)()
            n = self.lib.tokenize_raw(self._vocab, data, len(data), buf, cap, add, parse_special)
        if n < 0:
            raise InferenceError(f"llama_tokenize failed ({n}) on {text!r}")
        return list(buf[:n])

    def token_to_piece(self, token: int) -> str:
        buf = C.create_string_buffer(256)
        n = self.lib.token_to_piece_raw(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(self.token_to_piece(t) for t in tokens)

    # -- evaluation ----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.lib.clear_cache(self._ctx)
        self._n_past = 0

    def _decode(self, tokens: list[int], *, all_logits: bool) -> np.ndarray:
        """Append `tokens` at the current position; float32 [T, V] (all_logits) or [1, V] (last position)."""
        if not tokens:
            raise InferenceError("no tokens to evaluate")
        if self._n_past + len(tokens) > self.n_ctx:
            raise InferenceError(f"{self._n_past + len(tokens)} tokens exceed the reference context {self.n_ctx}")
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise InferenceError(f"token ids outside the vocabulary [0, {self.n_vocab}): {bad[:5]}")
        lib, n = self.lib, len(tokens)
        batch = lib.batch_init(n, 0, 1)
        try:
            for i, tok in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = self._n_past + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if (all_logits or i == n - 1) else 0
            batch.n_tokens = n
            if self.tracer is not None:
                self.tracer.begin_batch(self._n_past, n)
            rc = lib.decode(self._ctx, batch)
            if rc != 0:
                raise InferenceError(f"llama_decode returned {rc}")
            rows = range(n) if all_logits else [n - 1]
            out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
            for j, i in enumerate(rows):
                ptr = lib.get_logits_ith(self._ctx, i)
                if not ptr:
                    raise InferenceError(f"llama_get_logits_ith({i}) returned NULL")
                out[j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        finally:
            lib.batch_free(batch)
            if self.tracer is not None:
                self.tracer.end_batch()
        self._n_past += n
        return out

    def eval_all_logits(self, tokens: list[int]) -> np.ndarray:
        """float32 [T, V]: logits of every position of a fresh sequence, evaluated as one batch."""
        self.reset()
        return self._decode(list(map(int, tokens)), all_logits=True)

    def prefill(self, tokens: list[int]) -> np.ndarray:
        return self._decode(list(map(int, tokens)), all_logits=False)[0]

    def decode_step(self, token: int) -> np.ndarray:
        return self._decode([int(token)], all_logits=False)[0]

    def greedy(self, prompt_tokens: list[int], n_tokens: int, *, stop_ids: set[int] | None = None) -> list[int]:
        """argmax decoding of up to `n_tokens` tokens after the prompt (stops at a token in `stop_ids`)."""
        self.reset()
        logits = self.prefill(prompt_tokens)
        out: list[int] = []
        for _ in range(n_tokens):
            tok = int(np.argmax(logits))
            out.append(tok)
            if stop_ids and tok in stop_ids:
                break
            if len(out) == n_tokens:
                break
            logits = self.decode_step(tok)
        return out

    # -- tracing -------------------------------------------------------------------------------------------------
    def _on_eval(self, tensor: int, ask: bool, _user: Any) -> bool:
        tracer = self.tracer
        if tracer is None:  # tracing switched off after the context was created
            return not ask
        try:
            if ask:
                return bool(tracer.wants(self.lib.ggml_get_name(tensor).decode(errors="replace")))
            tracer.capture(self.lib, tensor)
        except Exception as exc:  # an exception must never unwind through C frames
            tracer.error = exc
        return True
