"""Ed25519 signatures over the RFC 8785 canonical JSON of a receipt.

Canonical JSON (JCS) makes the signed bytes independent of key order and whitespace, so a receipt can be
pretty-printed, re-serialized or moved between tools and still verify; any change to a value breaks it.
Keys are ordinary PEM files, e.g. `openssl genpkey -algorithm ed25519 -out key.pem` and
`openssl pkey -in key.pem -pubout -out key.pub.pem`.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

from bitnet.errors import InvalidInputError, NotFoundError

SIGNATURE_FIELD = "signature"


def canonical_bytes(receipt: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of the receipt without its signature block: what is signed."""
    import rfc8785

    body = {k: v for k, v in receipt.items() if k != SIGNATURE_FIELD}
    return rfc8785.dumps(body)


def _read(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"key file not found: {p}")
    return p.read_bytes()


def load_private_key(path: str | Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInputError(f"{path}: the key is {type(key).__name__}, receipts are signed with Ed25519")
    return key


def load_public_key(path: str | Path) -> Any:
    """A PEM public key, or a file holding the base64 raw 32-byte key (as stored in receipts)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read(path)
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise InvalidInputError(f"{path}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidInputError(f"{path}: the key is {type(key).__name__}, receipts are signed with Ed25519")
        return key
    return _raw_public_key(data.strip().decode("ascii", "replace"), str(path))


def _raw_public_key(b64: str, where: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: not a base64 raw Ed25519 public key ({exc})") from exc


def public_key_b64(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign_receipt(receipt: dict[str, Any], private_key_path: str | Path) -> dict[str, Any]:
    """A copy of `receipt` with a `signature` block (any earlier signature is replaced)."""
    key = load_private_key(private_key_path)
    signed = copy.deepcopy(receipt)
    signed.pop(SIGNATURE_FIELD, None)
    signature = key.sign(canonical_bytes(signed))
    signed[SIGNATURE_FIELD] = {
        "algorithm": "ed25519",
        "canonicalization": "rfc8785",
        "public_key": public_key_b64(key.public_key()),
        "value": base64.b64encode(signature).decode("ascii"),
    }
    return signed


def check_signature(receipt: dict[str, Any], pubkey_path: str | Path | None) -> tuple[bool, str]:
    """(ok, message). With `pubkey_path` the signer must be that key; without it, only integrity is checked
    against the key embedded in the receipt (anyone can re-sign with their own key, so that proves no origin)."""
    from cryptography.exceptions import InvalidSignature

    block = receipt.get(SIGNATURE_FIELD)
    if not isinstance(block, dict):
        return False, "the receipt is not signed"
    if block.get("algorithm") != "ed25519" or block.get("canonicalization") != "rfc8785":
        return False, f"unsupported signature scheme {block.get('algorithm')!r}/{block.get('canonicalization')!r}"
    try:
        embedded = _raw_public_key(str(block.get("public_key", "")), "signature.public_key")
        signature = base64.b64decode(str(block.get("value", "")), validate=True)
    except (InvalidInputError, ValueError) as exc:
        return False, f"malformed signature block: {exc}"
    key = embedded
    if pubkey_path is not None:
        key = load_public_key(pubkey_path)
        if public_key_b64(key) != public_key_b64(embedded):
            return False, "the receipt was signed by a different key than --pubkey"
    try:
        key.verify(signature, canonical_bytes(receipt))
    except InvalidSignature:
        return False, "the signature does not match the receipt's content (edited after signing)"
    who = "the --pubkey key" if pubkey_path is not None else "its embedded key (integrity only; pass --pubkey to check the signer)"
    return True, f"Ed25519 signature valid for {who}"
