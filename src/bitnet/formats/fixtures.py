"""Deterministic, realistic BitNet test models (`xtask gen-fixtures`), from tiny to the exact 2B-4T shapes.

Why not zeros: kernels, the engine and cross-validation need weights that exercise every code path — ternary
projections with realistic per-tensor scales (W = T * s, s ≈ 1/sqrt(2/3 * K) varied per tensor, so activations
keep unit scale through a layer), norm weights that are not all 1, a tied F16 embedding, and a real byte-level BPE
tokenizer embedded in the GGUF (plus the same tokenizer as tokenizer.json next to the model).

Every tensor draws from its own RNG stream seeded by (seed, tensor name[, chunk]), so the bytes depend only on
the arguments, and tensors are produced one at a time as the writer streams them: the 2B fixture (~1.2 GB in
I2_S) is written in bounded memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import UsageError
from bitnet.formats.ggml_types import FILE_TYPE, GGMLType, as_type
from bitnet.formats.gguf_writer import TensorSpec, write_gguf
from bitnet.formats.ternary import pack_ternary
from bitnet.formats.vocab import gguf_tokenizer_metadata, train_fixture_tokenizer_json
from bitnet.fsutil import atomic_write_text, sha256_file
from bitnet.model.config import ModelConfig

FORMATS = ("i2_s", "tq1_0", "tq2_0", "f32")
ARCHS = ("bitnet-b1.58", "bitnet")
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
EMBED_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class FixtureShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    ctx: int


SIZES: dict[str, FixtureShape] = {
    "tiny": FixtureShape(hidden=256, layers=2, heads=4, kv_heads=2, ffn=512, vocab=512, ctx=512),
    "small": FixtureShape(hidden=512, layers=4, heads=8, kv_heads=4, ffn=1536, vocab=2048, ctx=1024),
    "medium": FixtureShape(hidden=1024, layers=8, heads=16, kv_heads=4, ffn=2816, vocab=8192, ctx=2048),
    # microsoft/BitNet-b1.58-2B-4T
    "2b": FixtureShape(hidden=2560, layers=30, heads=20, kv_heads=5, ffn=6912, vocab=128256, ctx=4096),
}


def fixture_config(size: str, arch: str = "bitnet-b1.58") -> ModelConfig:
    """The ModelConfig a fixture of this size and arch is generated with."""
    if size not in SIZES:
        raise UsageError(f"unknown fixture size {size!r} (choose from {', '.join(SIZES)})")
    if arch not in ARCHS:
        raise UsageError(f"unknown fixture arch {arch!r} (choose from {', '.join(ARCHS)})")
    s = SIZES[size]
    return ModelConfig(
        arch=arch,
        hidden_size=s.hidden,
        n_layers=s.layers,
        n_heads=s.heads,
        n_kv_heads=s.kv_heads,
        head_dim=s.hidden // s.heads,
        ffn_size=s.ffn,
        vocab_size=s.vocab,
        rope_theta=500000.0,
        rms_eps=1e-5,
        context_length=s.ctx,
        ffn_act="relu2" if arch != "bitnet" else "silu",
        tie_embeddings=True,
        rope_dim=s.hidden // s.heads,
        bos_token_id=s.vocab - 3,
        eos_token_id=s.vocab - 2,
    )


def fixture_filename(size: str, fmt: str, arch: str = "bitnet-b1.58", scale_tensors: bool = False) -> str:
    """`bitnet-<size>-<fmt>.gguf`; other archs and the `.scale` variant get a suffix so fixtures can share a folder."""
    stem = f"bitnet-{size}-{fmt}"
    if arch != "bitnet-b1.58":
        stem += f"-{arch}"
    if scale_tensors:
        stem += "-scales"
    return stem + ".gguf"


def tokenizer_path_for(model_path: Path) -> Path:
    """The tokenizer.json written next to a fixture: `<model stem>.tokenizer.json`."""
    return model_path.with_name(model_path.stem + ".tokenizer.json")


def _rng(seed: int, name: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *extra])


def _projection_shape(cfg: ModelConfig, proj: str) -> tuple[int, int]:
    """[n_out, n_in] of a projection."""
    h, kv, f = cfg.hidden_size, cfg.kv_dim, cfg.ffn_size
    return {
        "attn_q": (cfg.n_heads * cfg.head_dim, h),
        "attn_k": (kv, h),
        "attn_v": (kv, h),
        "attn_output": (h, cfg.n_heads * cfg.head_dim),
        "ffn_gate": (f, h),
        "ffn_up": (f, h),
        "ffn_down": (h, f),
    }[proj]


def _ternary_weight(seed: int, name: str, n_out: int, n_in: int) -> tuple[np.ndarray, np.float32]:
    """Uniform ternary codes (1/3 zeros, like an absmean-ternarized Gaussian) and s = U(0.8,1.25)/sqrt(2/3·K)."""
    rng = _rng(seed, name)
    codes = rng.integers(-1, 2, size=(n_out, n_in), dtype=np.int8)
    scale = np.float32(rng.uniform(0.8, 1.25) / np.sqrt(2.0 / 3.0 * n_in))
    return codes, scale


def _projection_spec(seed: int, name: str, n_out: int, n_in: int, fmt: str) -> TensorSpec:
    shape = (n_in, n_out)

    def produce() -> np.ndarray:
        codes, scale = _ternary_weight(seed, name, n_out, n_in)
        if fmt == "f32":
            return codes.astype(np.float32) * scale
        return pack_ternary(fmt, codes, scale)

    return TensorSpec(name, int(as_type(fmt)), shape, produce)


def _norm_spec(seed: int, name: str, n: int) -> TensorSpec:
    def produce() -> np.ndarray:
        return _rng(seed, name).uniform(0.8, 1.2, size=n).astype(np.float32)

    return TensorSpec(name, int(GGMLType.F32), (n,), produce)


def _scale_spec(seed: int, name: str) -> TensorSpec:
    def produce() -> np.ndarray:
        return np.array([_rng(seed, name).uniform(0.8, 1.25)], dtype=np.float32)

    return TensorSpec(name, int(GGMLType.F32), (1,), produce)


def _embedding_spec(seed: int, vocab: int, hidden: int) -> TensorSpec:
    """Tied F16 embedding, N(0, 1) / sqrt(hidden)·2, streamed in row chunks (the 2B table is 656 MB)."""
    name = "token_embd.weight"

    def chunks() -> Iterator[np.ndarray]:
        for c, start in enumerate(range(0, vocab, EMBED_CHUNK_ROWS)):
            rows = min(EMBED_CHUNK_ROWS, vocab - start)
            x = _rng(seed, name, c).standard_normal((rows, hidden), dtype=np.float32)
            yield (x * np.float32(2.0 / np.sqrt(hidden))).astype("<f2")

    return TensorSpec(name, int(GGMLType.F16), (hidden, vocab), chunks)


def fixture_tensors(cfg: ModelConfig, fmt: str, seed: int, scale_tensors: bool = False) -> list[TensorSpec]:
    """Tensor specs in bitnet.cpp's file order (lazy: nothing is generated until the writer asks)."""
    specs = [_embedding_spec(seed, cfg.vocab_size, cfg.hidden_size)]
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_sub_norm", "attn_output",
                     "ffn_norm", "ffn_gate", "ffn_up", "ffn_sub_norm", "ffn_down"):  # fmt: skip
            name = f"{p}{part}.weight"
            if part in PROJECTIONS:
                n_out, n_in = _projection_shape(cfg, part)
                specs.append(_projection_spec(seed, name, n_out, n_in, fmt))
                if scale_tensors:
                    specs.append(_scale_spec(seed, f"{p}{part}.scale"))
            else:
                n = cfg.ffn_size if part == "ffn_sub_norm" else cfg.hidden_size
                specs.append(_norm_spec(seed, name, n))
    specs.append(_norm_spec(seed, "output_norm.weight", cfg.hidden_size))
    return specs


def generate_fixture(
    size: str,
    fmt: str,
    arch: str = "bitnet-b1.58",
    out_dir: str | Path = ".",
    seed: int = 0,
    *,
    scale_tensors: bool = False,
    progress: Any = None,
) -> Path:
    """Write `bitnet-<size>-<fmt>[-<arch>][-scales].gguf` and its tokenizer.json into out_dir; return the GGUF path."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown fixture format {fmt!r} (choose from {', '.join(FORMATS)})")
    if scale_tensors and arch != "bitnet":
        raise UsageError(
            "`.scale` tensors exist only in arch `bitnet` (llama.cpp loads them for that arch only)"
        )
    cfg = fixture_config(size, arch)
    out = Path(out_dir) / fixture_filename(size, fmt, arch, scale_tensors)
    tok_json = train_fixture_tokenizer_json(cfg.vocab_size)
    metadata: dict[str, Any] = {
        "general.name": f"bitnet-{size}-{fmt}",
        "general.file_type": FILE_TYPE[fmt],
        "general.quantization_version": 2,
        **cfg.gguf_metadata(),
        **gguf_tokenizer_metadata(tok_json, add_bos=True, pre="gpt-2"),
    }
    path = write_gguf(out, arch, metadata, fixture_tensors(cfg, fmt, seed, scale_tensors), progress=progress)
    atomic_write_text(tokenizer_path_for(path), tok_json)
    return path


def fixture_summary(path: Path) -> dict[str, Any]:
    """What gen-fixtures prints: path, bytes, sha256, arch, formats and tensor shapes."""
    from bitnet.formats.gguf_reader import open_gguf

    with open_gguf(path) as f:
        types = sorted({t.type_name for t in f.tensors.values()})
        shapes = {
            name: list(t.shape)
            for name, t in f.tensors.items()
            if not name.startswith("blk.") or ".0." in name
        }
        cfg = ModelConfig.from_gguf(f.metadata, f.tensors)
        return {
            "path": str(path),
            "tokenizer_json": str(tokenizer_path_for(path)),
            "size_bytes": f.file_size,
            "sha256": sha256_file(path),
            "arch": f.arch,
            "fmt": f.tensors["blk.0.attn_q.weight"].type_name if "blk.0.attn_q.weight" in f.tensors else None,
            "tensor_types": types,
            "n_tensors": f.n_tensors,
            "config": cfg.to_dict(),
            "shapes": shapes,
        }
