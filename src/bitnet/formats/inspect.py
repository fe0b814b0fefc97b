"""`bitnet inspect`: everything a user asks first about a GGUF model, as one JSON-able dict and a rich view."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from bitnet.errors import FormatError
from bitnet.formats.gguf_reader import open_gguf
from bitnet.model.config import ModelConfig

#: metadata keys summarised elsewhere (large token arrays) and left out of the `metadata` dump
_BULKY = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
)


def _tokenizer_summary(md: dict[str, Any]) -> dict[str, Any] | None:
    tokens = md.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None

    def tok(key: str) -> dict[str, Any] | None:
        i = md.get(f"tokenizer.ggml.{key}_token_id")
        if i is None:
            return None
        return {"id": i, "text": tokens[i] if 0 <= i < len(tokens) else None}

    types = Counter(md.get("tokenizer.ggml.token_type") or [])
    return {
        "model": md.get("tokenizer.ggml.model"),
        "pre": md.get("tokenizer.ggml.pre"),
        "n_tokens": len(tokens),
        "n_merges": len(md.get("tokenizer.ggml.merges") or []),
        "token_types": {str(k): v for k, v in sorted(types.items())},
        "bos": tok("bos"),
        "eos": tok("eos"),
        "eot": tok("eot"),
        "add_bos": md.get("tokenizer.ggml.add_bos_token"),
        "chat_template": md.get("tokenizer.chat_template") is not None,
    }


def inspect_model(path: str | Path, *, with_hash: bool = True, with_tensors: bool = True) -> dict[str, Any]:
    """Arch, config (if the arch is a BitNet one), tensor types and sizes, tokenizer summary and sha256."""
    from bitnet.formats.fixtures import sha256_file

    p = Path(path)
    with open_gguf(p) as f:
        try:
            config: dict[str, Any] | None = ModelConfig.from_gguf(f.metadata, f.tensors).to_dict()
            config_error = None
        except FormatError as exc:
            config, config_error = None, str(exc)
        by_type: dict[str, dict[str, int]] = {}
        for t in f.tensors.values():
            e = by_type.setdefault(t.type_name, {"count": 0, "bytes": 0, "elements": 0})
            e["count"] += 1
            e["bytes"] += t.n_bytes
            e["elements"] += t.n_elements
        info: dict[str, Any] = {
            "path": str(p),
            "size_bytes": f.file_size,
            "sha256": sha256_file(p) if with_hash else None,
            "gguf_version": f.version,
            "arch": f.arch,
            "name": f.metadata.get("general.name"),
            "file_type": f.metadata.get("general.file_type"),
            "n_kv": f.n_kv,
            "n_tensors": f.n_tensors,
            "n_parameters": sum(t.n_elements for t in f.tensors.values()),
            "alignment": f.alignment,
            "config": config,
            "config_error": config_error,
            "tensor_types": by_type,
            "tokenizer": _tokenizer_summary(f.metadata),
            "metadata": {k: v for k, v in f.metadata.items() if k not in _BULKY},
        }
        if with_tensors:
            info["tensors"] = [
                {
                    "name": t.name,
                    "type": t.type_name,
                    "shape": list(t.shape),
                    "bytes": t.n_bytes,
                    "offset": t.offset,
                }
                for t in f.tensors.values()
            ]
    return info


def render_inspect(info: dict[str, Any], console: Any) -> None:
    """Human view of `inspect_model`'s dict."""
    head = Table(show_header=False, title=info["path"])
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row("arch", str(info["arch"]))
    head.add_row("size", f"{info['size_bytes']:,} bytes ({info['size_bytes'] / 2**20:.1f} MiB)")
    head.add_row("sha256", str(info["sha256"]))
    head.add_row("parameters", f"{info['n_parameters']:,}")
    head.add_row("tensors / kv", f"{info['n_tensors']} / {info['n_kv']}")
    for k, v in (info["config"] or {}).items():
        head.add_row(f"config.{k}", str(v))
    if info["config_error"]:
        head.add_row("config", f"[red]{info['config_error']}[/red]")
    tok = info["tokenizer"]
    if tok:
        head.add_row(
            "tokenizer",
            f"{tok['model']} (pre {tok['pre']}), {tok['n_tokens']} tokens, {tok['n_merges']} merges",
        )
        head.add_row("bos / eos", f"{tok['bos']} / {tok['eos']}; add_bos={tok['add_bos']}")
    console.print(head)
    types = Table(title="tensor types")
    for col in ("type", "count", "MiB", "elements"):
        types.add_column(col)
    for name, e in sorted(info["tensor_types"].items()):
        types.add_row(name, str(e["count"]), f"{e['bytes'] / 2**20:.2f}", f"{e['elements']:,}")
    console.print(types)
    if info.get("tensors"):
        tt = Table(title="tensors")
        for col in ("name", "type", "shape", "bytes"):
            tt.add_column(col)
        for t in info["tensors"]:
            tt.add_row(t["name"], t["type"], "x".join(map(str, t["shape"])), f"{t['bytes']:,}")
        console.print(tt)
