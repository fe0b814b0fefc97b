"""The one kernel registry: every kernel has a stable ID, and every call is counted by the code that ran it.

Receipts (bitnet.receipts) report `REGISTRY.counts()` verbatim; nothing else may produce a kernel list. A kernel
records itself at the moment it runs (`REGISTRY.record(kernel_id)` inside its Python wrapper), so a run that fell
back to another path shows the fallback's ID.

Kernel ID grammar (verify-receipt classifies IDs by it; keep new IDs inside it):

    CPU quantized matmul   {i2s|tq2|tq1}_{gemv|gemm}_{impl}         e.g. i2s_gemv_avx512vnni, tq2_gemm_ref
    activation quant       quantize_{per_token|block256}_{impl}
    float CPU ops          {rmsnorm|rope_neox|attention|f16_gemv_lmhead|embedding|...}_{impl}
    float fallback matmul  fp32_matmul_{impl}, dequant_{fmt}_{impl}   (verify-receipt calls these "fallback")
    GPU (CUDA)             cuda_{what}_{impl}                         e.g. cuda_i2s_gemv_triton, cuda_rmsnorm_torch

`impl` is `ref` for the numpy reference kernels (integer-exact), `scalar`/`avx2`/`avx512vnni` for native C,
`triton`/`torch` for GPU.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KERNEL_ID_RE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")


@dataclass(frozen=True)
class Kernel:
    """A registered kernel: what it computes (`op`), on which weight format, on which backend."""

    id: str
    op: str
    backend: str = "cpu"
    fmt: str | None = None
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    #: the ID of the reference kernel this one must match bit-exactly (None for reference kernels)
    reference: str | None = None


class KernelRegistry:
    """Registered kernels plus a thread-safe counter of calls since the last `reset()`."""

    def __init__(self) -> None:
        self._kernels: dict[str, Kernel] = {}
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def register(self, kernel: Kernel) -> Kernel:
        if not KERNEL_ID_RE.match(kernel.id) or len(kernel.id) > 128:
            raise ValueError(f"invalid kernel id {kernel.id!r}: lower-case words joined by '_'")
        existing = self._kernels.get(kernel.id)
        if existing is not None and existing.fn is not kernel.fn:
            raise ValueError(f"kernel id {kernel.id!r} registered twice")
        self._kernels[kernel.id] = kernel
        return kernel

    def get(self, kernel_id: str) -> Kernel:
        return self._kernels[kernel_id]

    def kernels(self, op: str | None = None, backend: str | None = None) -> list[Kernel]:
        return [
            k
            for k in self._kernels.values()
            if (op is None or k.op == op) and (backend is None or k.backend == backend)
        ]

    def record(self, kernel_id: str, n: int = 1) -> None:
        """Count `n` calls of `kernel_id`. Called by the kernel wrapper itself, every time it runs."""
        if kernel_id not in self._kernels:
            raise KeyError(f"kernel {kernel_id!r} ran but was never registered")
        with self._lock:
            self._counts[kernel_id] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


REGISTRY = KernelRegistry()
