"""`bitnet generate` and `bitnet chat`: thin shells over `bitnet.model.textgen`.

Text mode streams the generated text to stdout as it is produced and prints speed on stderr; `--format json`
prints one JSON result (text, token ids, timings, and the engine description: profile, kv dtype, numerics,
kernels) when done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bitnet.cli.output import Output, with_output


def _engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by generate and chat (model, sampling, numerics, device)."""
    options = [
        click.option("-m", "--model", "model", required=True, type=click.Path(path_type=Path, dir_okay=False),
                     help="GGUF model file."),
        click.option("--max-tokens", "-n", type=click.IntRange(min=0), default=128, show_default=True),
        click.option("--temperature", type=click.FloatRange(min=0.0), default=0.8, show_default=True,
                     help="0 = greedy."),
        click.option("--top-k", type=click.IntRange(min=0), default=40, show_default=True, help="0 = off."),
        click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=0.95,
                     show_default=True),
        click.option("--repeat-penalty", type=click.FloatRange(min=0.0, min_open=True), default=1.0,
                     show_default=True),
        click.option("--seed", type=int, default=None, help="sampling seed (default: $BITNET_SEED or random)."),
        click.option("--profile", type=click.Choice(["per-token", "block256"]), default=None,
                     help="activation quantization (default: from the arch)."),
        click.option("--ffn-act", type=click.Choice(["relu2", "silu"]), default=None,
                     help="override the FFN activation of the arch."),
        click.option("--kv-dtype", type=click.Choice(["f32", "f16"]), default="f32", show_default=True),
        click.option("--numerics", type=click.Choice(["default", "bitnet-cpp"]), default="default",
                     show_default=True, help="bitnet-cpp reproduces bitnet.cpp's f16 rounding points."),
        click.option("--threads", type=click.IntRange(min=1), default=None),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--tokenizer", "tokenizer", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="tokenizer.json to use instead of the model's own vocabulary."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def _load(model: Path, kv_dtype: str, numerics: str, **kw: Any) -> Any:
    from bitnet.model import load_model

    if numerics == "bitnet-cpp" and kv_dtype == "f32":
        kv_dtype = "f16"  # the mode defines its own cache dtype; --kv-dtype f32 is the flag's default, not a choice
    return load_model(model, kv_dtype=kv_dtype, numerics=numerics, **kw)


def _gen_config(max_tokens: int, temperature: float, top_k: int, top_p: float, repeat_penalty: float,
                seed: int | None) -> Any:
    from bitnet.model import GenerationConfig

    return GenerationConfig(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            repeat_penalty=repeat_penalty, seed=seed)


@click.command()
@click.option("-p", "--prompt", required=True, help="prompt text.")
@_engine_options
@with_output
def generate(out: Output, prompt: str, model: Path, max_tokens: int, temperature: float, top_k: int, top_p: float,
             repeat_penalty: float, seed: int | None, profile: str | None, ffn_act: str | None, kv_dtype: str,
             numerics: str, threads: int | None, device: str, tokenizer: Path | None) -> int:
    """Generate text from a prompt, streaming tokens to stdout (tok/s on stderr)."""
    from bitnet.model.textgen import generate_text

    engine = _load(model, kv_dtype, numerics, profile=profile, ffn_act=ffn_act, backend=device, threads=threads,
                   tokenizer_json=tokenizer)
    cfg = _gen_config(max_tokens, temperature, top_k, top_p, repeat_penalty, seed)
    on_text = None if out.json else _stream
    res = generate_text(engine, prompt, cfg, on_text)
    if out.json:
        out.result({"ok": True, "prompt": prompt, **res.to_dict(), "engine": engine.describe()})
    else:
        sys.stdout.write("\n")
        sys.stdout.flush()
        _speed(out, res)
    return 0


@click.command()
@click.option("--system", default=None, help="system message.")
@_engine_options
@with_output
def chat(out: Output, system: str | None, model: Path, max_tokens: int, temperature: float, top_k: int,
         top_p: float, repeat_penalty: float, seed: int | None, profile: str | None, ffn_act: str | None,
         kv_dtype: str, numerics: str, threads: int | None, device: str, tokenizer: Path | None) -> int:
    """Chat in the BitNet template: one user message per stdin line, replies on stdout; EOF ends the chat."""
    from bitnet.model.textgen import ChatSession

    engine = _load(model, kv_dtype, numerics, profile=profile, ffn_act=ffn_act, backend=device, threads=threads,
                   tokenizer_json=tokenizer)
    session = ChatSession(engine, _gen_config(max_tokens, temperature, top_k, top_p, repeat_penalty, seed), system)
    turns = []
    interactive = sys.stdin.isatty() and not out.json
    while True:
        if interactive:
            out.err.print("[bold]> [/bold]", end="")
        line = sys.stdin.readline()
        if not line:
            break
        message = line.rstrip("\n")
        if not message.strip():
            continue
        res = session.send(message, None if out.json else _stream)
        turns.append({"user": message, **res.to_dict()})
        if not out.json:
            sys.stdout.write("\n")
            sys.stdout.flush()
            _speed(out, res)
    if out.json:
        out.result({"ok": True, "turns": turns, "messages": session.messages, "engine": engine.describe()})
    return 0


def _stream(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _speed(out: Output, res: Any) -> None:
    out.log(
        f"[dim]{len(res.prompt_tokens)} prompt tokens at {res.prefill_tok_s:.1f} tok/s, "
        f"{len(res.tokens)} generated at {res.decode_tok_s:.1f} tok/s ({res.stop_reason})[/dim]"
    )
