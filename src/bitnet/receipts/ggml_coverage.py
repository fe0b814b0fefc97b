"""vendor-ggml: which ggml tensor types can we dequantize, by which implementation, checked against ggml's C code.

The seed downloaded ggml sources to build an FFI for IQ2_S. Here the implementations already exist:
- `gguf.quants` (gguf-py, pure numpy) dequantizes most block types;
- plain integer / float64 types are numpy casts;
- the ggml C library from the llama.cpp build (`libggml-base.so`, built by `xtask fetch-cpp` under the C++
  reference folder) exports `dequantize_row_<type>` for the rest.
`dequantize(data, type)` uses the first available one. The coverage report says, per type, which implementations
exist and whether gguf-py and the C library agree on the same bytes. Nothing is claimed that was not run.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.errors import NotFoundError, ReferenceUnavailable

#: types that are plain numbers: dequantization is a cast
_PLAIN = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F64": np.float64}
CHECK_BLOCKS = 8
#: float types ggml converts with a row function rather than a dequantize_row_*
_ROW_CONVERTERS = {"F16": "ggml_fp16_to_fp32_row", "BF16": "ggml_bf16_to_fp32_row"}


def _types() -> list[Any]:
    import gguf

    return list(gguf.GGMLQuantizationType)


def find_ggml_library(explicit: str | Path | None = None) -> Path | None:
    """`explicit`, else `$BITNET_GGML_LIB`, else libggml-base.so under the C++ reference folder (llama.cpp build)."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise NotFoundError(f"ggml library not found: {p}")
        return p
    env = os.environ.get("BITNET_GGML_LIB")
    if env and Path(env).is_file():
        return Path(env)
    from bitnet.crossval.cpp import flavor_dir

    root = flavor_dir("llama.cpp")
    if root.is_dir():
        for candidate in sorted(root.rglob("libggml-base.so")):
            return candidate
    return None


class GgmlLibrary:
    """`dequantize_row_*` from a ggml shared library, through ctypes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise ReferenceUnavailable(f"cannot load {path}: {exc}") from exc

    def symbol(self, type_name: str) -> str | None:
        """The C function that converts `type_name` rows to float (ggml spells k-quants `q4_K`)."""
        name = type_name.lower()
        candidates = [_ROW_CONVERTERS.get(type_name.upper(), ""), f"dequantize_row_{name}"]
        if name.endswith("_k"):
            candidates.append(f"dequantize_row_{name[:-2]}_K")
        return next((c for c in candidates if c and hasattr(self.lib, c)), None)

    def has(self, type_name: str) -> bool:
        return self.symbol(type_name) is not None

    def dequantize(self, data: np.ndarray, type_name: str, n_elements: int) -> np.ndarray:
        sym = self.symbol(type_name)
        if sym is None:
            raise ReferenceUnavailable(f"{self.path.name} has no row converter for {type_name}")
        fn = getattr(self.lib, sym)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        src = np.ascontiguousarray(data, dtype=np.uint8)
        out = np.empty(n_elements, dtype=np.float32)
        fn(src.ctypes.data, out.ctypes.data, n_elements)
        return out


def _sizes(type_name: str) -> tuple[int, int]:
    import gguf
    from gguf.constants import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]


def dequantize(data: np.ndarray, type_name: str, lib: GgmlLibrary | None = None) -> np.ndarray:
    """Flat float32 values of `data` (raw bytes of whole blocks) of ggml type `type_name` (e.g. "IQ2_S")."""
    import gguf

    name = type_name.upper()
    raw = np.ascontiguousarray(data, dtype=np.uint8)
    if name in _PLAIN:
        return raw.view(_PLAIN[name]).astype(np.float32)
    try:
        return np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name]), dtype=np.float32).reshape(-1)
    except NotImplementedError:
        pass
    if lib is not None and lib.has(name):
        block, size = _sizes(name)
        return lib.dequantize(raw, name, raw.size // size * block)
    raise ReferenceUnavailable(f"no dequantizer for ggml type {name}", hint="run `xtask fetch-cpp` to build libggml-base")


def _sample_bytes(type_name: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """CHECK_BLOCKS blocks of test data: real quantized values where gguf-py can quantize, else random bytes."""
    import gguf

    block, size = _sizes(type_name)
    qtype = gguf.GGMLQuantizationType[type_name]
    values = rng.standard_normal(block * CHECK_BLOCKS).astype(np.float32).reshape(1, -1)
    try:
        return np.asarray(gguf.quants.quantize(values, qtype), dtype=np.uint8).reshape(-1), "quantized normal values"
    except NotImplementedError:
        pass
    raw = rng.integers(0, 256, size * CHECK_BLOCKS, dtype=np.uint8)
    # keep fp16 block scales finite: clear the exponent's top bit of every 16-bit word (random payload otherwise)
    words = raw.view(np.uint16)
    words &= np.uint16(0xBFFF)
    return raw, "random bytes (fp16 fields kept finite)"


def coverage(lib_path: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    import gguf

    path = find_ggml_library(lib_path)
    lib = GgmlLibrary(path) if path is not None else None
    rng = np.random.default_rng(seed)
    rows = []
    for qtype in _types():
        name = qtype.name
        block, size = _sizes(name)
        row: dict[str, Any] = {"type": name, "id": int(qtype), "block_size": block, "type_size": size,
                               "gguf_py": False, "numpy_cast": name in _PLAIN, "c_symbol": bool(lib and lib.has(name)),
                               "crosscheck": "not run", "max_abs_diff": None}
        data, origin = _sample_bytes(name, rng)
        try:
            ours = np.asarray(gguf.quants.dequantize(data, qtype), dtype=np.float32).reshape(-1)
            row["gguf_py"] = True
        except NotImplementedError:
            ours = None
        if ours is not None and lib is not None and row["c_symbol"]:
            theirs = lib.dequantize(data, name, data.size // size * block)
            same = np.array_equal(ours, theirs, equal_nan=True) or np.allclose(ours, theirs, rtol=1e-6, atol=1e-6, equal_nan=True)
            finite = np.isfinite(ours) & np.isfinite(theirs)
            row["max_abs_diff"] = float(np.max(np.abs(ours[finite] - theirs[finite]))) if finite.any() else 0.0
            row["crosscheck"] = "match" if same else "MISMATCH"
            row["crosscheck_input"] = origin
        elif ours is not None and lib is None:
            row["crosscheck"] = "not run (no ggml library)"
        elif ours is not None:
            row["crosscheck"] = "not run (no dequantize_row symbol in C)"
        row["usable"] = bool(row["gguf_py"] or row["numpy_cast"] or row["c_symbol"])
        row["via"] = "gguf-py" if row["gguf_py"] else "numpy" if row["numpy_cast"] else "ggml C" if row["c_symbol"] else None
        rows.append(row)
    return {
        "ggml_library": str(path) if path else None,
        "gguf_py_version": getattr(gguf, "__version__", None),
        "types": rows,
        "usable": [r["type"] for r in rows if r["usable"]],
        "not_usable": [r["type"] for r in rows if not r["usable"]],
        "mismatches": [r["type"] for r in rows if r["crosscheck"] == "MISMATCH"],
    }
