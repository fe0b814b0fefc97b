"""The LLaMA-3 `tokenizer.json` (BitNet b1.58 2B4T uses its 128,256-entry vocabulary).

Two sources: the official gated repo (needs HF_TOKEN and an accepted licence) or an ungated mirror. The file is
only accepted if the `tokenizers` library loads it and its vocabulary is within 1% of 128,256 - checked on the
`.part`, so a wrong or truncated file never lands at the final path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitnet.errors import AuthError, InvalidInputError
from bitnet.hub.download import Downloader, DownloadRequest

SOURCES: dict[str, str] = {
    "official": "meta-llama/Meta-Llama-3-8B",
    "mirror": "baseten/Meta-Llama-3-tokenizer",
}
LLAMA3_VOCAB_SIZE = 128_256
VOCAB_TOLERANCE = 0.01


def llama3_vocab_size(path: Path) -> int:
    """Load `path` with `tokenizers` and return its vocabulary size; InvalidInputError unless it is LLaMA-3-like."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust binding raises a bare Exception for every parse problem
        raise InvalidInputError(f"{path.name} is not a loadable tokenizer.json: {exc}") from None
    size = tok.get_vocab_size(with_added_tokens=True)
    low = int(LLAMA3_VOCAB_SIZE * (1 - VOCAB_TOLERANCE))
    high = int(LLAMA3_VOCAB_SIZE * (1 + VOCAB_TOLERANCE))
    if not low <= size <= high:
        raise InvalidInputError(
            f"{path.name} has a vocabulary of {size} tokens; a LLaMA-3 tokenizer has about {LLAMA3_VOCAB_SIZE} "
            f"(accepted {low}..{high})"
        )
    return size


def fetch_llama3_tokenizer(
    downloader: Downloader, out_dir: Path, *, source: str = "mirror", force: bool = False
) -> dict[str, Any]:
    """`out_dir/tokenizer.json`, downloaded and checked; an existing valid file is kept (idempotent)."""
    if source not in SOURCES:
        raise InvalidInputError(f"unknown tokenizer source {source!r}; expected one of {sorted(SOURCES)}")
    repo = SOURCES[source]
    dest = out_dir.resolve() / "tokenizer.json"
    if dest.exists() and not force:
        try:
            size = llama3_vocab_size(dest)
        except InvalidInputError as exc:
            downloader.sink.emit("info", message=f"existing {dest} is not usable ({exc}); downloading it again")
            force = True
        else:
            result = {"ok": True, "status": "exists", "path": str(dest), "vocab_size": size, "source": source}
            downloader.sink.emit("done", repo=repo, file="tokenizer.json", **result)
            return result
    if source == "official" and not downloader.token:
        raise AuthError(
            f"the official tokenizer ({repo}) is gated and HF_TOKEN is not set",
            hint="export HF_TOKEN=<a token whose account accepted the Llama 3 licence>, or use --source mirror",
        )
    result = downloader.download(
        DownloadRequest(repo_id=repo, filename="tokenizer.json", out_dir=out_dir, dest=dest, force=force),
        validate=llama3_vocab_size,
    )
    return {
        "ok": True,
        "status": result.status,
        "path": str(dest),
        "vocab_size": llama3_vocab_size(dest),
        "source": source,
        "repo": repo,
        "download": result.to_dict(),
    }
