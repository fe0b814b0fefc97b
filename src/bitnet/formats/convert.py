"""Hugging Face BitNet checkpoint folder → GGUF (I2_S, TQ1_0, TQ2_0, F16 or F32), tensor by tensor.

Two checkpoint forms exist for the 2B-4T model and are both handled:
- float master weights (`microsoft/bitnet-b1.58-2B-4T-bf16`): projections are ternarized here with absmean
  (per tensor, round half to even), exactly the fake-quant Microsoft's converters apply; a float tensor that is
  already ternary x one scale keeps its exact codes and scale (`ternary.ternarize`);
- the packed form (`quantization_config.quant_method == "bitnet"`): uint8 `[out/4, in]`, the value at bit pair k
  of packed row r is row `k*(out/4) + r`, `w = code - 1`, and a per-tensor `weight_scale` that transformers'
  BitLinear uses as a **divisor** (`y / (input_scale * weight_scale)` in `integrations/bitnet.py`, 5.x), so the
  float weight is `codes / weight_scale` and our per-tensor scale is `1 / weight_scale`.
The tokenizer.json is embedded as a GGUF gpt2 BPE vocabulary. Nothing is loaded whole: safetensors are mapped and
each GGUF tensor is produced when the writer reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import FormatError, NotFoundError, UsageError
from bitnet.formats.ggml_types import FILE_TYPE, GGMLType, as_type
from bitnet.formats.gguf_writer import TensorSpec, write_gguf
from bitnet.formats.mapper import to_gguf
from bitnet.formats.safetensors_io import SafeTensor, open_checkpoint
from bitnet.formats.ternary import pack_ternary, ternarize
from bitnet.formats.vocab import gguf_tokenizer_metadata
from bitnet.model.config import ModelConfig

OUTTYPES = ("i2_s", "tq1_0", "tq2_0", "f16", "f32")
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
#: HF tensors that carry no weights (recomputed buffers)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
LLAMA3_SPLIT_MARK = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"


def unpack_hf_packed(packed: np.ndarray) -> np.ndarray:
    """HF BitNet packed uint8 [out/4, in] → int8 codes [out, in] (transformers' `unpack_weights`)."""
    p = np.asarray(packed, dtype=np.uint8)
    rows = p.shape[0]
    out = np.empty((4 * rows, *p.shape[1:]), dtype=np.int8)
    for k in range(4):
        out[k * rows : (k + 1) * rows] = ((p >> (2 * k)) & 3).astype(np.int8) - 1
    return out


def pack_hf(codes: np.ndarray) -> np.ndarray:
    """Inverse of `unpack_hf_packed` (out must be a multiple of 4), for writing test checkpoints."""
    c = (np.asarray(codes, dtype=np.int16) + 1).astype(np.uint8)
    if c.shape[0] % 4:
        raise FormatError(f"packed HF weights need out_features % 4 == 0, got {c.shape[0]}")
    rows = c.shape[0] // 4
    return c[:rows] | (c[rows : 2 * rows] << 2) | (c[2 * rows : 3 * rows] << 4) | (c[3 * rows :] << 6)


def ternary_from_hf(weight: SafeTensor, weight_scale: SafeTensor | None) -> tuple[np.ndarray, np.float32]:
    """(codes [out, in], per-tensor scale) of a HF projection, packed or float."""
    if weight.dtype == "U8":
        if weight_scale is None:
            raise FormatError(f"{weight.name}: packed uint8 weight without its weight_scale tensor")
        ws = weight_scale.float32().reshape(-1)
        if ws.size != 1 or not np.isfinite(ws[0]) or ws[0] == 0:
            raise FormatError(
                f"{weight_scale.name}: expected one finite nonzero per-tensor scale, got {ws[:4]}"
            )
        return unpack_hf_packed(weight.raw()), np.float32(np.float32(1.0) / ws[0])
    w = weight.float32()
    if w.ndim != 2:
        raise FormatError(f"{weight.name}: projection must be 2-D, got shape {w.shape}")
    return ternarize(w)


def detect_pre_tokenizer(tokenizer: dict[str, Any]) -> str:
    """llama.cpp `tokenizer.ggml.pre` for a byte-level BPE: "llama-bpe" (Llama-3 split regex) or "gpt-2"."""
    text = json.dumps(tokenizer.get("pre_tokenizer") or {})
    if LLAMA3_SPLIT_MARK in text:
        return "llama-bpe"
    if '"ByteLevel"' in text:
        return "gpt-2"
    raise FormatError(
        "cannot tell which llama.cpp pre-tokenizer matches this tokenizer.json",
        hint="pass --pre (e.g. gpt-2)",
    )


def _special_token(cfg_dir: Path, key: str, tok: dict[str, Any], fallback_id: int | None) -> str | None:
    tc = cfg_dir / "tokenizer_config.json"
    if tc.is_file():
        v = json.loads(tc.read_text()).get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            return v
    if fallback_id is None:
        return None
    vocab = {i: t for t, i in (tok.get("model") or {}).get("vocab", {}).items()}
    vocab.update({a["id"]: a["content"] for a in tok.get("added_tokens") or []})
    return vocab.get(fallback_id)


def _tokenizer_metadata(src: Path, cfg: ModelConfig, pre: str | None) -> dict[str, Any]:
    tj = src / "tokenizer.json"
    if not tj.is_file():
        raise NotFoundError(f"{src} has no tokenizer.json (needed to embed the vocabulary)")
    tok = json.loads(tj.read_text(encoding="utf-8"))
    add_bos = True
    tc = src / "tokenizer_config.json"
    if tc.is_file():
        add_bos = bool(json.loads(tc.read_text()).get("add_bos_token", True))
    return gguf_tokenizer_metadata(
        tok,
        bos_token=_special_token(src, "bos_token", tok, cfg.bos_token_id),
        eos_token=_special_token(src, "eos_token", tok, cfg.eos_token_id),
        add_bos=add_bos,
        pre=pre or detect_pre_tokenizer(tok),
        vocab_size=cfg.vocab_size,
    )


def _projection_spec(name: str, w: SafeTensor, ws: SafeTensor | None, outtype: str) -> TensorSpec:
    n_out = w.shape[0] * (4 if w.dtype == "U8" else 1)
    n_in = w.shape[1]
    gtype = int(as_type(outtype))
    if outtype in ("tq1_0", "tq2_0") and n_in % 256:
        raise FormatError(
            f"{name}: {outtype} needs rows that are a multiple of 256, got {n_in}", hint="use i2_s"
        )
    if outtype == "i2_s" and n_in % 128:
        raise FormatError(f"{name}: i2_s needs rows that are a multiple of 128, got {n_in}")

    def produce() -> np.ndarray:
        codes, scale = ternary_from_hf(w, ws)
        if codes.shape != (n_out, n_in):
            raise FormatError(f"{w.name}: unpacked shape {codes.shape} != expected {(n_out, n_in)}")
        if outtype in ("f16", "f32"):
            return (codes.astype(np.float32) * scale).astype("<f2" if outtype == "f16" else "<f4")
        return pack_ternary(outtype, codes, scale)

    return TensorSpec(name, gtype, (n_in, n_out), produce)


def _float_spec(name: str, t: SafeTensor, fmt: str, rows_per_chunk: int = 8192) -> TensorSpec:
    """A float tensor converted in row chunks, so a 128256 x 2560 bf16 embedding never exists as one float32 copy."""
    dtype = "<f4" if fmt == "f32" else "<f2"

    def chunks() -> Iterator[np.ndarray]:
        raw = t.raw().reshape(-1) if not t.shape else t.raw()
        for start in range(0, raw.shape[0], rows_per_chunk):
            part = raw[start : start + rows_per_chunk]
            if t.dtype == "BF16":
                yield (part.astype(np.uint32) << 16).view(np.float32).astype(dtype)
            else:
                yield part.astype(dtype)

    return TensorSpec(name, int(GGMLType.F32 if fmt == "f32" else GGMLType.F16), t.shape[::-1], chunks)


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    outtype: str = "i2_s",
    *,
    pre: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Convert a HF BitNet folder (config.json, *.safetensors, tokenizer.json) to one GGUF file."""
    if outtype not in OUTTYPES:
        raise UsageError(f"unknown outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    src = Path(src)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise NotFoundError(f"{src} has no config.json")
    hf_cfg = json.loads(cfg_path.read_text())
    cfg = ModelConfig.from_hf(hf_cfg)
    tensors = open_checkpoint(src)

    by_gguf: dict[str, SafeTensor] = {}
    scales: dict[str, SafeTensor] = {}
    unknown: list[str] = []
    for name, t in tensors.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name.endswith(".weight_scale"):
            g = to_gguf(name[: -len("_scale")])
            if g is None:
                unknown.append(name)
            else:
                scales[g] = t
            continue
        g = to_gguf(name)
        if g is None:
            unknown.append(name)
        else:
            by_gguf[g] = t
    if unknown:
        raise FormatError(f"{len(unknown)} checkpoint tensor(s) have no GGUF name: {unknown[:5]}")

    float_fmt = "f32" if outtype == "f32" else "f16"
    specs: list[TensorSpec] = []

    def need(name: str) -> SafeTensor:
        if name not in by_gguf:
            raise FormatError(f"checkpoint lacks the tensor for {name}")
        return by_gguf[name]

    specs.append(_float_spec("token_embd.weight", need("token_embd.weight"), float_fmt))
    for i in range(cfg.n_layers):
        for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_sub_norm", "attn_output",
                     "ffn_norm", "ffn_gate", "ffn_up", "ffn_sub_norm", "ffn_down"):  # fmt: skip
            name = f"blk.{i}.{part}.weight"
            if part in PROJECTIONS:
                specs.append(_projection_spec(name, need(name), scales.get(name), outtype))
            else:
                specs.append(_float_spec(name, need(name), "f32"))
    specs.append(_float_spec("output_norm.weight", need("output_norm.weight"), "f32"))
    tied = bool(hf_cfg.get("tie_word_embeddings", False)) or "output.weight" not in by_gguf
    if not tied:
        specs.append(_float_spec("output.weight", by_gguf["output.weight"], float_fmt))
    extra = set(by_gguf) - {s.name for s in specs} - {"output.weight"}
    if extra:
        raise FormatError(f"checkpoint has tensors this BitNet layout does not use: {sorted(extra)[:5]}")

    metadata: dict[str, Any] = {
        "general.name": src.name,
        "general.file_type": FILE_TYPE[outtype],
        "general.quantization_version": 2,
        **cfg.gguf_metadata(),
        **_tokenizer_metadata(src, cfg, pre),
    }
    return write_gguf(out, cfg.arch, metadata, specs, progress=progress)


def requantize_gguf(
    src: str | Path,
    out: str | Path,
    outtype: str = "i2_s",
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Re-encode the ternary projections of a BitNet GGUF (e.g. Microsoft's F32 export) as `outtype`.

    What `llama-quantize <f32> <out> I2_S 1` does in bitnet.cpp: projections become ternary (exact codes and
    scale when the tensor already is ternary x scale, absmean otherwise); every other tensor (F16 embedding, F32
    norms) and every metadata key are copied with their original types; only `general.file_type` changes.
    """
    from bitnet.formats.gguf_reader import dequantize, open_gguf
    from bitnet.formats.gguf_writer import typed_metadata
    from bitnet.formats.mapper import to_internal
    from bitnet.formats.ternary import pack_ternary

    if outtype not in OUTTYPES:
        raise UsageError(f"unknown outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    f = open_gguf(src)
    specs: list[TensorSpec] = []
    for name, info in f.tensors.items():
        internal = to_internal(name) or ""
        is_proj = name.endswith(".weight") and len(info.shape) == 2 and any(
            internal.endswith(f"{p}.weight") for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        )  # fmt: skip
        if not is_proj:
            specs.append(TensorSpec(name, info.ggml_type, info.shape, info.data))
            continue
        n_in = info.shape[0]
        block = 256 if outtype in ("tq1_0", "tq2_0") else 128 if outtype == "i2_s" else 1
        if n_in % block:
            raise FormatError(f"{name}: {outtype} needs rows that are a multiple of {block}, got {n_in}")

        def produce(info: Any = info) -> np.ndarray:
            codes, scale = ternarize(dequantize(info))
            if outtype in ("f16", "f32"):
                return (codes.astype(np.float32) * scale).astype("<f2" if outtype == "f16" else "<f4")
            return pack_ternary(outtype, codes, scale)

        specs.append(TensorSpec(name, int(as_type(outtype)), info.shape, produce))
    metadata = typed_metadata(f)
    metadata["general.file_type"] = FILE_TYPE[outtype]
    if f.value_types.get("general.file_type") is not None:
        from bitnet.formats.gguf_writer import Typed

        metadata["general.file_type"] = Typed(FILE_TYPE[outtype], f.value_types["general.file_type"])
    return write_gguf(out, f.arch, metadata, specs, alignment=f.alignment, progress=progress)
