"""verify-receipt --replay: re-run the recorded prompt with the recorded numerics and compare token ids and the
logits digest. This is the check that cannot be satisfied by editing JSON: the model file (by sha256) must
really produce those tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitnet.receipts.greedy import DIGEST_ALGORITHM, greedy_run


def replay_receipt(receipt: dict[str, Any]) -> tuple[bool, str]:
    from bitnet.fsutil import sha256_file
    from bitnet.receipts.benchmark import load_engine

    model, run, output = receipt["model"], receipt["run"], receipt["output"]
    path = Path(model["path"])
    if not path.is_file():
        return False, f"cannot replay: model file {path} not found"
    actual = sha256_file(path)
    if actual != model["sha256"]:
        return False, f"cannot replay: {path} has sha256 {actual[:16]}…, the receipt recorded {model['sha256'][:16]}…"
    if output["logits_digest"].get("algorithm") != DIGEST_ALGORITHM:
        return False, f"unknown logits digest algorithm {output['logits_digest'].get('algorithm')!r}"
    tok_path = receipt["tokenizer"].get("path")
    numerics = (receipt.get("engine") or {}).get("numerics") or {}
    engine = load_engine(path, backend=str(receipt.get("backend", "cpu")),
                         threads=(receipt.get("environment") or {}).get("threads"),
                         tokenizer=Path(tok_path) if tok_path else None, numerics=numerics)
    problems = []
    if engine.tokenizer is not None:
        encoded = [int(t) for t in engine.tokenizer.encode(run["prompt"])]
        if encoded != run["prompt_tokens"]:
            problems.append("the prompt no longer encodes to the recorded prompt_tokens")
    result = greedy_run(engine, list(run["prompt_tokens"]), int(run["tokens_generated"]))
    if result.token_ids != output["token_ids"]:
        first = next((i for i, (a, b) in enumerate(zip(result.token_ids, output["token_ids"], strict=False)) if a != b),
                     min(len(result.token_ids), len(output["token_ids"])))
        problems.append(f"token ids differ from position {first}: replay {result.token_ids[first:first + 5]} vs "
                        f"recorded {output['token_ids'][first:first + 5]}")
    if result.digest != output["logits_digest"]["value"]:
        problems.append(f"final logits digest {result.digest[:16]}… != recorded {output['logits_digest']['value'][:16]}…")
    if problems:
        return False, "; ".join(problems)
    return True, f"replayed {len(result.token_ids)} tokens: ids and logits digest identical"
