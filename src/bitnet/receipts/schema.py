"""The receipt's JSON Schema (shipped as package data) and the one function that validates against it."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

#: the version this engine writes; verify-receipt accepts any 1.x (fields are only ever added within 1.x)
RECEIPT_SCHEMA_VERSION = "1.1.0"
RECEIPT_TYPE = "bitnet.benchmark"
SCHEMA_FILE = "receipt.schema.json"


@functools.cache
def load_schema() -> dict[str, Any]:
    """The receipt JSON Schema as a dict (read once from the installed package)."""
    text = resources.files("bitnet.receipts").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def schema_errors(receipt: Any) -> list[str]:
    """Every JSON Schema violation, as "path: message" strings (empty when valid)."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(load_schema())
    validator = validator_cls(load_schema(), format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(receipt), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
