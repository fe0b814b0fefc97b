"""Loading GGUFs into the engine: weights stay packed views of the file, and broken models fail with FormatError."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bitnet.errors import FormatError


def _write_variant(tmp_path: Path, name: str, drop: str | None = None, reshape: str | None = None) -> Path:
    from bitnet.formats.fixtures import fixture_config, fixture_tensors
    from bitnet.formats.gguf_writer import write_gguf

    cfg = fixture_config("tiny", "bitnet-b1.58")
    specs = []
    for spec in fixture_tensors(cfg, "i2_s", seed=1):
        if spec.name == drop:
            continue
        if spec.name == reshape:  # same bytes, transposed ggml shape: a shape mismatch the loader must catch
            spec = replace(spec, shape=tuple(reversed(spec.shape)))
        specs.append(spec)
    return write_gguf(tmp_path / name, cfg.arch, cfg.gguf_metadata(), specs)


def test_ternary_weights_stay_packed_views_of_the_file(fixture_model) -> None:
    from bitnet.model import load_model

    engine = load_model(fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58", seed=0))
    w = engine.weights.layers[0].wq
    assert w.fmt == "i2_s" and w.data.dtype == np.uint8 and w.data.nbytes == w.n_out * w.n_in // 4 + 32
    assert not w.data.flags.owndata and w.scale is not None and w.scale > 0  # a view into the memory map
    assert engine.weights.token_embd.fmt == "f16" and engine.weights.output is engine.weights.token_embd
    assert engine.tokenizer is not None


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    from bitnet.model import load_model

    path = _write_variant(tmp_path, "missing.gguf", drop="blk.1.ffn_up.weight")
    with pytest.raises(FormatError, match=r"blk\.1\.ffn_up\.weight"):
        load_model(path)


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    from bitnet.model import load_model

    path = _write_variant(tmp_path, "shape.gguf", reshape="blk.0.ffn_down.weight")
    with pytest.raises(FormatError, match=r"blk\.0\.ffn_down\.weight"):
        load_model(path)


def test_model_without_vocabulary_loads_without_tokenizer(tmp_path: Path) -> None:
    from bitnet.errors import InferenceError
    from bitnet.model import GenerationConfig, load_model
    from bitnet.model.textgen import generate_text

    engine = load_model(_write_variant(tmp_path, "novocab.gguf"))
    assert engine.tokenizer is None
    assert len(list(engine.generate([1, 2, 3], GenerationConfig(max_tokens=3, stop_on_eos=False)))) == 3
    with pytest.raises(InferenceError, match="no tokenizer"):
        generate_text(engine, "hello", GenerationConfig(max_tokens=2))
