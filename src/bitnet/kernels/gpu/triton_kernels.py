"""Triton kernels of the GPU backend. Imported only where Triton is installed (`bitnet.kernels.gpu.ops` guards it).

Numerics follow the CPU reference kernels (`bitnet.kernels.quant`, `bitnet.kernels.reference`) operation by
operation, because the int8 activation quantizer turns any float difference upstream of it into code flips:
- the integer part of every ternary matmul is exact int32 (`Σ value·q`, value = code − 1), so it is bit-identical
  to numpy whatever the summation order;
- float steps that feed a quantizer use IEEE-rounded division and square root (`div_rn`, `sqrt_rn`) and launch
  with `enable_fp_fusion=False` (set by the wrappers), so `a*b + c` is never contracted to an FMA the numpy
  reference does not do; the only remaining float differences are summation orders (RMSNorm's sum of squares is
  taken in float64, like ggml, which makes its order immaterial in practice).

Weight layout: `bitnet.kernels.gpu.layout` (`t2p128`): row n is K/4 bytes; byte 32g+m holds, at bits 2j, the
code of element 128g + 32j + m. Seen as little-endian int32 words, word i of a row holds bytes 4i..4i+3, so
`(word >> 2j) & 0x03030303` is four codes whose activations are the 4 consecutive int8 values at element
`128*(i//8) + 32j + 4*(i%8)`: one `dp4a` per word and shift (the GEMV), or one int8 `tl.dot` slice per shift (GEMM).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def _dp4a_us(a, b, c):
    """c + Σ_i a.u8[i] * b.s8[i]: PTX dp4a with unsigned weight codes and signed activations (sm_61+)."""
    return tl.inline_asm_elementwise(
        "dp4a.u32.s32 $0, $1, $2, $3;",
        "=r,r,r,r",
        [a, b, c],
        dtype=tl.int32,
        is_pure=True,
        pack=1,
    )


@triton.jit
def _div(a, b):
    """IEEE round-to-nearest a / b (float32 `/` in Triton may be approximate; float64 `/` is div.rn)."""
    if a.dtype == tl.float64:
        r = a / b
    else:
        r = tl.math.div_rn(a, b)
    return r


@triton.jit
def _sqrt(a):
    if a.dtype == tl.float64:
        r = tl.sqrt(a)
    else:
        r = tl.sqrt_rn(a)
    return r


@triton.jit
def _rint(x):
    """Round half to even for |x| < 2**22: ggml's `nearest_int` (x + 1.5·2**23 − 1.5·2**23), exact in float32
    because the launch disables fp contraction and LLVM does not reassociate without fast-math."""
    return (x + 12582912.0) - 12582912.0


@triton.jit
def _exp(x, PRECISE: tl.constexpr):
    """Correctly-rounded-ish exp (libdevice) on the GPU; Triton's `tl.exp` is a fast ex2 approximation.
    The interpreter has no libdevice, and numpy's exp is what it should match there anyway."""
    if PRECISE:
        r = libdevice.exp(x)
    else:
        r = tl.exp(x)
    return r


# ------------------------------------------------------------------------------------------- norm + quantize


@triton.jit
def norm_quant_kernel(
    x_ptr,
    x_stride,
    w_ptr,
    y_ptr,
    q_ptr,
    scale_ptr,
    sum_ptr,
    K,
    NB,
    eps_ptr,  # [1] in x's dtype: a Python float argument would arrive as float32
    GLU: tl.constexpr,  # 0: input is x; 1: relu(g)^2 * u; 2: silu(g) * u, with g = x[:K], u = x[K:2K]
    HAS_NORM: tl.constexpr,
    QUANT: tl.constexpr,  # 0: store y (float); 1: per-token int8; 2: block256 int8
    BLOCK: tl.constexpr,
    PRECISE: tl.constexpr,
):
    """One row per program: [GLU] → [RMSNorm · w] → [int8 quantization], the whole row held in registers.

    Every ternary matmul input in a BitNet block is an RMSNorm output (attn_norm, attn_sub_norm, ffn_norm,
    ffn_sub_norm after the GLU), so fusing the quantizer here costs no extra pass over the activations.
    """
    m = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < K
    row = x_ptr + m * x_stride
    x = tl.load(row + offs, mask=mask, other=0.0)
    if GLU == 1:
        u = tl.load(row + K + offs, mask=mask, other=0.0)
        r = tl.maximum(x, 0.0)
        x = (r * r) * u
    elif GLU == 2:
        u = tl.load(row + K + offs, mask=mask, other=0.0)
        one = tl.full(x.shape, 1.0, x.dtype)
        x = _div(x, one + _exp(-x, PRECISE)) * u
    y = x
    if HAS_NORM:
        sq = (x * x).to(tl.float64)
        ss = tl.sum(sq, axis=0)
        mean = (ss / K).to(x.dtype)
        eps = tl.load(eps_ptr).to(x.dtype)
        rs = _div(mean * 0.0 + 1.0, _sqrt(mean + eps))
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(x.dtype)
        y = (x * rs) * w
    if QUANT == 0:
        tl.store(y_ptr + m * K + offs, y, mask=mask)
    elif QUANT == 1:
        amax = tl.max(tl.abs(y), axis=0).to(tl.float64)
        amax = tl.maximum(amax, 1e-5)
        s = (127.0 / amax).to(tl.float32)  # float64: IEEE division
        prod = (y * s.to(y.dtype)).to(tl.float32)
        q = tl.minimum(tl.maximum(_rint(prod), -128.0), 127.0).to(tl.int32)
        q = tl.where(mask, q, 0)
        tl.store(q_ptr + m * K + offs, q.to(tl.int8), mask=mask)
        tl.store(scale_ptr + m * NB, s)
        tl.store(sum_ptr + m * NB, tl.sum(q, axis=0))
    else:
        yb = tl.reshape(y, (BLOCK // 256, 256))
        ab = tl.abs(yb)
        amax = tl.max(ab, axis=1)
        idx = tl.arange(0, 256)[None, :]
        first = tl.min(tl.where(ab == amax[:, None], idx, 256), axis=1)
        mx = tl.sum(tl.where(idx == first[:, None], yb, 0.0), axis=1).to(tl.float32)
        zero = mx == 0.0
        safe = tl.where(zero, 1.0, mx)
        iscale = tl.where(zero, 0.0, tl.math.div_rn(safe * 0.0 - 127.0, safe))
        prod = (yb * iscale[:, None].to(yb.dtype)).to(tl.float32)
        q = tl.minimum(_rint(prod), 127.0).to(tl.int32)
        q = tl.where(zero[:, None], 0, q)
        isafe = tl.where(zero, 1.0, iscale)
        d = tl.where(zero, 0.0, tl.math.div_rn(isafe * 0.0 + 1.0, isafe))
        bidx = tl.arange(0, BLOCK // 256)
        bmask = bidx < NB
        tl.store(q_ptr + m * K + offs, tl.reshape(q, (BLOCK,)).to(tl.int8), mask=mask)
        tl.store(scale_ptr + m * NB + bidx, d, mask=bmask)
        tl.store(sum_ptr + m * NB + bidx, tl.sum(q, axis=1), mask=bmask)


# ------------------------------------------------------------------------------------------- ternary GEMV


@triton.jit
def ternary_gemv_kernel(
    q_ptr,  # int8 activations [M, K] (read as int32 words when USE_DP4A)
    w_ptr,  # uint8 codes [N, K/4] (read as int32 words when USE_DP4A)
    rscale_ptr,  # float32 [N]
    bscale_ptr,  # float32 [N, K/256] (TQ weights) or dummy
    ascale_ptr,  # float32 [M, NBA]: per-token s, or block256 d
    oscale_ptr,  # float32 [N] or dummy
    res_ptr,  # residual [M, N] or dummy
    out_ptr,  # [M, N] activations dtype, or int32 when RAW
    N,
    K: tl.constexpr,  # constexpr: a model has two or three distinct K, and a known trip count unrolls
    NBA,
    BLOCKS: tl.constexpr,  # float accumulation per 256-element block (block256 profile or TQ weights)
    A_BLOCK256: tl.constexpr,
    HAS_BSCALE: tl.constexpr,
    HAS_OSCALE: tl.constexpr,
    HAS_RES: tl.constexpr,
    RAW: tl.constexpr,  # store the exact integer Σ value·q (tests), no epilogue
    USE_DP4A: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,  # elements per step; 256 when BLOCKS
):
    """out[m, n] = epilogue(Σ_k value[n, k] · q[m, k]) for one activation row m and BN weight rows per program."""
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    rmask = rows < N
    if USE_DP4A:
        KW = K // 16  # int32 words per weight row
        i = tl.arange(0, BK // 16)
        # activation word for (word i, shift j): element 128*(i//8) + 32j + 4*(i%8) → word 32*(i//8) + 8j + i%8
        xw = 32 * (i // 8) + (i % 8)
        wrow = w_ptr + rows[:, None].to(tl.int64) * KW
        qrow = q_ptr + m * (K // 4)
    else:
        KW = K // 4
        i = tl.arange(0, BK // 4)
        xw = 128 * (i // 32) + (i % 32)
        wrow = w_ptr + rows[:, None].to(tl.int64) * KW
        qrow = q_ptr + m * K
    if BLOCKS:
        facc = tl.zeros([BN], dtype=tl.float32)
        iraw = tl.zeros([BN], dtype=tl.int32)
    else:
        acc = tl.zeros([BN, BK // 16 if USE_DP4A else BK // 4], dtype=tl.int32)
    for k0 in range(0, K, BK):
        if USE_DP4A:
            kw = k0 // 16 + i
            kmask = kw < KW
            w = tl.load(wrow + kw[None, :], mask=rmask[:, None] & kmask[None, :], other=0x01010101)
            part = tl.zeros([BN, BK // 16], dtype=tl.int32)
            asum = tl.zeros([BK // 16], dtype=tl.int32)
            for j in tl.static_range(4):
                xj = tl.load(qrow + k0 // 4 + xw + 8 * j, mask=kmask, other=0)
                part = _dp4a_us((w >> (2 * j)) & 0x03030303, xj[None, :], part)
                asum = _dp4a_us(tl.full(xj.shape, 0x01010101, tl.int32), xj, asum)
            # codes are value + 1: subtract Σq once per activation word (exact in int32)
            part = part - asum[None, :]
        else:
            kb = k0 // 4 + i
            kmask = kb < KW
            w = tl.load(wrow + kb[None, :], mask=rmask[:, None] & kmask[None, :], other=1).to(tl.int32)
            part = tl.zeros([BN, BK // 4], dtype=tl.int32)
            for j in tl.static_range(4):
                xj = tl.load(qrow + k0 + xw + 32 * j, mask=kmask, other=0).to(tl.int32)
                part += (((w >> (2 * j)) & 3) - 1) * xj[None, :]
        if BLOCKS:
            sumi = tl.sum(part, axis=1)
            if RAW:
                iraw += sumi
            else:
                b = k0 // 256
                if A_BLOCK256:
                    da = tl.load(ascale_ptr + m * NBA + b)
                    if HAS_BSCALE:
                        dw = tl.load(bscale_ptr + rows * (K // 256) + b, mask=rmask, other=0.0)
                        factor = da * dw
                    else:
                        factor = tl.zeros([BN], dtype=tl.float32) + da
                else:
                    factor = tl.load(bscale_ptr + rows * (K // 256) + b, mask=rmask, other=0.0)
                facc += sumi.to(tl.float32) * factor
        else:
            acc += part
    if BLOCKS:
        if RAW:
            tl.store(out_ptr + m * N + rows, iraw, mask=rmask)
            return
        y = facc
        if not A_BLOCK256:
            s = tl.load(ascale_ptr + m * NBA)
            y = tl.math.div_rn(y, tl.zeros([BN], dtype=tl.float32) + s)
    else:
        isum = tl.sum(acc, axis=1)
        if RAW:
            tl.store(out_ptr + m * N + rows, isum, mask=rmask)
            return
        y = isum.to(tl.float32)
        if not A_BLOCK256:
            s = tl.load(ascale_ptr + m * NBA)
            y = tl.math.div_rn(y, tl.zeros([BN], dtype=tl.float32) + s)
    y = y * tl.load(rscale_ptr + rows, mask=rmask, other=0.0)
    if HAS_OSCALE:
        y = y * tl.load(oscale_ptr + rows, mask=rmask, other=0.0)
    out_dtype = out_ptr.dtype.element_ty
    y = y.to(out_dtype)
    if HAS_RES:
        y = tl.load(res_ptr + m * N + rows, mask=rmask, other=0.0) + y
    tl.store(out_ptr + m * N + rows, y, mask=rmask)


# ------------------------------------------------------------------------------------------- ternary GEMM


@triton.jit
def ternary_gemm_kernel(
    q_ptr,  # int8 [M, K]
    w_ptr,  # uint8 codes [N, K/4]
    rscale_ptr,
    bscale_ptr,
    ascale_ptr,
    oscale_ptr,
    res_ptr,
    out_ptr,
    M,
    N,
    K: tl.constexpr,
    NBA,
    BLOCKS: tl.constexpr,
    A_BLOCK256: tl.constexpr,
    HAS_BSCALE: tl.constexpr,
    HAS_OSCALE: tl.constexpr,
    HAS_RES: tl.constexpr,
    RAW: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,  # 256 when BLOCKS
):
    """Prefill: a BM×BN output tile per program, int8 × ternary on the tensor cores (`tl.dot`, int32 accumulate).

    Each byte shift j of a K-tile is a [BN, BK/4] int8 matrix of values; it multiplies the activation columns
    128g + 32j + m, loaded straight from the int8 rows.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    mmask = rm < M
    nmask = rn < N
    i = tl.arange(0, BK // 4)
    xoff = 128 * (i // 32) + (i % 32)
    KB = K // 4
    wrow = w_ptr + rn[:, None].to(tl.int64) * KB
    qrow = q_ptr + rm[:, None].to(tl.int64) * K
    acc = tl.zeros([BM, BN], dtype=tl.int32)
    facc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kb = k0 // 4 + i
        kmask = kb < KB
        w = tl.load(wrow + kb[None, :], mask=nmask[:, None] & kmask[None, :], other=1)
        part = tl.zeros([BM, BN], dtype=tl.int32)
        for j in tl.static_range(4):
            wj = ((w >> (2 * j)) & 3).to(tl.int8) - 1
            xj = tl.load(qrow + (k0 + xoff + 32 * j)[None, :], mask=mmask[:, None] & kmask[None, :], other=0)
            part = tl.dot(xj, tl.trans(wj), part, out_dtype=tl.int32)
        if BLOCKS and not RAW:
            b = k0 // 256
            if A_BLOCK256:
                da = tl.load(ascale_ptr + rm * NBA + b, mask=mmask, other=0.0)
                if HAS_BSCALE:
                    dw = tl.load(bscale_ptr + rn * (K // 256) + b, mask=nmask, other=0.0)
                    factor = da[:, None] * dw[None, :]
                else:
                    factor = da[:, None] + tl.zeros([BM, BN], dtype=tl.float32)
            else:
                dw = tl.load(bscale_ptr + rn * (K // 256) + b, mask=nmask, other=0.0)
                factor = dw[None, :] + tl.zeros([BM, BN], dtype=tl.float32)
            facc += part.to(tl.float32) * factor
        else:
            acc += part
    omask = mmask[:, None] & nmask[None, :]
    optr = out_ptr + rm[:, None] * N + rn[None, :]
    if RAW:
        tl.store(optr, acc, mask=omask)
        return
    if BLOCKS:
        y = facc
    else:
        y = acc.to(tl.float32)
    if not A_BLOCK256:
        s = tl.load(ascale_ptr + rm * NBA, mask=mmask, other=1.0)
        y = tl.math.div_rn(y, s[:, None] + tl.zeros([BM, BN], dtype=tl.float32))
    y = y * tl.load(rscale_ptr + rn, mask=nmask, other=0.0)[None, :]
    if HAS_OSCALE:
        y = y * tl.load(oscale_ptr + rn, mask=nmask, other=0.0)[None, :]
    y = y.to(out_ptr.dtype.element_ty)
    if HAS_RES:
        y = tl.load(res_ptr + rm[:, None] * N + rn[None, :], mask=omask, other=0.0) + y
    tl.store(optr, y, mask=omask)


# ------------------------------------------------------------------------------------------- float GEMV (lm_head)


@triton.jit
def float_gemv_kernel(x_ptr, w_ptr, out_ptr, N, K: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """out[m, n] = Σ_k float(W[n, k]) · x[m, k] with the accumulator in x's dtype (f16 weights widened exactly)."""
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    rmask = rows < N
    kk = tl.arange(0, BK)
    wrow = w_ptr + rows[:, None].to(tl.int64) * K
    xdt = x_ptr.dtype.element_ty
    acc = tl.zeros([BN, BK], dtype=xdt)
    for k0 in range(0, K, BK):
        kmask = (k0 + kk) < K
        w = tl.load(wrow + (k0 + kk)[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0).to(xdt)
        x = tl.load(x_ptr + m * K + k0 + kk, mask=kmask, other=0.0)
        acc += w * x[None, :]
    tl.store(out_ptr + m * N + rows, tl.sum(acc, axis=1), mask=rmask)


# ------------------------------------------------------------------------------------------- RoPE + KV cache


@triton.jit
def rope_kv_kernel(
    qkv_ptr,  # [T, (H + 2*HKV) * D] projections of T tokens
    pos_ptr,  # int32 [T] absolute positions
    cos_ptr,  # [n_ctx, D/2]
    sin_ptr,
    q_out_ptr,  # [T, H, D]
    k_cache_ptr,  # [n_ctx, HKV, D] (this layer)
    v_cache_ptr,
    H,
    HKV,
    D: tl.constexpr,
    HALF_P2: tl.constexpr,
):
    """NEOX RoPE (rotate-half) on q and k of one head of one token; k and v land in the cache at their position.

    ggml's NEOX rotation: out[i] = x[i]·cos − x[i+D/2]·sin, out[i+D/2] = x[i]·sin + x[i+D/2]·cos, with the
    cos/sin tables computed once on the host by the same function the CPU engine uses.
    """
    h = tl.program_id(0)
    t = tl.program_id(1)
    half = D // 2
    pos = tl.load(pos_ptr + t)
    i = tl.arange(0, HALF_P2)
    mask = i < half
    width = (H + 2 * HKV) * D
    c = tl.load(cos_ptr + pos * half + i, mask=mask, other=0.0)
    s = tl.load(sin_ptr + pos * half + i, mask=mask, other=0.0)
    src = qkv_ptr + t * width + h * D
    x0 = tl.load(src + i, mask=mask, other=0.0)
    x1 = tl.load(src + half + i, mask=mask, other=0.0)
    o0 = x0 * c - x1 * s
    o1 = x0 * s + x1 * c
    if h < H:
        qdst = q_out_ptr + (t * H + h) * D
        tl.store(qdst + i, o0, mask=mask)
        tl.store(qdst + half + i, o1, mask=mask)
    else:
        kh = h - H
        kdst = k_cache_ptr + (pos * HKV + kh) * D
        tl.store(kdst + i, o0.to(kdst.dtype.element_ty), mask=mask)
        tl.store(kdst + half + i, o1.to(kdst.dtype.element_ty), mask=mask)
        vsrc = qkv_ptr + t * width + (H + HKV + kh) * D
        vdst = v_cache_ptr + (pos * HKV + kh) * D
        vt = vdst.dtype.element_ty
        tl.store(vdst + i, tl.load(vsrc + i, mask=mask, other=0.0).to(vt), mask=mask)
        tl.store(vdst + half + i, tl.load(vsrc + half + i, mask=mask, other=0.0).to(vt), mask=mask)


# ------------------------------------------------------------------------------------------- decode attention


@triton.jit
def decode_attention_kernel(
    q_ptr,  # [H, D] one query token
    k_cache_ptr,  # [n_ctx, HKV, D] (cache dtype)
    v_cache_ptr,
    pos_ptr,  # int32 [1]: position of the query; keys 0..pos are attended
    out_ptr,  # [H, D]
    HKV,
    GROUP,
    D: tl.constexpr,
    BT: tl.constexpr,
    PRECISE: tl.constexpr,
):
    """Softmax attention of one query head over the cached keys, in `attention_ref`'s order: scores
    (q·k)·(1/√D) in the query dtype, max, e = exp(s − max), inv = 1/Σe, P = e·inv, out = Σ P·v (three passes
    over the keys rather than an online softmax). The length comes from device memory, so one CUDA graph serves
    every decode position.
    """
    h = tl.program_id(0)
    kvh = h // GROUP
    n = tl.load(pos_ptr) + 1
    d = tl.arange(0, D)
    tt = tl.arange(0, BT)
    q = tl.load(q_ptr + h * D + d)
    dt = q.dtype
    scale = (1.0 / tl.sqrt(tl.full([], D, tl.float64))).to(dt)  # numpy: dt.type(1.0 / np.sqrt(D))
    mx = tl.full([BT], float("-inf"), dtype=dt)
    for t0 in range(0, n, BT):
        t = t0 + tt
        tmask = t < n
        k = tl.load(k_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        s = tl.sum(k.to(dt) * q[None, :], axis=1) * scale
        mx = tl.maximum(mx, tl.where(tmask, s, float("-inf")))
    m = tl.max(mx, axis=0)
    lsum = tl.zeros([BT], dtype=tl.float64)
    for t0 in range(0, n, BT):
        t = t0 + tt
        tmask = t < n
        k = tl.load(k_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        s = tl.sum(k.to(dt) * q[None, :], axis=1) * scale
        lsum += tl.where(tmask, _exp(s - m, PRECISE), 0.0).to(tl.float64)
    total = tl.sum(lsum, axis=0)
    inv = (1.0 / total).to(dt)
    acc = tl.zeros([BT, D], dtype=tl.float64)
    for t0 in range(0, n, BT):
        t = t0 + tt
        tmask = t < n
        k = tl.load(k_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        s = tl.sum(k.to(dt) * q[None, :], axis=1) * scale
        p = tl.where(tmask, _exp(s - m, PRECISE) * inv, 0.0)
        v = tl.load(v_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        acc += p.to(tl.float64)[:, None] * v.to(tl.float64)
    tl.store(out_ptr + h * D + d, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty))


@triton.jit
def decode_attention_split_kernel(
    q_ptr,  # [H, D] one query token
    k_cache_ptr,  # [n_ctx, HKV, D] (cache dtype)
    v_cache_ptr,
    pos_ptr,  # int32 [1]: keys 0..pos are attended
    m_ptr,  # [H, S] partial max (query dtype)
    l_ptr,  # [H, S] partial Σ exp(s − m) (float64)
    acc_ptr,  # [H, S, D] partial Σ exp(s − m)·v (float64)
    HKV,
    GROUP,
    S,
    D: tl.constexpr,
    BT: tl.constexpr,
    PRECISE: tl.constexpr,
):
    """Split-K decode attention, part 1: program (h, sp) covers one of S contiguous chunks of the n = pos + 1
    cached positions (chunk size computed on the device, so one CUDA graph serves every length).

    The single-program version walks all keys three times on one SM per head; for batch-1 decode that serial
    chain, not bandwidth, was the cost. Scores are (q·k)·(1/√D) in the query dtype as in `attention_ref`.
    """
    h = tl.program_id(0)
    sp = tl.program_id(1)
    kvh = h // GROUP
    n = tl.load(pos_ptr) + 1
    chunk = (n + S - 1) // S
    lo = sp * chunk
    hi = tl.minimum(lo + chunk, n)
    d = tl.arange(0, D)
    tt = tl.arange(0, BT)
    q = tl.load(q_ptr + h * D + d)
    dt = q.dtype
    scale = (1.0 / tl.sqrt(tl.full([], D, tl.float64))).to(dt)
    mx = tl.full([BT], float("-inf"), dtype=dt)
    for t0 in range(lo, hi, BT):
        t = t0 + tt
        tmask = t < hi
        k = tl.load(k_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        s = tl.sum(k.to(dt) * q[None, :], axis=1) * scale
        mx = tl.maximum(mx, tl.where(tmask, s, float("-inf")))
    m = tl.max(mx, axis=0)
    lsum = tl.zeros([BT], dtype=tl.float64)
    acc = tl.zeros([BT, D], dtype=tl.float64)
    for t0 in range(lo, hi, BT):
        t = t0 + tt
        tmask = t < hi
        k = tl.load(k_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        s = tl.sum(k.to(dt) * q[None, :], axis=1) * scale
        e = tl.where(tmask, _exp(s - m, PRECISE), 0.0).to(tl.float64)
        v = tl.load(v_cache_ptr + (t[:, None] * HKV + kvh) * D + d[None, :], mask=tmask[:, None], other=0.0)
        lsum += e
        acc += e[:, None] * v.to(tl.float64)
    tl.store(m_ptr + h * S + sp, m)
    tl.store(l_ptr + h * S + sp, tl.sum(lsum, axis=0))
    tl.store(acc_ptr + (h * S + sp) * D + d, tl.sum(acc, axis=0))


@triton.jit
def decode_attention_combine_kernel(
    m_ptr, l_ptr, acc_ptr, out_ptr, S, D: tl.constexpr, S_P2: tl.constexpr, PRECISE: tl.constexpr
):
    """Split-K decode attention, part 2: out = Σ_s acc_s·e^(m_s − M) / Σ_s l_s·e^(m_s − M), M = max_s m_s."""
    h = tl.program_id(0)
    sidx = tl.arange(0, S_P2)
    smask = sidx < S
    d = tl.arange(0, D)
    ms = tl.load(m_ptr + h * S + sidx, mask=smask, other=float("-inf"))
    big = tl.max(ms, axis=0)
    live = smask & (ms > float("-inf"))
    w = tl.where(live, _exp(tl.where(live, ms - big, 0.0), PRECISE), 0.0).to(tl.float64)
    ls = tl.load(l_ptr + h * S + sidx, mask=smask, other=0.0)
    total = tl.sum(ls * w, axis=0)
    accs = tl.load(acc_ptr + (h * S + sidx)[:, None] * D + d[None, :], mask=smask[:, None], other=0.0)
    o = tl.sum(accs * w[:, None], axis=0)
    o = o * (1.0 / total)
    tl.store(out_ptr + h * D + d, o.to(out_ptr.dtype.element_ty))


__all__ = [
    "decode_attention_combine_kernel",
    "decode_attention_kernel",
    "decode_attention_split_kernel",
    "float_gemv_kernel",
    "norm_quant_kernel",
    "rope_kv_kernel",
    "ternary_gemm_kernel",
    "ternary_gemv_kernel",
    "triton",
]
