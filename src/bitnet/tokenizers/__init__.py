"""bitnet.tokenizers: one loader for tokenizer.json and GGUF-embedded vocabularies, plus the BitNet chat template."""

from bitnet.tokenizers.chat import render_bitnet_chat
from bitnet.tokenizers.gguf_vocab import tokenizer_from_gguf
from bitnet.tokenizers.loader import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer", "render_bitnet_chat", "tokenizer_from_gguf"]
