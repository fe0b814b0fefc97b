"""KV cache: keys and values of every past position, per layer, in F32 or F16.

Storage grows geometrically up to the context length, so a short prompt on a 4k-context model does not allocate the
whole cache. F16 storage is what bitnet.cpp/llama.cpp use by default; values are rounded on write, exactly like
ggml's `cpy` into an F16 cache.
"""

from __future__ import annotations

import numpy as np

from bitnet.errors import InferenceError, UsageError

KV_DTYPES = {"f32": np.float32, "f16": np.float16}


class KVCache:
    """Per-layer [positions, kv_heads, head_dim] key and value buffers plus the number of filled positions."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_ctx: int, dtype: str = "f32") -> None:
        if dtype not in KV_DTYPES:
            raise UsageError(f"unknown KV cache dtype {dtype!r}; choose one of {', '.join(KV_DTYPES)}")
        self.dtype_name = dtype
        self.dtype = KV_DTYPES[dtype]
        self.n_layers, self.n_kv_heads, self.head_dim, self.n_ctx = n_layers, n_kv_heads, head_dim, n_ctx
        self.length = 0
        self._cap = 0
        self._k = np.zeros((0,), self.dtype)
        self._v = np.zeros((0,), self.dtype)
        self._grow(min(n_ctx, 64))

    def _grow(self, cap: int) -> None:
        # one [layers, positions, kv_heads, head_dim] array per K and V: the fused native blocks address every layer
        # from one pointer
        shape = (self.n_layers, cap, self.n_kv_heads, self.head_dim)
        new_k, new_v = np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)
        if self._cap:
            new_k[:, : self.length] = self._k[:, : self.length]
            new_v[:, : self.length] = self._v[:, : self.length]
        self._k, self._v, self._cap = new_k, new_v, cap

    def reserve(self, n_new: int) -> int:
        """Make room for `n_new` more positions; returns the position of the first. Fails past the context."""
        end = self.length + n_new
        if end > self.n_ctx:
            raise InferenceError(
                f"context full: {self.length} cached + {n_new} new tokens exceed the context length {self.n_ctx}",
                hint="shorten the prompt or --max-tokens",
            )
        if end > self._cap:
            self._grow(min(self.n_ctx, max(end, 2 * self._cap)))
        return self.length

    def write(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store [T, kv_heads, head_dim] keys/values at positions start..start+T-1 (rounded to the cache dtype)."""
        t = k.shape[0]
        self._k[layer][start : start + t] = k
        self._v[layer][start : start + t] = v

    def view(self, layer: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values of positions 0..end-1 (views, no copy)."""
        return self._k[layer, :end], self._v[layer, :end]

    @property
    def storage(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole K and V arrays [layers, capacity, kv_heads, head_dim] (capacity >= length after `reserve`)."""
        return self._k, self._v

    def commit(self, n_new: int) -> None:
        """Mark `n_new` positions as filled, after every layer wrote them."""
        self.length += n_new

    def clear(self) -> None:
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self._k.nbytes + self._v.nbytes
