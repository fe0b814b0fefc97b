"""The C++ references must load our fixtures and tokenize exactly like tokenizer.json: upstream llama.cpp (arch
`bitnet`, TQ1_0/TQ2_0, with and without `.scale` tensors) and Microsoft's bitnet.cpp (arch bitnet-b1.58, I2_S).

Needs the references built by the crossval area (`xtask fetch-cpp`, flavors "llama.cpp" and "bitnet"); each test
skips cleanly when its reference is not there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from bitnet.errors import BitnetError
from bitnet.formats.fixtures import tokenizer_path_for

pytestmark = pytest.mark.cpp

TEXTS = [
    "The river in winter is quiet.",
    "Hello, world! 17 times 23 is 391; isn't it?  Two  spaces\nand a newline.",
    "café — “quoted” naïve résumé",
    "   leading spaces, trailing spaces   ",
    "I'm sure they'll say we've done it; it's 12345678 and 3.14159.",
    "\n\n\tTabs\tand\n\nnewlines\r\n",
    "def greet(name):\n    return f\"Hello, {name}!\"",
    "日本語のテキスト and emoji 🙂👍",
]


def _find(flavor: str):
    try:
        from bitnet.crossval.cpp import find_reference

        return find_reference(flavor)
    except (ImportError, BitnetError) as exc:
        pytest.skip(f"C++ reference {flavor!r} not available: {exc}")


@pytest.fixture(scope="module")
def reference():
    return _find("llama.cpp")


@pytest.fixture(scope="module")
def bitnet_reference():
    return _find("bitnet")


@pytest.mark.parametrize(("fmt", "scales"), [("tq2_0", False), ("tq1_0", False), ("tq2_0", True)])
def test_upstream_llama_cpp_loads_bitnet_fixture(reference, fixture_model, fmt, scales):
    from bitnet.crossval.ffi import CppSession

    path = fixture_model("tiny", fmt, "bitnet", scale_tensors=scales)
    hf = Tokenizer.from_file(str(tokenizer_path_for(path)))
    with CppSession(path, manifest=reference, n_ctx=64) as s:
        assert s.n_vocab == 512
        assert s.bos_id == 509 and s.add_bos
        for text in TEXTS:
            assert s.tokenize(text, add_bos=True) == hf.encode(text).ids, text
        logits = s.eval_all_logits(hf.encode(TEXTS[0]).ids)
        assert logits.shape == (len(hf.encode(TEXTS[0]).ids), 512)
        assert np.isfinite(logits).all() and logits.std() > 1e-3


# One C++ reference per process (two ggml builds bind to each other), so the fork is checked in a child process.
_FORK_CHILD = """
import json, sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from bitnet.crossval.cpp import find_reference
from bitnet.crossval.ffi import CppSession
from bitnet.formats.fixtures import tokenizer_path_for

path, texts = Path(sys.argv[1]), json.loads(sys.argv[2])
hf = Tokenizer.from_file(str(tokenizer_path_for(path)))
with CppSession(path, manifest=find_reference("bitnet"), n_ctx=64) as s:
    assert s.n_vocab == 512 and s.bos_id == 509, (s.n_vocab, s.bos_id)
    for text in texts:
        assert s.tokenize(text, add_bos=True) == hf.encode(text).ids, text
    logits = s.eval_all_logits(hf.encode(texts[0]).ids)
    assert np.isfinite(logits).all() and logits.std() > 1e-3
print("ok")
"""


def test_bitnet_cpp_loads_i2s_fixture(bitnet_reference, fixture_model):
    """Microsoft's fork (arch bitnet-b1.58, I2_S) must load our I2_S fixture and tokenize like tokenizer.json."""
    path = fixture_model("tiny", "i2_s", "bitnet-b1.58")
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_CHILD, str(path), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
