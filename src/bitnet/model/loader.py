"""GGUF → `ModelWeights` without expanding anything: ternary tensors stay uint8 views into the memory map.

Float tensors (F32/F16) become typed views of the same bytes; other ggml types (BF16, Q8_0, ... for embeddings or
heads) are dequantized to float32 once, since they are not what the engine's ternary kernels consume.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bitnet.errors import FormatError
from bitnet.formats.gguf_reader import GGUFFile, TensorInfo, dequantize
from bitnet.kernels.weights import TERNARY_FORMATS, QuantWeight
from bitnet.model.weights import LayerWeights, ModelWeights

_PROJ = {
    "wq": "attn_q",
    "wk": "attn_k",
    "wv": "attn_v",
    "wo": "attn_output",
    "w_gate": "ffn_gate",
    "w_up": "ffn_up",
    "w_down": "ffn_down",
}


def _tensor(gf: GGUFFile, name: str) -> TensorInfo:
    info = gf.tensors.get(name)
    if info is None:
        raise FormatError(f"{gf.path}: missing tensor {name!r}")
    return info


def quant_weight(info: TensorInfo, out_scale: float | None = None) -> QuantWeight:
    """A 2-D GGUF tensor as a `QuantWeight` (ggml shape [ne0 = n_in, ne1 = n_out])."""
    if len(info.shape) != 2:
        raise FormatError(f"tensor {info.name!r}: expected 2 dimensions, got shape {info.shape}")
    n_in, n_out = int(info.shape[0]), int(info.shape[1])
    fmt = info.type_name
    if fmt in TERNARY_FORMATS:
        scale = None
        if fmt == "i2_s":
            n = n_in * n_out
            if info.n_bytes < n // 4 + 4:
                raise FormatError(f"tensor {info.name!r}: I2_S data too short for its scale")
            scale = float(info.data[n // 4 : n // 4 + 4].view("<f4")[0])
        return QuantWeight(fmt, n_out, n_in, info.data, scale=scale, out_scale=out_scale, name=info.name)
    if fmt == "f32":
        data = info.data.view("<f4").reshape(n_out, n_in)
    elif fmt == "f16":
        data = info.data.view("<f2").reshape(n_out, n_in)
    else:
        data, fmt = dequantize(info), "f32"
    return QuantWeight(fmt, n_out, n_in, data, out_scale=out_scale, name=info.name)


def _vector(gf: GGUFFile, name: str, size: int, required: bool = True) -> np.ndarray | None:
    info = gf.tensors.get(name)
    if info is None:
        if required:
            raise FormatError(f"{gf.path}: missing tensor {name!r}")
        return None
    v = dequantize(info).reshape(-1).astype(np.float32)
    if v.size != size:
        raise FormatError(f"tensor {name!r}: expected {size} elements, got {v.size}")
    return v


def _scale(gf: GGUFFile, name: str) -> float | None:
    info = gf.tensors.get(name)
    if info is None:
        return None
    v = dequantize(info).reshape(-1)
    if v.size != 1:
        raise FormatError(f"tensor {name!r}: a per-tensor scale must have 1 element, got {v.size}")
    return float(v[0])


def _check_shape(w: QuantWeight, n_out: int, n_in: int) -> QuantWeight:
    if (w.n_out, w.n_in) != (n_out, n_in):
        raise FormatError(f"tensor {w.name!r}: shape [out {w.n_out}, in {w.n_in}], expected [{n_out}, {n_in}]")
    return w


def load_weights(gf: GGUFFile, config: Any) -> ModelWeights:
    """Collect and shape-check every tensor the forward needs."""
    c = config
    q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    shapes = {
        "wq": (q_dim, c.hidden_size),
        "wk": (kv_dim, c.hidden_size),
        "wv": (kv_dim, c.hidden_size),
        "wo": (c.hidden_size, q_dim),
        "w_gate": (c.ffn_size, c.hidden_size),
        "w_up": (c.ffn_size, c.hidden_size),
        "w_down": (c.hidden_size, c.ffn_size),
    }
    layers = []
    for i in range(c.n_layers):
        p = f"blk.{i}."
        projs = {
            key: _check_shape(
                quant_weight(_tensor(gf, f"{p}{gg}.weight"), _scale(gf, f"{p}{gg}.scale")), *shapes[key]
            )
            for key, gg in _PROJ.items()
        }
        layers.append(
            LayerWeights(
                attn_norm=_vector(gf, f"{p}attn_norm.weight", c.hidden_size),
                attn_sub_norm=_vector(gf, f"{p}attn_sub_norm.weight", q_dim, required=False),
                ffn_norm=_vector(gf, f"{p}ffn_norm.weight", c.hidden_size),
                ffn_sub_norm=_vector(gf, f"{p}ffn_sub_norm.weight", c.ffn_size, required=False),
                **projs,
            )
        )
    embd = _check_shape(quant_weight(_tensor(gf, "token_embd.weight")), c.vocab_size, c.hidden_size)
    out_info = gf.tensors.get("output.weight")
    output = embd if out_info is None else _check_shape(quant_weight(out_info), c.vocab_size, c.hidden_size)
    if output.is_ternary or embd.is_ternary:
        raise FormatError("ternary token_embd / output tensors are not supported (bitnet.cpp keeps them F16)")
    return ModelWeights(
        token_embd=embd,
        layers=tuple(layers),
        output_norm=_vector(gf, "output_norm.weight", c.hidden_size),
        output=output,
        output_type=(out_info or _tensor(gf, "token_embd.weight")).type_name,
    )


def open_model(
    path: str | os.PathLike[str], tokenizer_json: str | os.PathLike[str] | None = None
) -> tuple[GGUFFile, Any, ModelWeights, Any]:
    """Open a GGUF once and return (file, config, weights, tokenizer or None): what every engine backend needs."""
    from bitnet.formats.gguf_reader import open_gguf
    from bitnet.model.config import ModelConfig
    from bitnet.tokenizers import load_tokenizer

    gf = open_gguf(path)
    config = ModelConfig.from_gguf(gf.metadata, gf.tensors.keys())
    weights = load_weights(gf, config)
    tokenizer = None
    if tokenizer_json is not None or "tokenizer.ggml.tokens" in gf.metadata:
        tokenizer = load_tokenizer(path, tokenizer_json=tokenizer_json, gguf=gf)
    return gf, config, weights, tokenizer
