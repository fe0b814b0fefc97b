"""Process-level run settings: deterministic mode, seed and thread count.

`BITNET_DETERMINISTIC=1` makes two runs bit-identical: one BLAS thread unless `--threads` says otherwise (the thread
count is part of the determinism contract, since BLAS float sums depend on it), and sampling seeded from
`BITNET_SEED` (default 0) when no seed is given. Integer parts of the quantized matmuls are exact regardless.
"""

from __future__ import annotations

import os

import numpy as np


def deterministic() -> bool:
    return os.environ.get("BITNET_DETERMINISTIC") == "1"


def default_seed() -> int | None:
    seed = os.environ.get("BITNET_SEED")
    if seed is not None:
        return int(seed)
    return 0 if deterministic() else None


def make_rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(default_seed() if seed is None else seed)


def resolve_threads(threads: int | None) -> int:
    """Threads for BLAS: explicit value, else 1 in deterministic mode, else the CPU count."""
    if threads is not None:
        return max(1, int(threads))
    if deterministic():
        return 1
    return os.cpu_count() or 1


def apply_threads(threads: int) -> bool:
    """Use `threads` threads in the native kernels (OpenMP) and in BLAS (threadpoolctl, if installed).

    Returns whether the BLAS limit could be applied; the native kernels always honour it when they are built.
    """
    from bitnet.kernels import native

    if native.available():
        native.set_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=threads)
    return True
