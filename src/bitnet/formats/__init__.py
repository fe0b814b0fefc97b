"""bitnet.formats: model files.

- `ggml_types`: ggml type ids (upstream + I2_S = 36), block sizes, `tensor_nbytes`.
- `gguf_reader`: `open_gguf` (validated, memory-mapped), `TensorInfo`, `dequantize`.
- `gguf_writer`: `write_gguf` (streamed, atomic), `TensorSpec`, `Typed` metadata values.
- `ternary`: absmean ternarization, I2_S / TQ2_0 / TQ1_0 pack and unpack.
- `safetensors_io`, `convert`: HF checkpoints → GGUF, and GGUF re-encoding (llama-quantize equivalent).
- `mapper`: GGUF / HF / internal tensor names and the `gate mapper` check.
- `vocab`, `fixtures`: the shipped corpus, the fixtures' BPE tokenizer, deterministic test models.
- `inspect`: the `bitnet inspect` report.

Submodules are imported explicitly (no re-exports here) so importing one never drags in the others.
"""
