"""GPU benchmark: ternary kernels vs bf16 cuBLAS at the BitNet-b1.58-2B-4T shapes, and end-to-end decode/prefill.

    python bench/gpu.py [--json bench/results/gpu-h200.json] [--md bench/results/gpu-h200.md] [--quick]

Method (see docs/gpu.md):
- every kernel is timed as a CUDA graph of R launches over R different weight copies (R chosen so the copies
  exceed 2x the L2 cache, so each launch streams its weights from HBM like a real decode step), replayed many
  times after warm-up; the per-launch time is the median replay time / R (CUDA events). The bf16 baseline is
  `torch.matmul` (cuBLAS) timed the same way on the same GPU;
- GEMV configs are tuned per shape first (a small sweep, same timing) and the best is used everywhere after;
- end to end: a model with the exact 2B-4T shapes (random ternary codes, F16 tied embeddings; no 1.2 GB file
  shipped) decodes greedily with CUDA graphs; tok/s is tokens / elapsed (events), compared with the HBM roofline
  `achieved copy bandwidth / bytes read per token`;
- HBM copy bandwidth is measured, not assumed: a 4 GiB device-to-device copy, counting bytes read + written.
Progress goes to stderr, the table to stdout, full numbers to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitnet.kernels.gpu import ops
from bitnet.kernels.gpu.ops import GpuTernary, QuantAct

SHAPES = [  # (N, K, role) of BitNet-b1.58-2B-4T
    (2560, 2560, "attn_q / attn_output"),
    (640, 2560, "attn_k / attn_v"),
    (6912, 2560, "ffn_gate / ffn_up"),
    (2560, 6912, "ffn_down"),
]
#: the launches the engine really makes: q/k/v and gate/up stacked into one matrix each
FUSED_SHAPES = [
    (3840, 2560, "attn_q+k+v (one launch in the engine)"),
    (13824, 2560, "ffn_gate+up (one launch in the engine)"),
]
LMHEAD = (128256, 2560, "lm_head (F16, tied)")
HBM_SPEC_TBS = 4.8


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def l2_bytes() -> int:
    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20))


def time_graph(fns: list, reps: int = 50, warmup: int = 3) -> float:
    """Median seconds of one replay of a CUDA graph that calls every fn once, divided by len(fns)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(warmup):
        g.replay()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times) / len(fns)


def copies_for(nbytes: int) -> int:
    return int(max(4, min(400, -(-3 * l2_bytes() // max(nbytes, 1)))))


def random_ternary(n: int, k: int, dev: str = "cuda", blocks: bool = False) -> GpuTernary:
    f = torch.randint(0, 3, (n, k // 4, 4), dtype=torch.uint8, device=dev)
    codes = (f[..., 0] | (f[..., 1] << 2) | (f[..., 2] << 4) | (f[..., 3] << 6)).contiguous()
    bs = torch.rand((n, k // 256), device=dev) * 0.1 + 0.01 if blocks else None
    return GpuTernary(n, k, "tq2_0" if blocks else "i2_s", codes, codes.view(torch.int32),
                      torch.full((n,), 0.05, device=dev), bs, None, name=f"rand{n}x{k}")  # fmt: skip


def random_act(m: int, k: int, profile: str = "per-token", dev: str = "cuda") -> QuantAct:
    x = torch.randn((m, k), device=dev, dtype=torch.float32)
    return ops.norm_quantize(x, profile)


def copy_bandwidth() -> dict[str, Any]:
    """Device-to-device copy (read + write counted) and a read-only pass (sum), 4 GiB of float32 each."""
    n = 4 * 2**30
    src = torch.randn(n // 4, device="cuda")
    dst = torch.empty_like(src)
    out = torch.empty((), device="cuda")
    for _ in range(5):  # let the clocks ramp up
        dst.copy_(src)
    t = time_graph([lambda: dst.copy_(src)], reps=30)
    tr = time_graph([lambda: torch.sum(src, dim=0, out=out)], reps=30)
    return {"bytes_per_copy": n, "seconds": t, "tb_per_s_read_plus_write": 2 * n / t / 1e12,
            "read_only_sum_tb_per_s": n / tr / 1e12}  # fmt: skip


def bench_gemv(quick: bool) -> tuple[list[dict[str, Any]], dict]:
    rows = []
    tuned: dict = {}
    for n, k, role in SHAPES + FUSED_SHAPES:
        tern_bytes = n * k // 4 + n * 4
        r = copies_for(tern_bytes)
        ws = [random_ternary(n, k) for _ in range(r)]
        qa = random_act(1, k)
        cands = ops.gemv_candidates(n, k, False)
        if quick:
            cands = cands[:4]
        best = None
        for cfg in cands:
            try:
                t = time_graph(
                    [lambda w=w, c=cfg, qa=qa: ops.ternary_matmul(qa, w, gemv_config=c) for w in ws], reps=10
                )
            except Exception as e:  # a config that does not compile for this shape is skipped, not fatal
                log(f"  config {cfg} failed: {type(e).__name__}: {e}")
                continue
            if best is None or t < best[0]:
                best = (t, cfg)
        assert best is not None
        ops._GEMV_TUNED[(n, k, False)] = best[1]
        tuned[f"{n}x{k}"] = best[1].__dict__
        t_tern = time_graph([lambda w=w, qa=qa: ops.ternary_matmul(qa, w) for w in ws])
        t_tern2 = time_graph([lambda w=w, qa=qa: ops.ternary_matmul(qa, w) for w in ws])
        t_plain = time_graph(
            [lambda w=w, qa=qa: ops.ternary_matmul(qa, w, use_dp4a=False) for w in ws], reps=20
        )
        del ws
        bf_bytes = n * k * 2
        rb = copies_for(bf_bytes)
        wb = [torch.randn((n, k), device="cuda", dtype=torch.bfloat16) for _ in range(rb)]
        xb = torch.randn((1, k), device="cuda", dtype=torch.bfloat16)
        t_bf = time_graph([lambda w=w, xb=xb: torch.matmul(xb, w.T) for w in wb])
        t_bf2 = time_graph([lambda w=w, xb=xb: torch.matmul(xb, w.T) for w in wb])
        del wb
        t_t, t_b = min(t_tern, t_tern2), min(t_bf, t_bf2)
        rows.append({
            "shape": f"{n}x{k}", "role": role, "ternary_us": t_t * 1e6, "ternary_us_repeat": max(t_tern, t_tern2) * 1e6,
            "ternary_no_dp4a_us": t_plain * 1e6, "bf16_cublas_us": t_b * 1e6,
            "bf16_us_repeat": max(t_bf, t_bf2) * 1e6, "speedup": t_b / t_t,
            "ternary_gb_s": tern_bytes / t_t / 1e9, "bf16_gb_s": bf_bytes / t_b / 1e9, "config": best[1].__dict__,
            "copies_rotated": r,
        })  # fmt: skip
        log(
            f"gemv {n}x{k}: ternary {t_t * 1e6:.2f} us, bf16 {t_b * 1e6:.2f} us, x{t_b / t_t:.2f} ({best[1]})"
        )
    # lm_head: F16 table, our GEMV (f32 and f64 activations) vs cuBLAS bf16 and f16
    n, k, role = LMHEAD
    w16 = torch.randn((n, k), device="cuda", dtype=torch.float16)
    x32 = torch.randn((1, k), device="cuda", dtype=torch.float32)
    x64 = x32.double()
    wbf = w16.to(torch.bfloat16)
    xbf, xh = x32.to(torch.bfloat16), x32.half()
    t_f32 = time_graph([lambda: ops.float_gemv(x32, w16, tag="f16")] * 4)
    t_f64 = time_graph([lambda: ops.float_gemv(x64, w16, tag="f16")] * 4)
    t_bf = time_graph([lambda: torch.matmul(xbf, wbf.T)] * 4)
    t_h = time_graph([lambda: torch.matmul(xh, w16.T)] * 4)
    rows.append({
        "shape": f"{n}x{k}", "role": role, "f16_triton_f32acc_us": t_f32 * 1e6, "f16_triton_f64acc_us": t_f64 * 1e6,
        "bf16_cublas_us": t_bf * 1e6, "f16_cublas_us": t_h * 1e6, "speedup": t_bf / t_f32,
        "gb_s": n * k * 2 / t_f32 / 1e9,
        "note": "same bytes as bf16 (16-bit table); 657 MB > L2, so no rotation needed",
    })  # fmt: skip
    log(
        f"lm_head: triton f32 {t_f32 * 1e6:.1f} us, f64 {t_f64 * 1e6:.1f} us, cuBLAS bf16 {t_bf * 1e6:.1f} us"
    )
    return rows, tuned


def bench_gemm(m: int) -> list[dict[str, Any]]:
    rows = []
    for n, k, role in SHAPES + FUSED_SHAPES:
        w = random_ternary(n, k)
        qa = random_act(m, k)
        wb = torch.randn((n, k), device="cuda", dtype=torch.bfloat16)
        xb = torch.randn((m, k), device="cuda", dtype=torch.bfloat16)
        best = None
        for cfg in ops.gemm_candidates(False):
            try:
                t = time_graph(
                    [lambda c=cfg, qa=qa, w=w: ops.ternary_matmul(qa, w, gemm_config=c)] * 4, reps=5
                )
            except Exception as e:  # e.g. out of shared memory for a large tile: skip that config
                log(f"  gemm config {cfg} failed: {type(e).__name__}")
                continue
            if best is None or t < best[0]:
                best = (t, cfg)
        assert best is not None
        ops._GEMM_TUNED[(n, k, False)] = best[1]
        t_t = time_graph([lambda qa=qa, w=w: ops.ternary_matmul(qa, w)] * 8, reps=20)
        t_b = time_graph([lambda xb=xb, wb=wb: torch.matmul(xb, wb.T)] * 8, reps=20)
        flops = 2 * m * n * k
        rows.append({"shape": f"{m}x{n}x{k}", "role": role, "ternary_us": t_t * 1e6, "bf16_cublas_us": t_b * 1e6,
                     "speedup": t_b / t_t, "ternary_tops": flops / t_t / 1e12, "bf16_tflops": flops / t_b / 1e12,
                     "config": best[1].__dict__})  # fmt: skip
        log(f"gemm M={m} {n}x{k}: ternary {t_t * 1e6:.1f} us, bf16 {t_b * 1e6:.1f} us")
    return rows


def bench_norm_quant() -> list[dict[str, Any]]:
    """The fused (GLU +) RMSNorm + int8 kernel at decode shapes, over num_warps; the best is kept for e2e."""
    rows = []
    for k, glu in ((2560, None), (6912, "relu2")):
        x = torch.randn((1, 2 * k if glu else k), device="cuda", dtype=torch.float64)
        w = torch.rand(k, device="cuda")
        block = 1 << (k - 1).bit_length()
        per = {}
        for nw in (4, 8, 16, 32):
            ops._NORM_WARPS[block] = nw
            per[nw] = time_graph(
                [lambda x=x, w=w, glu=glu: ops.norm_quantize(x, "per-token", w, 1e-5, glu=glu)] * 20
            )
        best = min(per, key=per.get)
        ops._NORM_WARPS[block] = best
        rows.append({"what": f"{'relu2-GLU + ' if glu else ''}RMSNorm + per-token int8, K={k}, f64 in",
                     "us": per[best] * 1e6, "num_warps": best, "us_by_warps": {w: t * 1e6 for w, t in per.items()}})  # fmt: skip
        log(f"norm_quant K={k} glu={glu}: " + ", ".join(f"w{w}={t * 1e6:.2f}us" for w, t in per.items()))
    return rows


def bench_attention() -> list[dict[str, Any]]:
    """Decode attention (2B-4T heads: 20 q / 5 kv, D=128, f32 cache) at several context lengths."""
    rows = []
    h, hkv, d, n_ctx = 20, 5, 128, 4096
    q = torch.randn((h, d), device="cuda", dtype=torch.float64)
    kc = torch.randn((n_ctx, hkv, d), device="cuda")
    vc = torch.randn((n_ctx, hkv, d), device="cuda")
    out = torch.empty((h, d), device="cuda", dtype=torch.float64)
    for n in (128, 512, 2048):
        pos = torch.tensor([n - 1], dtype=torch.int32, device="cuda")
        r: dict[str, Any] = {"context": n}
        for split in (False, True):
            r["split_us" if split else "single_us"] = 1e6 * time_graph(
                [lambda pos=pos, split=split: ops.decode_attention(q, kc, vc, pos, out, hkv, split=split)]
                * 10
            )
        rows.append(r)
        log(f"attention n={n}: single {r['single_us']:.1f} us, split-K {r['split_us']:.1f} us")
    return rows


def synthetic_2b_engine(n_ctx: int) -> Any:
    """A GpuEngine with the exact 2B-4T shapes: random codes and scales, random F16 tied embeddings."""
    from bitnet.formats.fixtures import fixture_config
    from bitnet.model.gpu import GpuEngine, GpuLayer, GpuLinear, GpuWeights

    cfg = fixture_config("2b", "bitnet-b1.58")
    h, f = cfg.hidden_size, cfg.ffn_size
    qkv_n = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    torch.manual_seed(0)
    layers = []
    for _ in range(cfg.n_layers):
        norm = lambda n: torch.rand(n, device="cuda") * 0.5 + 0.75  # noqa: E731
        layers.append(GpuLayer(norm(h), GpuLinear(random_ternary(qkv_n, h)), norm(h), GpuLinear(random_ternary(h, h)),
                               norm(h), GpuLinear(random_ternary(2 * f, h)), norm(f),
                               GpuLinear(random_ternary(h, f))))  # fmt: skip
    for (
        lay
    ) in layers:  # realistic magnitudes: scale ≈ mean|W| of a trained ternary layer keeps activations sane
        for lin in (lay.wqkv, lay.wo, lay.wgu, lay.wdown):
            lin.ternary.row_scale.fill_(1.0 / np.sqrt(lin.ternary.n_in))
    embd = (torch.randn((cfg.vocab_size, h), device="cuda") * 0.02).half()
    gw = GpuWeights(embd, layers, torch.ones(h, device="cuda"), embd, {"i2_s": 7 * cfg.n_layers})
    return GpuEngine(cfg, gw, None, n_ctx=n_ctx), cfg


def bench_e2e(bw_tbs: float, decode_tokens: int, prefill_tokens: int) -> dict[str, Any]:
    eng, cfg = synthetic_2b_engine(n_ctx=max(1024, prefill_tokens + decode_tokens + 8))
    bytes_tok = eng.weights.bytes_per_token()
    out: dict[str, Any] = {"model": "2B-4T shapes (random ternary codes, F16 tied embeddings)",
                           "weight_bytes_read_per_token": bytes_tok}  # fmt: skip
    # prefill (batched), after a warm-up run that compiles every kernel for these shapes
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, size=prefill_tokens)
    for label, n in (("prefill", prefill_tokens), ("prefill_128", 128)):
        eng.reset()
        eng.prefill_device(prompt[:n])
        torch.cuda.synchronize()
        ts = []
        for _ in range(3):
            eng.reset()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            eng.prefill_device(prompt[:n])
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) / 1e3)
        out[f"{label}_tokens"] = n
        out[f"{label}_tok_s"] = n / statistics.median(ts)
        log(
            f"{label}: {n} tokens in {statistics.median(ts) * 1e3:.1f} ms -> {out[f'{label}_tok_s']:.0f} tok/s"
        )
    # decode with CUDA graphs, context = 1 prompt token + generated tokens
    results = {}
    for graphs in (True, False):
        eng.use_graphs = graphs
        n = decode_tokens if graphs else min(64, decode_tokens)
        eng.reset()
        eng.prefill_device(prompt[:1])
        eng.greedy_device(int(prompt[1]), 8)  # warm-up (and graph capture)
        torch.cuda.synchronize()
        eng.reset()
        eng.prefill_device(prompt[:1])
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        a.record()
        toks = eng.greedy_device(int(prompt[1]), n)
        b.record()
        b.synchronize()
        wall = time.perf_counter() - t0
        sec = a.elapsed_time(b) / 1e3
        results[graphs] = {"tokens": n, "seconds": sec, "tok_s": n / sec, "wall_tok_s": n / wall,
                           "ms_per_token": sec / n * 1e3, "tokens_finite": bool(torch.isfinite(toks.float()).all())}  # fmt: skip
        log(f"decode graphs={graphs}: {n / sec:.1f} tok/s ({sec / n * 1e3:.3f} ms/token)")
    kv_bytes = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4 * (decode_tokens // 2 + 1)  # mean context
    total = bytes_tok + kv_bytes
    out["decode_cuda_graphs"] = results[True]
    out["decode_eager"] = results[False]
    out["bytes_per_token_incl_mean_kv"] = total
    out["roofline_tok_s_measured_copy_bw"] = bw_tbs * 1e12 / total
    out["roofline_tok_s_spec_4_8_tbs"] = HBM_SPEC_TBS * 1e12 / total
    out["fraction_of_roofline_measured_bw"] = results[True]["tok_s"] / out["roofline_tok_s_measured_copy_bw"]
    out["fraction_of_roofline_spec_bw"] = results[True]["tok_s"] / out["roofline_tok_s_spec_4_8_tbs"]
    out["achieved_tb_s"] = total * results[True]["tok_s"] / 1e12
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def markdown(res: dict[str, Any]) -> str:
    d = res["device"]
    lines = [f"# GPU benchmark: {d['name']} ({d['sms']} SMs), torch {d['torch']}, triton {d['triton']}", "",
             f"HBM bandwidth measured: copy (4 GiB d2d, read+write) {res['copy']['tb_per_s_read_plus_write']:.2f} TB/s, "
             f"read-only sum {res['copy']['read_only_sum_tb_per_s']:.2f} TB/s; ceiling used for the roofline (best "
             f"measured pass): **{res['hbm_measured_tb_s']:.2f} TB/s** (spec 4.8)", "",
             "## Decode GEMV (M=1): ternary I2_S (int8 act, dp4a) vs bf16 cuBLAS, per launch, weights from HBM", "",
             "| N×K | role | ternary µs | bf16 cuBLAS µs | speedup | ternary GB/s | config |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["gemv"]:
        if "ternary_us" in r:
            c = r["config"]
            lines.append(f"| {r['shape']} | {r['role']} | {r['ternary_us']:.2f} | {r['bf16_cublas_us']:.2f} | "
                         f"{r['speedup']:.2f}x | {r['ternary_gb_s']:.0f} | BN={c['bn']} BK={c['bk']} w={c['num_warps']} |")  # fmt: skip
        else:
            lines.append(f"| {r['shape']} | {r['role']} | {r['f16_triton_f32acc_us']:.1f} (F16 GEMV) | "
                         f"{r['bf16_cublas_us']:.1f} | {r['speedup']:.2f}x | {r['gb_s']:.0f} | f64 acc: "
                         f"{r['f16_triton_f64acc_us']:.1f} µs |")  # fmt: skip
    lines += ["", f"## Prefill GEMM (M={res['gemm'][0]['shape'].split('x')[0]})", "",
              "| M×N×K | ternary µs | bf16 cuBLAS µs | speedup | ternary TOPS |", "|---|---|---|---|---|"]  # fmt: skip
    for r in res["gemm"]:
        lines.append(f"| {r['shape']} | {r['ternary_us']:.1f} | {r['bf16_cublas_us']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['ternary_tops']:.1f} |")  # fmt: skip
    e = res.get("e2e")
    if e:
        g = e["decode_cuda_graphs"]
        lines += ["", "## End to end (2B-4T shapes, batch 1, greedy)", "",
                  f"- decode with CUDA graphs: **{g['tok_s']:.1f} tok/s** ({g['ms_per_token']:.3f} ms/token, "
                  f"{g['tokens']} tokens)", f"- decode eager: {e['decode_eager']['tok_s']:.1f} tok/s",
                  f"- prefill: {e['prefill_tok_s']:.0f} tok/s ({e['prefill_tokens']} tokens), "
                  f"{e['prefill_128_tok_s']:.0f} tok/s (128 tokens)",
                  f"- bytes read per token: {e['bytes_per_token_incl_mean_kv'] / 1e6:.1f} MB "
                  f"(weights {e['weight_bytes_read_per_token'] / 1e6:.1f} MB)",
                  f"- roofline at the measured ceiling: {e['roofline_tok_s_measured_copy_bw']:.0f} tok/s → "
                  f"**{100 * e['fraction_of_roofline_measured_bw']:.1f}%**; at 4.8 TB/s spec: "
                  f"{e['roofline_tok_s_spec_4_8_tbs']:.0f} tok/s → {100 * e['fraction_of_roofline_spec_bw']:.1f}%",
                  f"- achieved: {e['achieved_tb_s']:.2f} TB/s"]  # fmt: skip
    norm = "; ".join(f"{r['what']}: {r['us']:.2f} µs (num_warps {r['num_warps']})" for r in res["norm"])
    attn = "; ".join(
        f"ctx {r['context']}: single-kernel {r['single_us']:.1f} µs, split-K {r['split_us']:.1f} µs"
        for r in res["attention"]
    )
    lines += ["", f"Fused RMSNorm+quant kernels: {norm}", "",
              f"Decode attention (20 heads / 5 KV heads, D=128, f32 cache, f64 math): {attn}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer configs and tokens (smoke run)")
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--no-e2e", action="store_true")
    args = ap.parse_args()
    if not ops.cuda_available():
        log("no CUDA device: nothing to benchmark")
        return 2
    props = torch.cuda.get_device_properties(0)
    import triton

    res: dict[str, Any] = {"schema_version": 1, "device": {
        "name": props.name, "sms": props.multi_processor_count, "l2_bytes": l2_bytes(),
        "memory_gib": props.total_memory / 2**30, "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.version.cuda}, "method": __doc__}  # fmt: skip
    res["copy"] = copy_bandwidth()
    log(f"copy bandwidth: {res['copy']['tb_per_s_read_plus_write']:.2f} TB/s")
    res["gemv"], res["tuned_gemv"] = bench_gemv(args.quick)
    res["gemm"] = bench_gemm(512)
    res["norm"] = bench_norm_quant()
    res["attention"] = bench_attention()
    # the HBM ceiling: the best bandwidth any measured pass reached (copy, read-only sum, the lm_head GEMV)
    lm = next(r for r in res["gemv"] if "gb_s" in r)
    res["hbm_measured_tb_s"] = max(res["copy"]["tb_per_s_read_plus_write"], res["copy"]["read_only_sum_tb_per_s"],
                                   lm["gb_s"] / 1e3)  # fmt: skip
    if not args.no_e2e:
        res["e2e"] = bench_e2e(res["hbm_measured_tb_s"], 64 if args.quick else args.decode_tokens,
                               args.prefill_tokens)  # fmt: skip
    md = markdown(res)
    print(md)
    if args.json:
        write_atomic(args.json, json.dumps(res, indent=2, default=str) + "\n")
    if args.md:
        write_atomic(args.md, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
