"""Build hook for the optional native CPU kernels.

All metadata lives in pyproject.toml; this file only declares C extensions. They are optional: when the compiler
or an instruction set is missing, the build continues and `bitnet` falls back to the numpy reference kernels with a
warning (see bitnet.kernels.native).

The kernels are compiled for the baseline x86-64 target; the AVX2 and AVX-512 VNNI translation units switch their own
target with `#pragma GCC target` and are only entered after a runtime CPU check, so one build runs on any x86-64.
"""

import sys

from setuptools import Extension, setup

_NATIVE = "src/bitnet/kernels/native/"
_SOURCES = ["bn_module.c", "bn_common.c", "bn_forward.c", "bn_isa_scalar.c", "bn_isa_avx2.c", "bn_isa_avx512.c"]
_CFLAGS = ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno"]
_LDFLAGS: list[str] = []
if sys.platform != "win32":
    _CFLAGS.append("-fopenmp")
    _LDFLAGS.append("-fopenmp")

setup(
    ext_modules=[
        Extension(
            "bitnet.kernels.native._bnkernels",
            sources=[_NATIVE + s for s in _SOURCES],
            depends=[_NATIVE + "bn_kernels.h", _NATIVE + "bn_isa_impl.h", _NATIVE + "bn_attn_tmpl.h"],
            extra_compile_args=_CFLAGS,
            extra_link_args=_LDFLAGS,
            libraries=[] if sys.platform == "win32" else ["m"],
            optional=True,
        )
    ]
)
