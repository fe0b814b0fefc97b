"""preflight and gpu-preflight: is a GPU backend usable here, and does a kernel really run on it?

preflight only looks (imports, torch.cuda queries). gpu-preflight also launches work on every visible device and
checks the result against a host computation, so a broken driver or a mis-built wheel is caught before a long
benchmark starts.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _import_torch() -> tuple[Any | None, str | None]:
    try:
        import torch
    except Exception as exc:  # ImportError, or OSError for a broken CUDA wheel
        return None, f"{type(exc).__name__}: {exc}"
    return torch, None


def preflight() -> dict[str, Any]:
    """What GPU support this machine has: torch (CUDA build?), visible devices, Triton. `usable` drives exit 0/1."""
    reasons: list[str] = []
    torch, torch_err = _import_torch()
    info: dict[str, Any] = {
        "torch": {"installed": torch is not None, "version": getattr(torch, "__version__", None), "error": torch_err,
                  "cuda_build": getattr(getattr(torch, "version", None), "cuda", None)},
        "cuda": {"available": False, "device_count": 0, "devices": []},
        "triton": {"installed": False, "version": _version("triton"), "error": None},
        "nvidia_smi": shutil.which("nvidia-smi"),
    }
    if torch is None:
        reasons.append(f"torch is not importable ({torch_err}); install bitnet-py[gpu]")
    else:
        if info["torch"]["cuda_build"] is None:
            reasons.append(f"torch {torch.__version__} is a CPU-only build")
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            info["cuda"].update(available=True, device_count=n,
                                devices=[torch.cuda.get_device_name(i) for i in range(n)])
        else:
            reasons.append("torch.cuda.is_available() is False (no CUDA device or driver)")
    try:
        import triton

        info["triton"].update(installed=True, version=getattr(triton, "__version__", info["triton"]["version"]))
    except Exception as exc:
        info["triton"]["error"] = f"{type(exc).__name__}: {exc}"
        reasons.append("triton is not importable: the cuda backend's kernels are Triton kernels")
    info["usable"] = bool(info["cuda"]["available"] and info["triton"]["installed"])
    info["backend"] = "cuda" if info["usable"] else None
    info["reasons"] = reasons
    return info


def _torch_selftest(torch: Any, index: int) -> dict[str, Any]:
    """A matmul of small integers on the device: exact in float32, so the result must equal the host's."""
    dev = torch.device("cuda", index)
    gen = torch.Generator().manual_seed(1234 + index)
    a = torch.randint(-8, 8, (128, 96), generator=gen, dtype=torch.int32).to(torch.float32)
    b = torch.randint(-8, 8, (96, 64), generator=gen, dtype=torch.int32).to(torch.float32)
    expected = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.float32)
    got = (a.to(dev) @ b.to(dev)).cpu()
    torch.cuda.synchronize(dev)
    ok = bool(torch.equal(got, expected))
    return {"name": "torch_int_matmul", "ok": ok, "max_abs_diff": float((got - expected).abs().max())}


def _triton_selftest(torch: Any, index: int) -> dict[str, Any]:
    """A Triton kernel (x * 3 + 1 over int32) compiled and launched on the device."""
    import triton
    import triton.language as tl

    @triton.jit
    def affine(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        tl.store(y_ptr + offs, x * 3 + 1, mask=mask)

    dev = torch.device("cuda", index)
    n = 5000
    x = torch.arange(n, dtype=torch.int32, device=dev)
    y = torch.empty_like(x)
    affine[(triton.cdiv(n, 1024),)](x, y, n, BLOCK=1024)
    torch.cuda.synchronize(dev)
    expected = torch.arange(n, dtype=torch.int32) * 3 + 1
    ok = bool(torch.equal(y.cpu(), expected))
    return {"name": "triton_affine", "ok": ok, "mismatches": int((y.cpu() != expected).sum())}


def gpu_preflight() -> dict[str, Any]:
    """Per device: name, memory, compute capability, and self-checking kernels. `ok` drives exit 0/1."""
    base = preflight()
    result: dict[str, Any] = {"preflight": base, "devices": [], "ok": False}
    if not base["cuda"]["available"]:
        result["message"] = "no usable CUDA GPU: " + "; ".join(base["reasons"])
        return result
    torch, _ = _import_torch()
    assert torch is not None
    all_ok = True
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        tests = []
        for test in (_torch_selftest, _triton_selftest):
            if test is _triton_selftest and not base["triton"]["installed"]:
                tests.append({"name": "triton_affine", "ok": False, "error": "triton not importable"})
                continue
            try:
                tests.append(test(torch, i))
            except Exception as exc:  # a kernel that fails to compile or launch is the finding
                tests.append({"name": test.__name__.strip("_"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        dev_ok = all(t["ok"] for t in tests)
        all_ok &= dev_ok
        result["devices"].append({
            "index": i, "name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_total_bytes": int(total), "memory_free_bytes": int(free),
            "multiprocessors": int(props.multi_processor_count), "tests": tests, "ok": dev_ok,
        })
    result["cuda_runtime"] = torch.version.cuda
    result["ok"] = all_ok
    result["message"] = "all GPU self-tests passed" if all_ok else "a GPU self-test failed"
    return result
