"""An independent float64 BitNet forward for the engine tests. Shares NO code with `bitnet`.

It reads GGUF files with its own ~60-line parser, decodes I2_S with its own unpacker and TQ1_0/TQ2_0 with
`gguf.quants.dequantize` (the gguf-py package, byte-identical to ggml), quantizes activations with its own code
written from the written definitions (docs/ARCHITECTURE.md), and runs every float op in float64.

Where the engine's documented numerics round (the float32 matmul epilogue, the F32 KV cache) this reference rounds
too: those are part of the definition, and without them a 1e-7 difference would flip int8 codes and the comparison
would measure luck instead of correctness.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from _paths import GOLDEN_DIR

_SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
I2_S = 36


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.take("<Q")
        s = self.buf[self.pos : self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, vt: int):
        if vt in _SCALAR_FMT:
            return self.take(_SCALAR_FMT[vt])
        if vt == 8:
            return self.string()
        if vt == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"bad GGUF value type {vt}")


@dataclass
class RefTensor:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # ggml order
    raw: np.ndarray


def read_gguf(path: str | Path) -> tuple[dict, dict[str, RefTensor]]:
    buf = Path(path).read_bytes()
    r = _Reader(buf)
    assert buf[:4] == b"GGUF"
    r.pos = 4
    r.take("<I")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    md = {}
    for _ in range(n_kv):
        key = r.string()
        md[key] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        shape = tuple(r.take("<Q") for _ in range(nd))
        infos.append((name, r.take("<I"), shape, r.take("<Q")))
    align = md.get("general.alignment", 32)
    base = (r.pos + align - 1) // align * align
    tensors = {}
    for name, t, shape, off in infos:
        n = int(np.prod(shape))
        if t == I2_S:
            nbytes = n // 4 + 32
        else:
            blk, size = GGML_QUANT_SIZES[GGMLQuantizationType(t)]
            nbytes = n // blk * size
        raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=base + off)
        tensors[name] = RefTensor(name, t, shape, raw)
    return md, tensors


def unpack_i2s_values(raw: np.ndarray, n: int) -> tuple[np.ndarray, np.float32]:
    """Ternary values in file order, element by element from the layout description, plus the scale."""
    j = np.arange(n)
    block, within = j // 128, j % 128
    byte = raw[block * 32 + within % 32].astype(np.int64)
    code = (byte >> (6 - 2 * (within // 32))) & 3
    values = np.array([-1, 0, 1, 0], dtype=np.int64)[code]  # code 3 is never written; dequantizes to 0
    scale = np.frombuffer(raw[n // 4 : n // 4 + 4].tobytes(), dtype="<f4")[0]
    return values, np.float32(scale)


@dataclass
class RefLinear:
    kind: str  # "i2_s", "tq", "float"
    n_out: int
    n_in: int
    tern: np.ndarray | None = None  # float64 [n_out, n_in] ternary values (small integers, exact)
    scale: np.float32 | None = None  # i2_s
    d: np.ndarray | None = None  # tq: float32 [n_out, n_in/256]
    w: np.ndarray | None = None  # float64 [n_out, n_in]
    out_scale: np.float32 | None = None


def _linear(t: RefTensor, out_scale: np.float32 | None) -> RefLinear:
    n_in, n_out = t.shape
    if t.ggml_type == I2_S:
        vals, scale = unpack_i2s_values(t.raw, n_in * n_out)
        return RefLinear("i2_s", n_out, n_in, tern=vals.reshape(n_out, n_in).astype(np.float64), scale=scale,
                         out_scale=out_scale)
    qt = GGMLQuantizationType(t.ggml_type)
    if qt in (GGMLQuantizationType.TQ2_0, GGMLQuantizationType.TQ1_0):
        deq = gguf_dequantize(t.raw, qt).reshape(n_out, n_in // 256, 256).astype(np.float64)
        d = np.abs(deq).max(axis=2).astype(np.float32)  # every block of a ternary tensor holds ±d
        with np.errstate(invalid="ignore", divide="ignore"):
            tern = np.where(d[:, :, None] > 0, np.rint(deq / np.where(d > 0, d, 1)[:, :, None]), 0)
        return RefLinear("tq", n_out, n_in, tern=tern.reshape(n_out, n_in).astype(np.float64), d=d,
                         out_scale=out_scale)
    return RefLinear("float", n_out, n_in, w=_floats(t).reshape(n_out, n_in), out_scale=out_scale)


def _floats(t: RefTensor) -> np.ndarray:
    if t.ggml_type == 0:
        return t.raw.view("<f4").astype(np.float64)
    if t.ggml_type == 1:
        return t.raw.view("<f2").astype(np.float64)
    return gguf_dequantize(t.raw, GGMLQuantizationType(t.ggml_type)).astype(np.float64).reshape(-1)


# ------------------------------------------------------------------------------------------------ quantizers
def act_quant_per_token(x: np.ndarray):
    """Per row: s = f32(127 / max(1e-5, max|x|)), q = clamp(rint(f32(x*s)), -128, 127)."""
    s = (127.0 / np.maximum(np.abs(x).max(axis=1), 1e-5)).astype(np.float32)
    q = np.clip(np.rint((x * s[:, None].astype(np.float64)).astype(np.float32)), -128, 127)
    return q.astype(np.int64), s


def idot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer a @ b.T through float64 BLAS (all partial sums are integers far below 2^53)."""
    return np.rint(a.astype(np.float64) @ b.T).astype(np.int64)


def act_quant_q8k(x: np.ndarray):
    """Per 256-block: signed max by |x|; iscale = f32(-127/max); q = min(127, rint(f32(iscale*x))); d = 1/iscale."""
    t, k = x.shape
    blocks = x.reshape(t, k // 256, 256)
    first_max = np.abs(blocks).argmax(axis=2)[:, :, None]
    mx = np.take_along_axis(blocks, first_max, axis=2).astype(np.float32)  # [t, nb, 1]
    safe = np.where(mx == 0, np.float32(1), mx)
    iscale = np.where(mx == 0, np.float32(0), (np.float32(-127.0) / safe).astype(np.float32))
    q = np.minimum(127, np.rint((blocks * iscale.astype(np.float64)).astype(np.float32)))
    d = np.where(mx == 0, np.float32(0), np.float32(1.0) / np.where(iscale == 0, np.float32(1), iscale))
    return q.reshape(t, k).astype(np.int64), d[:, :, 0].astype(np.float32)


def linear(x: np.ndarray, lin: RefLinear, profile: str) -> np.ndarray:
    """y = W x with the engine's documented quantization + float32 epilogue; returns float64 of float32 values."""
    if lin.kind == "float":
        y = (x @ lin.w.T).astype(np.float32)
    elif profile == "per-token":
        q, s = act_quant_per_token(x)
        dot = idot(q, lin.tern)
        if lin.kind == "i2_s":
            y = dot.astype(np.float32) / s[:, None] * lin.scale
        else:
            acc = np.zeros(dot.shape, dtype=np.float32)
            for b in range(lin.n_in // 256):
                sb = idot(q[:, b * 256 : (b + 1) * 256], lin.tern[:, b * 256 : (b + 1) * 256])
                acc = (acc + sb.astype(np.float32) * lin.d[None, :, b]).astype(np.float32)
            y = acc / s[:, None]
    else:
        q, da = act_quant_q8k(x)
        acc = np.zeros((x.shape[0], lin.n_out), dtype=np.float32)
        for b in range(lin.n_in // 256):
            sb = idot(q[:, b * 256 : (b + 1) * 256], lin.tern[:, b * 256 : (b + 1) * 256])
            if lin.kind == "i2_s":
                acc = (acc + sb.astype(np.float32) * da[:, b : b + 1]).astype(np.float32)
            else:
                acc = (acc + sb.astype(np.float32) * (da[:, b : b + 1] * lin.d[None, :, b])).astype(np.float32)
        y = acc * lin.scale if lin.kind == "i2_s" else acc
    y = y.astype(np.float32)
    if lin.out_scale is not None:
        y = (y * lin.out_scale).astype(np.float32)
    return y.astype(np.float64)


# ------------------------------------------------------------------------------------------------ model
class RefModel:
    def __init__(self, path: str | Path, profile: str | None = None, ffn_act: str | None = None,
                 kv_round_f32: bool = True) -> None:
        md, t = read_gguf(path)
        arch = md["general.architecture"]
        g = lambda k, default=None: md.get(f"{arch}.{k}", default)  # noqa: E731
        self.arch = arch
        self.n_layers = g("block_count")
        self.n_heads = g("attention.head_count")
        self.n_kv = g("attention.head_count_kv", self.n_heads)
        self.hidden = g("embedding_length")
        self.head_dim = self.hidden // self.n_heads
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.theta = g("rope.freq_base")
        self.profile = profile or ("block256" if arch == "bitnet" else "per-token")
        self.act = ffn_act or g("hidden_activation") or ("silu" if arch == "bitnet" else "relu2")
        self.kv_round_f32 = kv_round_f32
        vec = lambda name: _floats(t[name]) if name in t else None  # noqa: E731
        scale = lambda name: np.float32(_floats(t[name])[0]) if name in t else None  # noqa: E731
        self.embd = _floats(t["token_embd.weight"]).reshape(-1, self.hidden)
        self.head = _floats(t["output.weight"]).reshape(-1, self.hidden) if "output.weight" in t else self.embd
        self.out_norm = vec("output_norm.weight")
        self.layers = []
        for i in range(self.n_layers):
            p = f"blk.{i}."
            lin = {k: _linear(t[f"{p}{k}.weight"], scale(f"{p}{k}.scale"))
                   for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
            norms = {k: vec(f"{p}{k}.weight") for k in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")}
            self.layers.append((lin, norms))

    def _rms(self, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return y if w is None else y * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        half = self.head_dim // 2
        freq = self.theta ** (-np.arange(half) * 2.0 / self.head_dim)
        ang = pos[:, None, None] * freq[None, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * np.cos(ang) - b * np.sin(ang), a * np.sin(ang) + b * np.cos(ang)], axis=-1)

    def logits(self, tokens) -> np.ndarray:
        """float64 [T, V] logits of every position (causal attention)."""
        tokens = np.asarray(tokens)
        t = len(tokens)
        pos = np.arange(t, dtype=np.float64)
        x = self.embd[tokens]
        hd, grp = self.head_dim, self.n_heads // self.n_kv
        for lin, nm in self.layers:
            n = self._rms(x, nm["attn_norm"])
            q = linear(n, lin["attn_q"], self.profile).reshape(t, self.n_heads, hd)
            k = linear(n, lin["attn_k"], self.profile).reshape(t, self.n_kv, hd)
            v = linear(n, lin["attn_v"], self.profile).reshape(t, self.n_kv, hd)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if self.kv_round_f32:
                k, v = k.astype(np.float32).astype(np.float64), v.astype(np.float32).astype(np.float64)
            out = np.zeros((t, self.n_heads, hd))
            causal = np.tril(np.ones((t, t), dtype=bool))
            for h in range(self.n_heads):
                sc = q[:, h, :] @ k[:, h // grp, :].T / np.sqrt(hd)
                sc = np.where(causal, sc, -np.inf)
                p = np.exp(sc - sc.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                out[:, h, :] = p @ v[:, h // grp, :]
            a = self._rms(out.reshape(t, -1), nm["attn_sub_norm"]) if nm["attn_sub_norm"] is not None \
                else out.reshape(t, -1)
            x = x + linear(a, lin["attn_output"], self.profile)
            m = self._rms(x, nm["ffn_norm"])
            gate = linear(m, lin["ffn_gate"], self.profile)
            up = linear(m, lin["ffn_up"], self.profile)
            act = np.maximum(gate, 0) ** 2 if self.act == "relu2" else gate / (1 + np.exp(-gate))
            f = act * up
            if nm["ffn_sub_norm"] is not None:
                f = self._rms(f, nm["ffn_sub_norm"])
            x = x + linear(f, lin["ffn_down"], self.profile)
        return self._rms(x, self.out_norm) @ self.head.T

    def greedy(self, prompt, n: int) -> list[int]:
        seq = list(prompt)
        out = []
        for _ in range(n):
            nxt = int(np.argmax(self.logits(seq)[-1]))
            out.append(nxt)
            seq.append(nxt)
        return out


def nmse(a: np.ndarray, ref: np.ndarray) -> float:
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(((a - ref) ** 2).sum() / (ref**2).sum())


# ================================================================================================ tests
# The engine against this reference, on the golden bitnet.cpp GGUFs (I2_S and F32, arch bitnet-b1.58) here and on
# generated fixtures (TQ2_0/TQ1_0 arch bitnet, I2_S, F32) in test_engine_fixtures.py.
import pytest  # noqa: E402

GOLDEN = GOLDEN_DIR
PROMPT = [510, 17, 256, 3, 99, 400, 42, 7, 128, 301, 5, 64, 200, 33, 450, 12]


def golden_path(name: str) -> Path:
    p = GOLDEN / name
    if not p.is_file():
        pytest.skip(f"golden file {p} not present")
    return p


@pytest.mark.parametrize("model", ["tiny-i2_s.gguf", "tiny-f32.gguf"])
@pytest.mark.parametrize("profile", ["per-token", "block256"])
@pytest.mark.parametrize("kernels", ["ref", "auto"])
def test_all_positions_match_float64_reference(model: str, profile: str, kernels: str, monkeypatch) -> None:
    """`ref` forces the numpy reference kernels (and checks they ran); `auto` uses whatever dispatch picks."""
    from bitnet.kernels.registry import REGISTRY
    from bitnet.model import load_model

    monkeypatch.setenv("BITNET_KERNELS", kernels)
    path = golden_path(model)
    engine = load_model(path, profile=profile)
    ours = engine.eval_logits_all_positions(PROMPT)
    ref = RefModel(path, profile=profile).logits(PROMPT)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert nmse(ours, ref) <= 1e-10
    if kernels == "auto":
        return
    counts, n_layers = REGISTRY.counts(), engine.config.n_layers
    if "i2_s" in model:
        # one quantization per distinct matmul input (attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm), 7 matmuls
        q = "quantize_per_token_ref" if profile == "per-token" else "quantize_block256_ref"
        assert counts[q] == 4 * n_layers
        assert counts["i2s_gemm_ref"] == 7 * n_layers
    else:
        assert "i2s_gemm_ref" not in counts and counts["fp32_matmul_ref"] == 7 * n_layers
    assert counts["attention_ref"] == n_layers and counts["f16_gemv_lmhead_ref"] == 1


def test_greedy_64_tokens_match_reference() -> None:
    from bitnet.model import GenerationConfig, load_model

    path = golden_path("tiny-i2_s.gguf")
    engine = load_model(path)
    prompt = PROMPT[:8]
    ours = list(engine.generate(prompt, GenerationConfig(max_tokens=64, temperature=0.0, stop_on_eos=False)))
    assert len(ours) == 64
    assert ours == RefModel(path).greedy(prompt, 64)


def test_incremental_decode_equals_full_evaluation() -> None:
    from bitnet.model import load_model

    engine = load_model(golden_path("tiny-i2_s.gguf"))
    full = engine.eval_logits_all_positions(PROMPT)
    engine.reset()
    first = engine.prefill(PROMPT[:5])
    steps = [first] + [engine.decode_step(t) for t in PROMPT[5:]]
    assert nmse(np.stack(steps), full[4:]) <= 1e-10
    assert engine.n_past == len(PROMPT)
