"""Tensor-name mapping between GGUF (llama.cpp), Hugging Face and the engine's internal names.

Why one table: the converter (HF → GGUF), the loader and the `gate mapper` CI check must agree on every name, and
BitNet checkpoints come with several spellings (Microsoft's 2B-4T `attn_sub_norm` / `ffn_sub_norm`; 1bitLLM's
`inner_attn_ln` / `ffn_layernorm`; Meta-style `wq` / `w1`; arch `bitnet`'s per-tensor `.scale` tensors). Each layer
component is one row (GGUF, HF, internal) plus aliases; unknown names are reported, never guessed.

Internal names follow BitNet-rs: `embed_tokens.weight`, `lm_head.weight`, `final_norm.weight`,
`layers.N.attention.q_proj.weight`, `layers.N.attention_norm.weight`, `layers.N.attention.sub_layernorm.weight`,
`layers.N.post_attention_layernorm.weight`, `layers.N.feed_forward.gate_proj.weight`, ... ; `.scale` tensors keep
their suffix (`layers.N.attention.q_proj.scale`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Component:
    gguf: str
    hf: str
    internal: str
    gguf_aliases: tuple[str, ...] = ()
    hf_aliases: tuple[str, ...] = ()


LAYER_COMPONENTS: tuple[Component, ...] = (
    Component("attn_norm", "input_layernorm", "attention_norm", (), ("attention_norm",)),
    Component("attn_q", "self_attn.q_proj", "attention.q_proj", (), ("attention.wq",)),
    Component("attn_k", "self_attn.k_proj", "attention.k_proj", (), ("attention.wk",)),
    Component("attn_v", "self_attn.v_proj", "attention.v_proj", (), ("attention.wv",)),
    Component("attn_output", "self_attn.o_proj", "attention.o_proj", ("attn_o",), ("attention.wo",)),
    Component(
        "attn_sub_norm",
        "self_attn.attn_sub_norm",
        "attention.sub_layernorm",
        ("attention_sub_norm",),
        ("self_attn.inner_attn_ln", "attention.attn_sub_norm", "attn_sub_norm"),
    ),
    Component("ffn_norm", "post_attention_layernorm", "post_attention_layernorm", (), ("ffn_norm",)),
    Component("ffn_gate", "mlp.gate_proj", "feed_forward.gate_proj", (), ("feed_forward.w1",)),
    Component("ffn_up", "mlp.up_proj", "feed_forward.up_proj", ("ffn_up_proj",), ("feed_forward.w3",)),
    Component(
        "ffn_down", "mlp.down_proj", "feed_forward.down_proj", ("ffn_down_proj",), ("feed_forward.w2",)
    ),
    Component(
        "ffn_sub_norm",
        "mlp.ffn_sub_norm",
        "feed_forward.sub_layernorm",
        ("mlp_sub_layernorm",),
        ("mlp.ffn_layernorm", "feed_forward.ffn_sub_norm", "ffn_sub_norm"),
    ),
)

GLOBAL_COMPONENTS: tuple[Component, ...] = (
    Component(
        "token_embd",
        "model.embed_tokens",
        "embed_tokens",
        ("tok_embeddings",),
        (
            "tok_embeddings",
            "transformer.wte",
            "transformer.word_embeddings",
            "embeddings.word_embeddings",
            "word_embeddings",
            "embed_tokens",
        ),
    ),
    Component("output", "lm_head", "lm_head", (), ("model.lm_head", "transformer.lm_head", "output")),
    Component(
        "output_norm",
        "model.norm",
        "final_norm",
        (),
        ("norm", "transformer.ln_f", "ln_f", "final_norm", "final_layernorm", "final_rmsnorm"),
    ),
)

#: suffixes a tensor name may carry; HF packed checkpoints add `weight_scale`, arch `bitnet` GGUFs add `scale`
SUFFIXES = ("weight", "scale", "weight_scale", "bias")

_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)\.(" + "|".join(SUFFIXES) + r")$")
_HF_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)\.(.+)\.(" + "|".join(SUFFIXES) + r")$")
_GLOBAL = re.compile(r"^(.+)\.(" + "|".join(SUFFIXES) + r")$")

_BY_GGUF = {n: c for c in LAYER_COMPONENTS for n in (c.gguf, *c.gguf_aliases)}
_BY_HF = {n: c for c in LAYER_COMPONENTS for n in (c.hf, *c.hf_aliases)}
_BY_INTERNAL = {c.internal: c for c in LAYER_COMPONENTS}
_G_BY_GGUF = {n: c for c in GLOBAL_COMPONENTS for n in (c.gguf, *c.gguf_aliases)}
_G_BY_HF = {n: c for c in GLOBAL_COMPONENTS for n in (c.hf, *c.hf_aliases)}


def _lookup(name: str) -> tuple[Component, int | None, str] | None:
    """Find the component of a GGUF, HF or internal name: (component, layer or None, suffix)."""
    m = _GGUF_LAYER.match(name)
    if m and m.group(2) in _BY_GGUF:
        return _BY_GGUF[m.group(2)], int(m.group(1)), m.group(3)
    m = _HF_LAYER.match(name)
    if m:
        comp = _BY_HF.get(m.group(2)) or _BY_INTERNAL.get(m.group(2))
        if comp is not None:
            return comp, int(m.group(1)), m.group(3)
        return None
    m = _GLOBAL.match(name)
    if m:
        base = m.group(1)
        comp = _G_BY_GGUF.get(base) or _G_BY_HF.get(base)
        if comp is None:
            comp = next((c for c in GLOBAL_COMPONENTS if c.internal == base), None)
        if comp is not None:
            return comp, None, m.group(2)
    return None


def to_internal(name: str) -> str | None:
    """GGUF or HF name → internal name, or None if the name is not a known BitNet tensor."""
    hit = _lookup(name)
    if hit is None:
        return None
    comp, layer, suffix = hit
    return f"{comp.internal}.{suffix}" if layer is None else f"layers.{layer}.{comp.internal}.{suffix}"


def to_gguf(name: str) -> str | None:
    """HF / internal / GGUF-alias name → canonical GGUF name (`weight_scale` stays a HF-only concept: None)."""
    hit = _lookup(name)
    if hit is None or hit[2] == "weight_scale":
        return None
    comp, layer, suffix = hit
    return f"{comp.gguf}.{suffix}" if layer is None else f"blk.{layer}.{comp.gguf}.{suffix}"


def to_hf(name: str) -> str | None:
    """GGUF / internal name → canonical HF (Microsoft 2B-4T) name."""
    hit = _lookup(name)
    if hit is None:
        return None
    comp, layer, suffix = hit
    return f"{comp.hf}.{suffix}" if layer is None else f"model.layers.{layer}.{comp.hf}.{suffix}"


def dry_run_remap(names: list[str]) -> list[str]:
    """The names that do not map (BitNet-rs `dry_run_remap_names`)."""
    return [n for n in names if to_internal(n) is None]


def mapper_gate(model: str | Path, sample: int = 10) -> dict[str, Any]:
    """`xtask gate mapper`: read the tensor table only and report unmapped names."""
    from bitnet.formats.gguf_reader import open_gguf

    with open_gguf(model) as f:
        names = list(f.tensors)
        counts = {"n_kv": f.n_kv, "n_tensors": f.n_tensors}
    unmapped = dry_run_remap(names)
    return {
        "name": "mapper",
        "model": str(model),
        "ok": not unmapped,
        "unmapped_count": len(unmapped),
        "sample_unmapped": unmapped[:sample],
        "counts": counts,
    }
