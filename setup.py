"""Build hook for the optional native CPU kernels.

All metadata lives in pyproject.toml; this file only declares C extensions. They are optional: when the compiler
or an instruction set is missing, the build continues and `bitnet` falls back to the numpy reference kernels with a
warning (see bitnet.kernels.native).
"""

from setuptools import setup

setup(ext_modules=[])
