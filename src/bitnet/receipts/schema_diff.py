"""Breaking changes between two JSON Schemas: removed properties, newly required properties, type changes,
removed enum values. Consumers of our JSON (receipts, reports) depend on all four."""

from __future__ import annotations

from typing import Any

Finding = tuple[str, str, str]  # (kind, path, message)


def _types(node: dict[str, Any]) -> set[str] | None:
    t = node.get("type")
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def diff_schema(old: Any, new: Any, path: str = "#") -> list[Finding]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    found: list[Finding] = []
    old_t, new_t = _types(old), _types(new)
    if old_t is not None and old_t != new_t:
        found.append(("schema:type_changed", path, f"type {sorted(old_t)} -> {sorted(new_t) if new_t else 'unspecified'}"))
    if "const" in old and old.get("const") != new.get("const"):
        found.append(("schema:type_changed", path, f"const {old['const']!r} -> {new.get('const')!r}"))
    if isinstance(old.get("enum"), list):
        removed = [v for v in old["enum"] if v not in (new.get("enum") or [])]
        if removed:
            found.append(("schema:enum_removed", path, f"enum values removed: {removed}"))
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    for name, sub in old_props.items():
        if name not in new_props:
            found.append(("schema:property_removed", f"{path}/properties/{name}", f"property {name!r} removed"))
        else:
            found += diff_schema(sub, new_props[name], f"{path}/properties/{name}")
    added_required = sorted(set(new.get("required") or []) - set(old.get("required") or []))
    for name in added_required:
        found.append(("schema:required_added", f"{path}/properties/{name}", f"property {name!r} is now required"))
    for key in ("items", "additionalProperties"):
        if isinstance(old.get(key), dict):
            found += diff_schema(old[key], new.get(key) or {}, f"{path}/{key}")
    for defs in ("$defs", "definitions"):
        for name, sub in (old.get(defs) or {}).items():
            target = (new.get(defs) or {}).get(name)
            if target is None:
                found.append(("schema:property_removed", f"{path}/{defs}/{name}", f"definition {name!r} removed"))
            else:
                found += diff_schema(sub, target, f"{path}/{defs}/{name}")
    return found
