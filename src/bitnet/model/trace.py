"""Per-tensor tracing of the forward pass (`BITNET_TRACE_DIR=DIR`).

Every stage of every forward writes one JSON line per token position to `DIR/trace.jsonl`:
`{seq, layer, stage, name, shape, dtype, blake3, rms, num_elements}` where `seq` is the token position, `layer` is
-1 for stages outside the blocks, `name` is `<stage>-<layer>` (or `<stage>`), and shape/dtype/blake3/rms describe that
position's row converted to float32 (so traces taken under different numerics compare at equal dtype; `blake3` is
the hex digest of the row's float32 bytes, C order). With `BITNET_TRACE_VALUES=1` the row is also saved as
`DIR/values/<seq>_<name>.npy` when it has at most `BITNET_TRACE_MAX_ELEMENTS` (default 65536) elements.

`STAGES` lists the stages in forward order. The engine knows nothing of the C++ references: `bitnet.crossval.cpp_trace`
maps llama.cpp's eval-callback tensor names onto these stage names (data flows one way).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import blake3
import numpy as np

from bitnet.fsutil import atomic_open

#: (stage, layer-scoped?) in forward order
STAGES: tuple[tuple[str, bool], ...] = (
    ("embeddings", False),
    ("attn_norm", True),
    ("q", True),
    ("k", True),
    ("v", True),
    ("q_rope", True),
    ("k_rope", True),
    ("attn_scores", True),
    ("attn_out", True),
    ("attn_sub_norm", True),
    ("attn_o", True),
    ("ffn_inp", True),
    ("ffn_norm", True),
    ("ffn_gate", True),
    ("ffn_up", True),
    ("ffn_act", True),
    ("ffn_sub_norm", True),
    ("ffn_out", True),
    ("layer_out", True),
    ("final_norm", False),
    ("logits", False),
)
STAGE_NAMES = tuple(s for s, _ in STAGES)


class Tracer:
    """Writes trace records; `enabled` is False (and every call a no-op) unless a directory was given."""

    def __init__(self, directory: str | os.PathLike[str] | None, *, values: bool = False, max_elements: int = 65536):
        self.directory = Path(directory) if directory else None
        self.values = values
        self.max_elements = max_elements
        self._fh: IO[str] | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            if values:
                (self.directory / "values").mkdir(exist_ok=True)

    @classmethod
    def from_env(cls) -> Tracer:
        return cls(
            os.environ.get("BITNET_TRACE_DIR") or None,
            values=os.environ.get("BITNET_TRACE_VALUES") == "1",
            max_elements=int(os.environ.get("BITNET_TRACE_MAX_ELEMENTS", "65536")),
        )

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    @property
    def path(self) -> Path | None:
        return self.directory / "trace.jsonl" if self.directory else None

    def record(self, stage: str, layer: int, positions: np.ndarray, tensor: np.ndarray, axis: int = 0) -> None:
        """Record `tensor`, whose axis `axis` runs over the token positions `positions`, one line per position."""
        if self.directory is None:
            return
        if stage not in STAGE_NAMES:
            raise ValueError(f"unknown trace stage {stage!r}")
        if self._fh is None:
            self._fh = open(self.directory / "trace.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        name = f"{stage}-{layer}" if layer >= 0 else stage
        arr = np.asarray(tensor)
        for i, pos in enumerate(np.asarray(positions).tolist()):
            row = np.ascontiguousarray(np.take(arr, i, axis=axis), dtype=np.float32)
            rec = {
                "seq": int(pos),
                "layer": int(layer),
                "stage": stage,
                "name": name,
                "shape": list(row.shape),
                "dtype": "f32",
                "blake3": blake3.blake3(row.tobytes()).hexdigest(),
                "rms": float(np.sqrt(np.mean(row.astype(np.float64) ** 2))) if row.size else 0.0,
                "num_elements": int(row.size),
            }
            self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            if self.values and row.size <= self.max_elements:
                self._save(f"{int(pos)}_{name}.npy", row)

    def _save(self, filename: str, row: np.ndarray) -> None:
        assert self.directory is not None
        target = self.directory / "values" / filename
        with atomic_open(target, "wb") as fh:
            np.save(fh, row)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
