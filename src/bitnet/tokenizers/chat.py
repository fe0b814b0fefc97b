"""The BitNet chat template (BitNet-b1.58-2B-4T; llama.cpp template name `bitnet`).

Each turn is `Role: content<|eot_id|>` with roles System / User / Assistant, and a generation prompt of
`Assistant: `. A single user message therefore renders as `User: msg<|eot_id|>Assistant: `, which is what
bitnet.cpp's `llama_chat_apply_template` produces (microsoft-bitnet.md §2.4); earlier turns are closed with
`<|eot_id|>` like the Hugging Face template of the 2B-4T checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bitnet.errors import UsageError

EOT = "<|eot_id|>"
_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_bitnet_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    out = []
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in _ROLES:
            raise UsageError(f"chat message {i}: role must be system, user or assistant, got {role!r}")
        out.append(f"{_ROLES[role]}: {msg.get('content', '')}{EOT}")
    if add_generation_prompt:
        out.append("Assistant: ")
    return "".join(out)
