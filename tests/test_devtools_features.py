"""check-features, preflight, gpu-preflight (no-GPU verdict here) and vendor-ggml coverage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bitnet.receipts.features import check_features

PYPROJECT = """
[project]
name = "demo"
version = "0.1"
dependencies = ["numpy>=2"]
[project.optional-dependencies]
gpu = ["torch==2.13.0"]
viz = ["matplotlib>=3.7"]
"""


def _project(tmp_path: Path, files: dict[str, str], pyproject: str = PYPROJECT) -> Path:
    (tmp_path / "pyproject.toml").write_text(pyproject)
    for rel, text in {"src/demo/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path


def test_guarded_imports_pass(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "src/demo/lazy.py": "def f():\n    import torch\n    return torch\n",
        "src/demo/tried.py": "try:\n    import matplotlib\nexcept ImportError:\n    matplotlib = None\n",
        "src/demo/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
        # a torch-only module is fine when everything that imports it does so lazily
        "src/demo/gpu_only.py": "import torch\n",
        "src/demo/uses_gpu.py": "def run():\n    from demo import gpu_only\n    return gpu_only\n",
        "src/demo/core.py": "import numpy as np\nimport json\nfrom . import lazy\n",
    })
    report = check_features(root, package="demo", import_check=False)
    assert report["ok"], report["errors"]
    assert {s["module"] for s in report["optional_imports"]} == {"torch", "matplotlib"}


def test_unguarded_undeclared_and_policy_violations(tmp_path: Path) -> None:
    bad_pyproject = PYPROJECT.replace('"torch==2.13.0"', '"torch>=2"').replace('["matplotlib>=3.7"]', '["matplotlib>=3.7", "numpy"]')
    root = _project(tmp_path, {
        "src/demo/__init__.py": "from demo import eager\n",
        "src/demo/gpu_only.py": "import torch\n",
        "src/demo/eager.py": "from demo.gpu_only import *\nimport matplotlib.pyplot as plt\n",
        "src/demo/mystery.py": "def f():\n    import not_a_declared_pkg_xyz\n",
    }, bad_pyproject)
    errors = "\n".join(check_features(root, package="demo", import_check=False)["errors"])
    assert "src/demo/eager.py:1: imports demo.gpu_only without a guard" in errors
    assert "src/demo/__init__.py:1: imports demo.eager without a guard, and demo.eager imports" in errors
    assert "not_a_declared_pkg_xyz" in errors
    assert "torch must be pinned" in errors
    assert "numpy is a core dependency and also in extras ['viz']" in errors


def test_this_repository_is_consistent() -> None:
    root = Path(__file__).resolve().parents[1]
    report = check_features(root, import_check=False)
    assert report["ok"], report["errors"]


def _xtask(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitnet.cli.xtask", *args], capture_output=True, text=True, timeout=300)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="asserts the no-GPU verdict")
def test_preflight_without_gpu_exits_1_and_says_why() -> None:
    res = _xtask("preflight", "--format", "json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["usable"] is False and report["cuda"]["available"] is False and report["reasons"]
    gpu = _xtask("gpu-preflight", "--format", "json")
    assert gpu.returncode == 1
    body = json.loads(gpu.stdout)
    assert body["ok"] is False and body["devices"] == [] and "no usable CUDA GPU" in body["message"]


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_gpu_preflight_runs_kernels_on_gpu() -> None:
    from bitnet.receipts.gpu import gpu_preflight

    report = gpu_preflight()
    assert report["devices"] and all(t["name"] for d in report["devices"] for t in d["tests"])
    assert report["ok"], report


def test_vendor_ggml_coverage_is_real(tmp_path: Path) -> None:
    import gguf

    from bitnet.receipts.ggml_coverage import dequantize, find_ggml_library

    out = tmp_path / "cov.json"
    res = _xtask("vendor-ggml", "--output", str(out), "--format", "json")
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    rows = {r["type"]: r for r in report["types"]}
    assert rows["TQ2_0"]["gguf_py"] and rows["IQ2_S"]["gguf_py"] and rows["I32"]["via"] == "numpy"
    if find_ggml_library() is None:
        assert report["ggml_library"] is None
        assert all(r["crosscheck"].startswith("not run") for r in report["types"])
    else:
        assert rows["Q4_0"]["crosscheck"] == "match" and not report["mismatches"]
    # dequantize really decodes: a Q8_0 round trip is within half a quantization step
    values = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    packed = gguf.quants.quantize(values.reshape(1, -1), gguf.GGMLQuantizationType.Q8_0)
    back = dequantize(np.asarray(packed).reshape(-1), "Q8_0")
    assert np.max(np.abs(back - values)) <= np.max(np.abs(values)) / 127 * 0.51 + 1e-6
    assert dequantize(np.arange(4, dtype=np.int16).view(np.uint8), "I16").tolist() == [0, 1, 2, 3]
