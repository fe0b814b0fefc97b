"""GPU backend kernels (Triton on CUDA): ternary GEMV/GEMM on the `t2p128` layout, fused RMSNorm + activation
quantization, RoPE/KV-cache, decode attention and the float lm_head GEMV.

`layout` is pure numpy (importable everywhere); `ops` needs torch + Triton and raises `ReferenceUnavailable`
without them. See docs/gpu.md.
"""

from bitnet.kernels.gpu.layout import PackedTernary, concat_rows, pack_codes, pack_weight, unpack_codes

__all__ = ["PackedTernary", "concat_rows", "pack_codes", "pack_weight", "unpack_codes"]
