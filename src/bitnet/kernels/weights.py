"""`QuantWeight`: a 2-D weight matrix exactly as the model file stores it.

Weights stay in their file format (a memory-mapped uint8 view for I2_S / TQ2_0 / TQ1_0); kernels consume that
layout directly. Nothing here expands a ternary tensor to int8 or float at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: formats the ternary kernels understand, by GGUF type name (lower case)
TERNARY_FORMATS = ("i2_s", "tq2_0", "tq1_0")


@dataclass(frozen=True)
class QuantWeight:
    """A weight of logical shape [n_out, n_in] (ggml: ne1 = n_out rows of ne0 = n_in elements).

    - `fmt`: "i2_s", "tq2_0", "tq1_0" (packed bytes in `data`), or "f32" / "f16" / "bf16" (a float array of shape
      [n_out, n_in] in `data`; other ggml types are dequantized to f32 by the loader).
    - `scale`: the I2_S per-tensor float32 scale (the 4 bytes after the packed codes); None otherwise.
    - `out_scale`: the optional per-tensor `.scale` tensor of arch `bitnet`, multiplied after the matmul.
    - `name`: the GGUF tensor name, for errors and traces.
    """

    fmt: str
    n_out: int
    n_in: int
    data: np.ndarray
    scale: float | None = None
    out_scale: float | None = None
    name: str = ""

    @property
    def is_ternary(self) -> bool:
        return self.fmt in TERNARY_FORMATS

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)
