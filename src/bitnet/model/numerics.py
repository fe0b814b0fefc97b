"""Engine numerics: which activation-quantization profile, FFN activation, KV dtype and float rounding points.

- `default`: hidden states in float64 between kernels (so the only rounding that matters is the documented one:
  the int8 activation quantizer and the float32 matmul epilogue), KV cache in the chosen dtype.
- `bitnet-cpp`: bitnet.cpp's float32 graph with its f16 rounding points (docs: shared/reference/bitnet-cpp-numerics.md):
  float32 hidden states, F16 KV cache, Q rounded to f16 before K·Q; for a single-token step (decode) also the softmax
  probabilities and the lm_head input rounded to f16. Multi-token evaluation (prefill/batch) leaves those in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitnet.errors import UsageError
from bitnet.kernels.quant import check_profile

NUMERICS = ("default", "bitnet-cpp")
FFN_ACTS = ("relu2", "silu")


@dataclass(frozen=True)
class Numerics:
    """Resolved numerics of one engine (recorded by `Engine.describe()`)."""

    name: str
    profile: str
    ffn_act: str
    kv_dtype: str

    def __post_init__(self) -> None:
        if self.name not in NUMERICS:
            raise UsageError(f"unknown numerics {self.name!r}; choose one of {', '.join(NUMERICS)}")
        check_profile(self.profile)
        if self.ffn_act not in FFN_ACTS:
            raise UsageError(f"unknown FFN activation {self.ffn_act!r}; choose one of {', '.join(FFN_ACTS)}")
        if self.name == "bitnet-cpp" and self.kv_dtype != "f16":
            raise UsageError("numerics 'bitnet-cpp' uses an F16 KV cache (bitnet.cpp's default); drop --kv-dtype f32")

    @property
    def act_dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.name == "bitnet-cpp" else np.float64)

    @property
    def round_q_f16(self) -> bool:
        return self.name == "bitnet-cpp"

    def decode_rounding(self, n_tokens: int) -> bool:
        """bitnet.cpp rounds softmax P and the lm_head input to f16 only in single-token evaluation."""
        return self.name == "bitnet-cpp" and n_tokens == 1
