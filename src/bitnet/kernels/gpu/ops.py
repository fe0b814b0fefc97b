"""Python side of the GPU kernels: uploads, launch wrappers, kernel IDs, config choice.

Every wrapper records its kernel ID in `bitnet.kernels.registry.REGISTRY` each time it launches (IDs follow the
`cuda_{what}_{impl}` grammar, so verify-receipt classifies them as GPU kernels). Nothing here falls back to a
float matmul: a missing Triton or CUDA raises `ReferenceUnavailable`.

`TRITON_INTERPRET=1` runs the same kernels on CPU tensors through Triton's interpreter (the tests use it where
no GPU exists); the `dp4a` inline-assembly path is then replaced by the plain integer path it must equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from bitnet.errors import InvalidInputError, ReferenceUnavailable
from bitnet.kernels.gpu.layout import QK_K, PackedTernary
from bitnet.kernels.registry import REGISTRY, Kernel

#: token counts up to this use the GEMV kernel (weights streamed once per token row); above it, the GEMM
GEMV_MAX_M = 4

_FMT_SHORT = {"i2_s": "i2s", "tq2_0": "tq2", "tq1_0": "tq1"}
_PROFILE_ID = {"per-token": "per_token", "block256": "block256"}


def _register_ids() -> None:
    ids: list[tuple[str, str, str | None]] = []
    for short, fmt in (("i2s", "i2_s"), ("tq2", "tq2_0"), ("tq1", "tq1_0")):
        ids.append((f"cuda_{short}_gemv_triton", "ternary_matmul", fmt))
        ids.append((f"cuda_{short}_gemm_triton", "ternary_matmul", fmt))
    ids += [
        ("cuda_quantize_per_token_triton", "quantize", None),
        ("cuda_quantize_block256_triton", "quantize", None),
        ("cuda_rmsnorm_triton", "rmsnorm", None),
        ("cuda_glu_relu2_triton", "glu", None),
        ("cuda_glu_silu_triton", "glu", None),
        ("cuda_rope_neox_triton", "rope", None),
        ("cuda_attention_triton", "attention", None),
        ("cuda_attention_torch", "attention", None),
        ("cuda_f16_lmhead_triton", "lmhead", "f16"),
        ("cuda_f32_lmhead_triton", "lmhead", "f32"),
        ("cuda_f16_lmhead_torch", "lmhead", "f16"),
        ("cuda_f32_lmhead_torch", "lmhead", "f32"),
        ("cuda_embedding_torch", "embedding", None),
        ("cuda_float_matmul_torch", "matmul_float", None),
        ("cuda_sample_torch", "sample", None),
    ]
    for kid, op, fmt in ids:
        REGISTRY.register(Kernel(id=kid, op=op, backend="cuda", fmt=fmt))  # idempotent: same (fn=None) kernel


_register_ids()


def interpret_mode() -> bool:
    """True when Triton runs kernels in its CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@cache
def _kernels() -> Any:
    try:
        from bitnet.kernels.gpu import triton_kernels
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ReferenceUnavailable(
            f"the GPU backend needs Triton ({e})", hint="pip install 'bitnet-py[gpu]' on a machine with CUDA"
        ) from e
    return triton_kernels


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover
        raise ReferenceUnavailable(
            "the GPU backend needs PyTorch", hint="pip install 'bitnet-py[gpu]'"
        ) from e
    return torch


def cuda_available() -> bool:
    """A CUDA device PyTorch can use, and Triton importable: the condition for `backend="cuda"`."""
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def device_name() -> str:
    """'cuda' normally; 'cpu' under the Triton interpreter (tests without a GPU)."""
    return "cpu" if interpret_mode() else "cuda"


def _launch_opts() -> dict[str, Any]:
    # fp fusion off: no FMA contraction the numpy reference does not do (see triton_kernels' docstring)
    return {} if interpret_mode() else {"enable_fp_fusion": False}


# ------------------------------------------------------------------------------------------- weights on device


@dataclass
class GpuTernary:
    """A `PackedTernary` on the device: uint8 codes [N, K/4] (+ its int32 view), float32 scales."""

    n_out: int
    n_in: int
    fmt: str
    codes: Any
    codes32: Any
    row_scale: Any
    block_scale: Any | None
    out_scale: Any | None
    name: str = ""

    @property
    def kernel_short(self) -> str:
        return _FMT_SHORT[self.fmt]

    @property
    def nbytes(self) -> int:
        n = self.codes.numel() + self.row_scale.numel() * 4
        if self.block_scale is not None:
            n += self.block_scale.numel() * 4
        return int(n)


def upload_ternary(p: PackedTernary, device: Any | None = None) -> GpuTernary:
    torch = _torch()
    dev = device or device_name()
    if p.n_in % 128:
        raise InvalidInputError(f"{p.name}: n_in={p.n_in} is not a multiple of 128")
    codes = torch.from_numpy(np.ascontiguousarray(p.codes)).to(dev)
    return GpuTernary(
        n_out=p.n_out,
        n_in=p.n_in,
        fmt=p.src_fmt,
        codes=codes,
        codes32=codes.view(torch.int32),
        row_scale=torch.from_numpy(p.row_scale.astype(np.float32)).to(dev),
        block_scale=None
        if p.block_scale is None
        else torch.from_numpy(p.block_scale.astype(np.float32)).to(dev),
        out_scale=None if p.out_scale is None else torch.from_numpy(p.out_scale.astype(np.float32)).to(dev),
        name=p.name,
    )


# ------------------------------------------------------------------------------------------- activations


@dataclass
class QuantAct:
    """int8 activations [M, K] on the device, their scales [M, NB] (s or d, as in `bitnet.kernels.quant`) and
    int32 code sums [M, NB]."""

    profile: str
    q: Any
    scales: Any
    sums: Any

    @property
    def block256(self) -> bool:
        return self.profile == "block256"


_SCALARS: dict[tuple[float, Any, Any], Any] = {}
#: row block (next power of two of K) → num_warps of the fused norm/quant kernel, set by the benchmark's sweep
_NORM_WARPS: dict[int, int] = {}


def _scalar(value: float, dtype: Any, device: Any) -> Any:
    """A cached one-element device tensor (kernels load it in full precision; also safe inside CUDA graphs)."""
    key = (float(value), dtype, str(device))
    t = _SCALARS.get(key)
    if t is None:
        t = _SCALARS[key] = _torch().tensor([value], dtype=dtype, device=device)
    return t


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def norm_quantize(
    x: Any,
    profile: str | None,
    norm_weight: Any | None = None,
    eps: float = 1e-5,
    glu: str | None = None,
) -> Any:
    """[GLU] → [RMSNorm] → [quantize] over rows of x ([M, K], or [M, 2K] with `glu`), one fused launch.

    Returns a `QuantAct` when `profile` is given, else the float result (the final norm before the lm_head).
    """
    torch = _torch()
    k = _kernels()
    if x.dim() != 2 or not x.is_contiguous():
        raise InvalidInputError(f"norm_quantize wants a contiguous [M, K] tensor, got {tuple(x.shape)}")
    m, width = x.shape
    kdim = width // 2 if glu else width
    glu_code = {None: 0, "relu2": 1, "silu": 2}[glu]
    block = max(_next_pow2(kdim), 256)
    dev = x.device
    if profile is None:
        y = torch.empty((m, kdim), dtype=x.dtype, device=dev)
        q = scales = sums = y  # pointer arguments the kernel never reads when quant == 0
        nb, quant = 1, 0
    elif profile == "per-token":
        nb, quant = 1, 1
    elif profile == "block256":
        if kdim % QK_K:
            raise InvalidInputError(f"block256 quantization needs a multiple of 256 features, got {kdim}")
        nb, quant = kdim // QK_K, 2
    else:
        raise InvalidInputError(f"unknown activation profile {profile!r}")
    if quant:
        q = torch.empty((m, kdim), dtype=torch.int8, device=dev)
        scales = torch.empty((m, nb), dtype=torch.float32, device=dev)
        sums = torch.empty((m, nb), dtype=torch.int32, device=dev)
        y = q
    w = norm_weight if norm_weight is not None else x
    num_warps = _NORM_WARPS.get(block) or (4 if block <= 1024 else (8 if block <= 4096 else 16))
    k.norm_quant_kernel[(m,)](
        x, x.stride(0), w, y, q, scales, sums, kdim, nb, _scalar(eps, x.dtype, dev),
        GLU=glu_code, HAS_NORM=norm_weight is not None, QUANT=quant, BLOCK=block, PRECISE=not interpret_mode(),
        num_warps=num_warps, **_launch_opts(),
    )  # fmt: skip
    if glu:
        REGISTRY.record(f"cuda_glu_{glu}_triton")
    if norm_weight is not None:
        REGISTRY.record("cuda_rmsnorm_triton")
    if profile is None:
        return y
    REGISTRY.record(f"cuda_quantize_{_PROFILE_ID[profile]}_triton")
    return QuantAct(profile, q, scales, sums)


# ------------------------------------------------------------------------------------------- ternary matmul


@dataclass(frozen=True)
class GemvConfig:
    bn: int
    bk: int
    num_warps: int


@dataclass(frozen=True)
class GemmConfig:
    bm: int
    bn: int
    bk: int
    num_warps: int
    num_stages: int


#: (N, K, blocks) → tuned config; filled by the benchmark's sweep (bench/gpu.py) and read by every launch
_GEMV_TUNED: dict[tuple[int, int, bool], GemvConfig] = {}
_GEMM_TUNED: dict[tuple[int, int, bool], GemmConfig] = {}


def default_gemv_config(n: int, k: int, blocks: bool) -> GemvConfig:
    if blocks:
        return GemvConfig(bn=8 if n >= 2048 else 4, bk=256, num_warps=4)
    bk = 512 if k % 512 == 0 else 256
    return GemvConfig(bn=8 if n >= 4096 else 4, bk=bk, num_warps=4)


def gemv_candidates(n: int, k: int, blocks: bool) -> list[GemvConfig]:
    bks = [256] if blocks else [b for b in (256, 512, 1024) if k >= b]
    out = []
    for bk in bks:
        for bn in (4, 8, 16):
            for nw in (4, 8):
                if bn * bk // 16 >= 32 * nw:  # at least one word per thread
                    out.append(GemvConfig(bn, bk, nw))
    return out


def _gemv_config(n: int, k: int, blocks: bool) -> GemvConfig:
    return _GEMV_TUNED.get((n, k, blocks)) or default_gemv_config(n, k, blocks)


def _needs_blocks(w: GpuTernary, qa: QuantAct) -> bool:
    return qa.block256 or w.block_scale is not None


def ternary_matmul(
    qa: QuantAct,
    w: GpuTernary,
    residual: Any | None = None,
    *,
    out_dtype: Any | None = None,
    raw: bool = False,
    force: str | None = None,
    gemv_config: GemvConfig | None = None,
    gemm_config: GemmConfig | None = None,
    use_dp4a: bool | None = None,
) -> Any:
    """out[m, n] = epilogue(Σ_k value[n,k]·q[m,k]) (+ residual[m, n]), the I2_S / TQ epilogue of the profile.

    `raw=True` returns the exact int32 Σ value·q instead (what tests compare with numpy bit for bit).
    `force` picks "gemv" or "gemm" regardless of M; `use_dp4a` None → on for CUDA, off in the interpreter.
    """
    torch = _torch()
    k = _kernels()
    m, kdim = qa.q.shape
    if kdim != w.n_in:
        raise InvalidInputError(f"{w.name}: activations have {kdim} features, the weight expects {w.n_in}")
    if qa.block256 and kdim % QK_K:
        raise InvalidInputError(f"{w.name}: block256 activations need n_in % 256 == 0")
    n = w.n_out
    dev = qa.q.device
    blocks = _needs_blocks(w, qa)
    if raw:
        out = torch.empty((m, n), dtype=torch.int32, device=dev)
    else:
        dt = out_dtype or (residual.dtype if residual is not None else torch.float32)
        out = torch.empty((m, n), dtype=dt, device=dev)
    if residual is not None and (residual.shape != (m, n) or not residual.is_contiguous()):
        raise InvalidInputError(f"{w.name}: residual must be contiguous [{m}, {n}]")
    dummy = w.row_scale
    args = dict(
        rscale_ptr=w.row_scale,
        bscale_ptr=w.block_scale if w.block_scale is not None else dummy,
        ascale_ptr=qa.scales,
        oscale_ptr=w.out_scale if w.out_scale is not None else dummy,
        res_ptr=residual if residual is not None else out,
        out_ptr=out,
    )
    flags = dict(
        BLOCKS=blocks,
        A_BLOCK256=qa.block256,
        HAS_BSCALE=w.block_scale is not None,
        HAS_OSCALE=w.out_scale is not None,
        HAS_RES=residual is not None,
        RAW=raw,
    )
    kind = force or ("gemv" if m <= GEMV_MAX_M else "gemm")
    if kind == "gemv":
        cfg = gemv_config or _gemv_config(n, kdim, blocks)
        bk = 256 if blocks else cfg.bk
        dp4a = (not interpret_mode()) if use_dp4a is None else use_dp4a
        if dp4a and kdim % 16:
            raise InvalidInputError(f"{w.name}: the dp4a GEMV needs n_in % 16 == 0")
        grid = (triton_cdiv(n, cfg.bn), m)
        k.ternary_gemv_kernel[grid](
            qa.q.view(torch.int32) if dp4a else qa.q,
            w.codes32 if dp4a else w.codes,
            N=n, K=kdim, NBA=qa.scales.shape[1], USE_DP4A=dp4a, BN=cfg.bn, BK=bk,
            num_warps=cfg.num_warps, **args, **flags, **_launch_opts(),
        )  # fmt: skip
    elif kind == "gemm":
        cfg2 = gemm_config or _GEMM_TUNED.get((n, kdim, blocks)) or default_gemm_config(m, n, kdim, blocks)
        bk = 256 if blocks else cfg2.bk
        grid = (triton_cdiv(m, cfg2.bm), triton_cdiv(n, cfg2.bn))
        k.ternary_gemm_kernel[grid](
            qa.q, w.codes, M=m, N=n, K=kdim, NBA=qa.scales.shape[1], BM=cfg2.bm, BN=cfg2.bn, BK=bk,
            num_warps=cfg2.num_warps, num_stages=cfg2.num_stages, **args, **flags, **_launch_opts(),
        )  # fmt: skip
    else:
        raise InvalidInputError(f"unknown ternary matmul kind {kind!r}")
    REGISTRY.record(f"cuda_{w.kernel_short}_{kind}_triton")
    return out


def default_gemm_config(m: int, n: int, k: int, blocks: bool) -> GemmConfig:
    if interpret_mode():
        return GemmConfig(bm=16, bn=16, bk=256 if blocks else 128, num_warps=4, num_stages=1)
    bm = 64 if m <= 64 else 128
    return GemmConfig(bm=bm, bn=128, bk=256 if blocks or k % 256 == 0 else 128, num_warps=8, num_stages=3)


def gemm_candidates(blocks: bool) -> list[GemmConfig]:
    bks = (256,) if blocks else (128, 256)
    return [GemmConfig(bm, bn, bk, nw, ns) for bk in bks for (bm, bn, nw) in ((128, 128, 8), (64, 128, 4),
            (128, 256, 8), (64, 64, 4)) for ns in (2, 4)]  # fmt: skip


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------------------------------------- float ops


def float_gemv(x: Any, weight: Any, *, tag: str) -> Any:
    """x [M, K] (f32/f64) × weight [N, K] (f16/f32) → [M, N] in x's dtype; the lm_head of decode."""
    torch = _torch()
    k = _kernels()
    m, kdim = x.shape
    n = weight.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    bn, bk = (16, 256) if not interpret_mode() else (16, 64)
    k.float_gemv_kernel[(triton_cdiv(n, bn), m)](
        x, weight, out, n, kdim, BN=bn, BK=bk, num_warps=4, **_launch_opts()
    )
    REGISTRY.record(f"cuda_{tag}_lmhead_triton")
    return out


def rope_kv(qkv: Any, pos: Any, cos: Any, sin: Any, q_out: Any, k_cache: Any, v_cache: Any, h: int, hkv: int,
            d: int) -> None:  # fmt: skip
    """RoPE q and k of T tokens (qkv [T, (H+2HKV)·D]) at positions `pos` (int32 [T] on the device); q → q_out
    [T, H, D], k/v → the layer's cache rows."""
    k = _kernels()
    t = qkv.shape[0]
    k.rope_kv_kernel[(h + hkv, t)](
        qkv, pos, cos, sin, q_out, k_cache, v_cache, h, hkv, D=d, HALF_P2=_next_pow2(d // 2),
        num_warps=1, **_launch_opts(),
    )  # fmt: skip
    REGISTRY.record("cuda_rope_neox_triton")


#: key chunks per head in split-K decode attention (grid = heads × splits)
ATTN_SPLITS = 16


def decode_attention(
    q: Any, k_cache: Any, v_cache: Any, pos: Any, out: Any, hkv: int, *, split: bool = True
) -> None:
    """One query token [H, D] against cache rows 0..pos (pos read on the device), scale 1/sqrt(D).

    `split=True` (default): split-K over `ATTN_SPLITS` chunks, then a combine launch; `False`: the single-kernel
    three-pass version (one program per head), kept as the reference the split version is tested against.
    """
    torch = _torch()
    k = _kernels()
    h, d = q.shape
    bt = 32 if d <= 128 else 16
    opts = dict(PRECISE=not interpret_mode(), **_launch_opts())
    if not split:
        k.decode_attention_kernel[(h,)](
            q, k_cache, v_cache, pos, out, hkv, h // hkv, D=d, BT=bt, num_warps=4, **opts
        )
    else:
        s = ATTN_SPLITS
        m = torch.empty((h, s), dtype=q.dtype, device=q.device)
        lse = torch.empty((h, s), dtype=torch.float64, device=q.device)
        acc = torch.empty((h, s, d), dtype=torch.float64, device=q.device)
        k.decode_attention_split_kernel[(h, s)](
            q, k_cache, v_cache, pos, m, lse, acc, hkv, h // hkv, s, D=d, BT=bt, num_warps=4, **opts
        )
        k.decode_attention_combine_kernel[(h,)](
            m, lse, acc, out, s, D=d, S_P2=_next_pow2(s), num_warps=4, **opts
        )
    REGISTRY.record("cuda_attention_triton")
