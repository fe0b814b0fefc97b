"""In-memory model weights: what the forward pass consumes, independent of the file they came from.

Projection matrices are `QuantWeight`s in their file layout; norm vectors are small float32 arrays. The loader
(`bitnet.model.loader`) builds this from a GGUF; tests and converters can build it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.kernels.weights import QuantWeight


@dataclass(frozen=True)
class LayerWeights:
    """One transformer block. Sub-norms are None for models without them (plain llama-style blocks)."""

    attn_norm: np.ndarray
    wq: QuantWeight
    wk: QuantWeight
    wv: QuantWeight
    wo: QuantWeight
    attn_sub_norm: np.ndarray | None
    ffn_norm: np.ndarray
    w_gate: QuantWeight
    w_up: QuantWeight
    w_down: QuantWeight
    ffn_sub_norm: np.ndarray | None


@dataclass(frozen=True)
class ModelWeights:
    """All weights; `output` is `token_embd` itself when the embeddings are tied.

    `output_type` is the head's type in the file ("f16", "q8_0", ...) even when the loader dequantized it, because
    bitnet.cpp's numerics depend on it (a Q8_0 head quantizes its input to q8_0).
    """

    token_embd: QuantWeight
    layers: tuple[LayerWeights, ...]
    output_norm: np.ndarray
    output: QuantWeight
    output_type: str = "f16"

    def formats(self) -> dict[str, int]:
        """How many projection matrices of each format the model has (for describe())."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            for w in (layer.wq, layer.wk, layer.wv, layer.wo, layer.w_gate, layer.w_up, layer.w_down):
                counts[w.fmt] = counts.get(w.fmt, 0) + 1
        return counts
