"""Classify kernel IDs the way verify-receipt needs: GPU, CPU-quantized, fallback, mock.

The grammar is the one in `bitnet.kernels.registry` (our IDs), plus the seed xtask's GPU prefixes so receipts from
the original tool's naming still classify the same way. Classification is by *prefix*, never by substring: the
seed's "contains" rule accepted `dequantize_i2s_helper` as a quantized kernel, which is exactly the trap a fallback
path can hide behind.
"""

from __future__ import annotations

import re

#: ternary weight formats, by the short name used in kernel IDs, mapped to GGUF type names
FORMAT_PREFIXES: dict[str, str] = {"i2s": "i2_s", "tq2": "tq2_0", "tq1": "tq1_0"}

#: our CPU quantized matmul grammar: {i2s|tq2|tq1}_{gemv|gemm}_{impl}; plus the seed's i2s_/tl1_/tl2_ families
_CPU_QUANT_RE = re.compile(r"^(?:(?:i2s|tq2|tq1)_(?:gemv|gemm)_[a-z0-9_]+|i2s_[a-z0-9_]+|tl1_[a-z0-9_]+|tl2_[a-z0-9_]+)$")
#: GPU: ours start with cuda_; the seed also counted these prefixes (xtask `is_gpu_kernel_id`)
_GPU_RE = re.compile(r"^(?:cuda_|gemm_|wmma_|cublas_|cutlass_|tl1_gpu_|tl2_gpu_)|^i2s_(?:quantize|dequantize)$")
#: GPU kernels that do the quantized matmul itself (not a norm or an elementwise op)
_GPU_QUANT_RE = re.compile(r"^(?:cuda_(?:i2s|tq2|tq1)_[a-z0-9_]+|gemm_i2s_[a-z0-9_]*|wmma_i2s_[a-z0-9_]*|tl[12]_gpu_[a-z0-9_]+)$")
#: float fallbacks: fp32_matmul_{impl}, dequant_{fmt}_{impl} (and their cuda_ twins, e.g. cuda_float_matmul_torch);
#: the seed's fallback_*, matmul_f32, *_dequant
_FALLBACK_RE = re.compile(r"^(?:cuda_)?(?:fp32_|float_matmul_|fallback_|dequant_)|^matmul_f32$|_dequant$")

MAX_KERNEL_ID_LEN = 128
MAX_KERNEL_ENTRIES = 10_000


def is_gpu_kernel(kernel_id: str) -> bool:
    """A kernel that ran on the GPU (`cuda_*` here; the seed's gemm_/wmma_/cublas_/cutlass_/tl*_gpu_ too)."""
    if kernel_id.startswith("i2s_cpu_"):
        return False
    return bool(_GPU_RE.search(kernel_id))


def is_fallback_kernel(kernel_id: str) -> bool:
    """A float fallback: dequantize-then-matmul or an fp32 matmul standing in for a quantized one."""
    return bool(_FALLBACK_RE.search(kernel_id))


def is_mock_kernel(kernel_id: str) -> bool:
    return "mock" in kernel_id.lower()


def is_cpu_quantized_kernel(kernel_id: str) -> bool:
    """A CPU kernel that multiplies quantized weights directly (prefix rule: `dequantize_i2s_helper` is not one)."""
    return bool(_CPU_QUANT_RE.match(kernel_id)) and not is_gpu_kernel(kernel_id) and not is_fallback_kernel(kernel_id)


def is_gpu_quantized_kernel(kernel_id: str) -> bool:
    return bool(_GPU_QUANT_RE.match(kernel_id)) and not is_fallback_kernel(kernel_id)


def is_quantized_kernel(kernel_id: str) -> bool:
    return is_cpu_quantized_kernel(kernel_id) or is_gpu_quantized_kernel(kernel_id)


def kernel_format(kernel_id: str) -> str | None:
    """The GGUF type name a quantized matmul kernel consumes (`i2s_gemv_ref` → "i2_s"), or None."""
    if not is_quantized_kernel(kernel_id):
        return None
    body = kernel_id.removeprefix("cuda_")
    for prefix in ("gemm_", "wmma_"):
        body = body.removeprefix(prefix)
    short = body.split("_", 1)[0]
    return FORMAT_PREFIXES.get(short)


def derive_compute_path(kernel_ids: list[str] | dict[str, int]) -> tuple[str, str]:
    """What the kernels that ran say about the run: ("real" | "mock" | "fallback" | "none", reason).

    "real" needs at least one quantized matmul kernel and no mock kernel. A run that only used float fallbacks
    for its matmuls is "fallback"; that is an honest description, and verify-receipt rejects it.
    """
    ids = list(kernel_ids)
    mocks = [k for k in ids if is_mock_kernel(k)]
    if mocks:
        return "mock", f"mock kernels ran: {', '.join(sorted(mocks))}"
    quant = [k for k in ids if is_quantized_kernel(k)]
    if quant:
        return "real", f"quantized kernels ran: {', '.join(sorted(quant))}"
    fallbacks = [k for k in ids if is_fallback_kernel(k)]
    if fallbacks:
        return "fallback", f"only float fallback matmuls ran: {', '.join(sorted(fallbacks))}"
    if ids:
        return "none", "no quantized matmul kernel ran"
    return "none", "no kernel was recorded"
