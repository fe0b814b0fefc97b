"""What the receipt records about where it ran: CPU, cores, memory, GPU, the engine's own build, the environment.

`fingerprint` hashes the properties that change performance (not the hostname), so compare-metrics can refuse to
compare numbers from different machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: CPU flags that decide which kernels can run (the rest of /proc/cpuinfo's list is noise for a receipt)
_FLAG_RE = re.compile(r"^(avx.*|sse.*|ssse3|fma|f16c|amx.*|bmi\d|popcnt|neon|asimd.*|sve.*|dotprod|i8mm|vnni.*)$")
#: environment variables that change numerics or threading
ENV_VARS = ("BITNET_DETERMINISTIC", "BITNET_SEED", "BITNET_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = sorted(f for f in value.split() if _FLAG_RE.match(f))
    return model, flags


def gpu_info(backend: str) -> dict[str, Any] | None:
    """The first CUDA device: from torch when the run used it, else from nvidia-smi if present, else None."""
    if backend == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "memory_bytes": int(props.total_memory),
                "compute_capability": f"{props.major}.{props.minor}"}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0].split(",") if out.strip() else []
    if len(first) < 3:
        return None
    return {"name": first[0].strip(), "memory_bytes": int(float(first[1])) * 2**20, "compute_capability": first[2].strip()}


def machine_info(backend: str = "cpu") -> dict[str, Any]:
    import psutil

    model, flags = _cpuinfo()
    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_flags": flags,
        "cores_logical": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_bytes": int(psutil.virtual_memory().total),
        "os": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "gpu": gpu_info(backend),
    }
    key = {k: info[k] for k in ("cpu_model", "cpu_flags", "cores_logical", "cores_physical", "arch")}
    key["memory_gib"] = round(info["memory_bytes"] / 2**30)
    key["gpu"] = (info["gpu"] or {}).get("name")
    info["fingerprint"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return info


def environment_info(threads: int | None) -> dict[str, Any]:
    import numpy as np

    return {"threads": threads, "variables": {k: os.environ.get(k) for k in ENV_VARS}, "numpy": np.__version__}


def git_state(start: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the engine runs from; (None, None) for an installed wheel."""
    here = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())
