"""ctypes declarations of `llama.h` for the two API generations we cross-validate against.

* `upstream-2026`: ggml-org/llama.cpp as vendored by llama-cpp-python 0.3.36 (`llama_model_load_from_file`,
  `llama_init_from_model`, vocab-based tokenizer calls, `llama_memory_clear`, flash-attention *type* enum).
* `fork-2024`: the microsoft/BitNet llama.cpp fork (Eddie-Wang1120, as vendored in BitNet ≈ 2026-03:
  `llama_load_model_from_file`, `llama_new_context_with_model`, model-based tokenizer calls, `llama_kv_cache_clear`,
  `logits_all`/`flash_attn` booleans, three extra `llama_batch` fields).

The structs are passed and returned *by value*, so their layouts must match the C headers byte for byte (a
`llama_*_default_params()` returning a larger struct than declared would write past our buffer).
`tests/test_crossval_ffi.py` compiles a C program against the built headers and checks every offset and size.
"""

from __future__ import annotations

import ctypes as C
from dataclasses import dataclass

llama_token = C.c_int32
llama_pos = C.c_int32
llama_seq_id = C.c_int32
c_enum = C.c_int  # C enums are int-sized on every ABI we build for

#: bool (*)(struct ggml_tensor * t, bool ask, void * user_data)
EVAL_CALLBACK = C.CFUNCTYPE(C.c_bool, C.c_void_p, C.c_bool, C.c_void_p)
#: void (*)(enum ggml_log_level level, const char * text, void * user_data)
LOG_CALLBACK = C.CFUNCTYPE(None, c_enum, C.c_char_p, C.c_void_p)

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_BF16 = 30
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0


# --------------------------------------------------------------------------------------------- upstream-2026
class UpstreamModelParams(C.Structure):
    _fields_ = [
        ("devices", C.c_void_p),
        ("tensor_buft_overrides", C.c_void_p),
        ("n_gpu_layers", C.c_int32),
        ("split_mode", c_enum),
        ("load_mode", c_enum),
        ("lazy_mode", c_enum),
        ("main_gpu", C.c_int32),
        ("tensor_split", C.c_void_p),
        ("progress_callback", C.c_void_p),
        ("progress_callback_user_data", C.c_void_p),
        ("kv_overrides", C.c_void_p),
        ("vocab_only", C.c_bool),
        ("check_tensors", C.c_bool),
        ("use_extra_bufts", C.c_bool),
        ("no_host", C.c_bool),
        ("no_alloc", C.c_bool),
        ("load_mtp", C.c_bool),
    ]


class UpstreamContextParams(C.Structure):
    _fields_ = [
        ("n_ctx", C.c_uint32),
        ("n_batch", C.c_uint32),
        ("n_ubatch", C.c_uint32),
        ("n_seq_max", C.c_uint32),
        ("n_rs_seq", C.c_uint32),
        ("n_outputs_max", C.c_uint32),
        ("n_outputs_max_per_seq", C.c_uint32),
        ("n_threads", C.c_int32),
        ("n_threads_batch", C.c_int32),
        ("ctx_type", c_enum),
        ("rope_scaling_type", c_enum),
        ("pooling_type", c_enum),
        ("attention_type", c_enum),
        ("flash_attn_type", c_enum),
        ("rope_freq_base", C.c_float),
        ("rope_freq_scale", C.c_float),
        ("yarn_ext_factor", C.c_float),
        ("yarn_attn_factor", C.c_float),
        ("yarn_beta_fast", C.c_float),
        ("yarn_beta_slow", C.c_float),
        ("yarn_orig_ctx", C.c_uint32),
        ("defrag_thold", C.c_float),
        ("cb_eval", EVAL_CALLBACK),
        ("cb_eval_user_data", C.c_void_p),
        ("type_k", c_enum),
        ("type_v", c_enum),
        ("abort_callback", C.c_void_p),
        ("abort_callback_data", C.c_void_p),
        ("embeddings", C.c_bool),
        ("offload_kqv", C.c_bool),
        ("no_perf", C.c_bool),
        ("op_offload", C.c_bool),
        ("swa_full", C.c_bool),
        ("kv_unified", C.c_bool),
        ("samplers", C.c_void_p),
        ("n_samplers", C.c_size_t),
        ("ctx_other", C.c_void_p),
    ]


class UpstreamBatch(C.Structure):
    _fields_ = [
        ("n_tokens", C.c_int32),
        ("token", C.POINTER(llama_token)),
        ("embd", C.POINTER(C.c_float)),
        ("pos", C.POINTER(llama_pos)),
        ("n_seq_id", C.POINTER(C.c_int32)),
        ("seq_id", C.POINTER(C.POINTER(llama_seq_id))),
        ("logits", C.POINTER(C.c_int8)),
    ]


# --------------------------------------------------------------------------------------------- fork-2024
class ForkModelParams(C.Structure):
    _fields_ = [
        ("n_gpu_layers", C.c_int32),
        ("split_mode", c_enum),
        ("main_gpu", C.c_int32),
        ("tensor_split", C.c_void_p),
        ("rpc_servers", C.c_char_p),
        ("progress_callback", C.c_void_p),
        ("progress_callback_user_data", C.c_void_p),
        ("kv_overrides", C.c_void_p),
        ("vocab_only", C.c_bool),
        ("use_mmap", C.c_bool),
        ("use_mlock", C.c_bool),
        ("check_tensors", C.c_bool),
    ]


class ForkContextParams(C.Structure):
    _fields_ = [
        ("n_ctx", C.c_uint32),
        ("n_batch", C.c_uint32),
        ("n_ubatch", C.c_uint32),
        ("n_seq_max", C.c_uint32),
        ("n_threads", C.c_int32),
        ("n_threads_batch", C.c_int32),
        ("rope_scaling_type", c_enum),
        ("pooling_type", c_enum),
        ("attention_type", c_enum),
        ("rope_freq_base", C.c_float),
        ("rope_freq_scale", C.c_float),
        ("yarn_ext_factor", C.c_float),
        ("yarn_attn_factor", C.c_float),
        ("yarn_beta_fast", C.c_float),
        ("yarn_beta_slow", C.c_float),
        ("yarn_orig_ctx", C.c_uint32),
        ("defrag_thold", C.c_float),
        ("cb_eval", EVAL_CALLBACK),
        ("cb_eval_user_data", C.c_void_p),
        ("type_k", c_enum),
        ("type_v", c_enum),
        ("logits_all", C.c_bool),
        ("embeddings", C.c_bool),
        ("offload_kqv", C.c_bool),
        ("flash_attn", C.c_bool),
        ("no_perf", C.c_bool),
        ("abort_callback", C.c_void_p),
        ("abort_callback_data", C.c_void_p),
    ]


class ForkBatch(C.Structure):
    _fields_ = [
        *UpstreamBatch._fields_,
        ("all_pos_0", llama_pos),
        ("all_pos_1", llama_pos),
        ("all_seq_id", llama_seq_id),
    ]


@dataclass(frozen=True)
class ApiGeneration:
    """The struct types of one llama.h generation (functions are bound in `LlamaLib`)."""

    name: str
    model_params: type[C.Structure]
    context_params: type[C.Structure]
    batch: type[C.Structure]


GENERATIONS = {
    "upstream-2026": ApiGeneration("upstream-2026", UpstreamModelParams, UpstreamContextParams, UpstreamBatch),
    "fork-2024": ApiGeneration("fork-2024", ForkModelParams, ForkContextParams, ForkBatch),
}

#: (C struct name, ctypes type) pairs the layout test checks per generation
LAYOUT_STRUCTS = {
    "upstream-2026": (("llama_model_params", UpstreamModelParams), ("llama_context_params", UpstreamContextParams),
                      ("llama_batch", UpstreamBatch)),
    "fork-2024": (("llama_model_params", ForkModelParams), ("llama_context_params", ForkContextParams),
                  ("llama_batch", ForkBatch)),
}  # fmt: skip


def probe_generation(lib: C.CDLL) -> str:
    """Tell the generation from exported symbols (the header is not needed at run time)."""
    if hasattr(lib, "llama_model_load_from_file") and hasattr(lib, "llama_get_memory"):
        return "upstream-2026"
    if hasattr(lib, "llama_load_model_from_file") and hasattr(lib, "llama_kv_cache_clear"):
        return "fork-2024"
    raise OSError("libllama exports neither API generation this FFI knows (upstream-2026, fork-2024)")


class LlamaLib:
    """libllama + libggml loaded with the prototypes of one generation."""

    def __init__(self, llama: C.CDLL, ggml: C.CDLL, generation: str | None = None) -> None:
        self.llama = llama
        self.ggml = ggml
        self.generation = generation or probe_generation(llama)
        self.types = GENERATIONS[self.generation]
        self._bind()

    def _fn(self, lib: C.CDLL, name: str, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)
        return f

    def _bind(self) -> None:
        L, G, T = self.llama, self.ggml, self.types
        vp, i32 = C.c_void_p, C.c_int32
        self.backend_init = self._fn(L, "llama_backend_init", None)
        self.backend_free = self._fn(L, "llama_backend_free", None)
        self.log_set = self._fn(L, "llama_log_set", None, LOG_CALLBACK, vp)
        self.model_default_params = self._fn(L, "llama_model_default_params", T.model_params)
        self.context_default_params = self._fn(L, "llama_context_default_params", T.context_params)
        self.batch_init = self._fn(L, "llama_batch_init", T.batch, i32, i32, i32)
        self.batch_free = self._fn(L, "llama_batch_free", None, T.batch)
        self.decode = self._fn(L, "llama_decode", i32, vp, T.batch)
        self.get_logits_ith = self._fn(L, "llama_get_logits_ith", C.POINTER(C.c_float), vp, i32)
        self.free_context = self._fn(L, "llama_free", None, vp)
        tok_args = (C.c_char_p, i32, C.POINTER(llama_token), i32, C.c_bool, C.c_bool)
        piece_args = (llama_token, C.c_char_p, i32, i32, C.c_bool)
        if self.generation == "upstream-2026":
            self.load_model = self._fn(L, "llama_model_load_from_file", vp, C.c_char_p, T.model_params)
            self.new_context = self._fn(L, "llama_init_from_model", vp, vp, T.context_params)
            self.free_model = self._fn(L, "llama_model_free", None, vp)
            self.model_get_vocab = self._fn(L, "llama_model_get_vocab", vp, vp)
            self.tokenize_raw = self._fn(L, "llama_tokenize", i32, vp, *tok_args)
            self.token_to_piece_raw = self._fn(L, "llama_token_to_piece", i32, vp, *piece_args)
            self.n_vocab_raw = self._fn(L, "llama_vocab_n_tokens", i32, vp)
            self.bos_raw = self._fn(L, "llama_vocab_bos", llama_token, vp)
            self.eos_raw = self._fn(L, "llama_vocab_eos", llama_token, vp)
            self.add_bos_raw = self._fn(L, "llama_vocab_get_add_bos", C.c_bool, vp)
            self.get_memory = self._fn(L, "llama_get_memory", vp, vp)
            self.memory_clear = self._fn(L, "llama_memory_clear", None, vp, C.c_bool)
        else:
            self.load_model = self._fn(L, "llama_load_model_from_file", vp, C.c_char_p, T.model_params)
            self.new_context = self._fn(L, "llama_new_context_with_model", vp, vp, T.context_params)
            self.free_model = self._fn(L, "llama_free_model", None, vp)
            self.tokenize_raw = self._fn(L, "llama_tokenize", i32, vp, *tok_args)
            self.token_to_piece_raw = self._fn(L, "llama_token_to_piece", i32, vp, *piece_args)
            self.n_vocab_raw = self._fn(L, "llama_n_vocab", i32, vp)
            self.bos_raw = self._fn(L, "llama_token_bos", llama_token, vp)
            self.eos_raw = self._fn(L, "llama_token_eos", llama_token, vp)
            self.add_bos_raw = self._fn(L, "llama_add_bos_token", C.c_bool, vp)
            self.kv_cache_clear = self._fn(L, "llama_kv_cache_clear", None, vp)
        # ggml: tensor introspection for the eval callback
        self.ggml_get_name = self._fn(G, "ggml_get_name", C.c_char_p, vp)
        self.ggml_nbytes = self._fn(G, "ggml_nbytes", C.c_size_t, vp)
        self.ggml_type_name = self._fn(G, "ggml_type_name", C.c_char_p, c_enum)
        self.ggml_backend_tensor_get = self._fn(G, "ggml_backend_tensor_get", None, vp, vp, C.c_size_t, C.c_size_t)

    # -- generation-independent helpers ----------------------------------------------------------------------
    def vocab_handle(self, model: int) -> int:
        """What the tokenizer calls take: the vocab (upstream) or the model itself (fork)."""
        return self.model_get_vocab(model) if self.generation == "upstream-2026" else model

    def clear_cache(self, ctx: int) -> None:
        if self.generation == "upstream-2026":
            self.memory_clear(self.get_memory(ctx), True)
        else:
            self.kv_cache_clear(ctx)


# ggml_tensor starts with `enum ggml_type type;` then (fork: a deprecated backend enum, upstream: padding) then the
# buffer pointer, then int64 ne[4] and size_t nb[4] — the same offsets in both generations on 64-bit ABIs.
TENSOR_TYPE_OFFSET = 0
TENSOR_NE_OFFSET = 16
TENSOR_NB_OFFSET = 48


def tensor_type(ptr: int) -> int:
    return C.c_int.from_address(ptr + TENSOR_TYPE_OFFSET).value


def tensor_ne(ptr: int) -> tuple[int, int, int, int]:
    arr = (C.c_int64 * 4).from_address(ptr + TENSOR_NE_OFFSET)
    return (arr[0], arr[1], arr[2], arr[3])


def tensor_nb(ptr: int) -> tuple[int, int, int, int]:
    arr = (C.c_size_t * 4).from_address(ptr + TENSOR_NB_OFFSET)
    return (arr[0], arr[1], arr[2], arr[3])
