"""Model hyper-parameters from GGUF metadata or a Hugging Face `config.json`, in one dataclass.

Why one place: the engine, the converter, the fixture generator and `inspect` must agree on what e.g. "head_dim"
or the FFN activation of an arch is. BitNet archs differ in one important way: `bitnet-b1.58` / `bitnet-25`
(Microsoft's 2B-4T lineage) use ReLU² in the FFN, the older `bitnet` arch (1bitLLM) uses SiLU; a
`<arch>.hidden_activation` key (proposed upstream in llama.cpp PRs #25885/#26751) overrides the default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bitnet.errors import FormatError

#: default FFN activation by GGUF arch
DEFAULT_FFN_ACT = {"bitnet-b1.58": "relu2", "bitnet-25": "relu2", "bitnet": "silu"}
SUPPORTED_ARCHS = tuple(DEFAULT_FFN_ACT)

_ACT_ALIASES = {
    "relu2": "relu2",
    "relu_squared": "relu2",
    "relu_sqr": "relu2",
    "squared_relu": "relu2",
    "relu^2": "relu2",
    "silu": "silu",
    "swish": "silu",
    "swiglu": "silu",
}


def normalize_activation(name: str) -> str:
    """Map the many spellings of the two activations to "relu2" or "silu"; FormatError otherwise."""
    act = _ACT_ALIASES.get(str(name).strip().lower())
    if act is None:
        raise FormatError(f"unsupported FFN activation {name!r} (expected relu2 or silu)")
    return act


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of a BitNet model (see docs/ARCHITECTURE.md for the contract)."""

    arch: str
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    rope_theta: float
    rms_eps: float
    context_length: int
    ffn_act: str
    tie_embeddings: bool = True
    rope_dim: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "ffn_size",
            "vocab_size",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise FormatError(f"model config: {name} must be a positive integer, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise FormatError(
                f"model config: {self.n_heads} heads is not a multiple of {self.n_kv_heads} KV heads"
            )
        if self.ffn_act not in ("relu2", "silu"):
            raise FormatError(f"model config: ffn_act must be relu2 or silu, got {self.ffn_act!r}")

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def shape_summary(self) -> dict[str, int]:
        """The model's shape as engines report it in `describe()` (and receipts record)."""
        return {
            "hidden": self.hidden_size,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "kv_heads": self.n_kv_heads,
            "ffn": self.ffn_size,
            "vocab": self.vocab_size,
            "context": self.context_length,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_gguf(
        cls, metadata: Mapping[str, Any], tensor_names: Collection[str] | None = None
    ) -> ModelConfig:
        """Read `<arch>.*` keys. `tensor_names` (if given) decides `tie_embeddings` (no `output.weight` → tied)."""
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise FormatError("GGUF metadata has no general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise FormatError(f"unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")

        def key(name: str, default: Any = ...) -> Any:
            full = f"{arch}.{name}"
            if full in metadata:
                return metadata[full]
            if default is ...:
                raise FormatError(f"GGUF metadata lacks required key {full!r}")
            return default

        hidden = int(key("embedding_length"))
        heads = int(key("attention.head_count"))
        kv_heads = int(key("attention.head_count_kv", heads))
        if heads <= 0 or hidden % heads:
            raise FormatError(f"embedding_length {hidden} is not a multiple of head_count {heads}")
        head_dim = int(key("attention.key_length", hidden // heads))
        tokens = metadata.get("tokenizer.ggml.tokens")
        vocab = key("vocab_size", len(tokens) if isinstance(tokens, list) else None)
        if vocab is None:
            raise FormatError(f"GGUF metadata has neither {arch}.vocab_size nor tokenizer.ggml.tokens")
        act_key = next(
            (
                metadata[f"{arch}.{k}"]
                for k in ("hidden_activation", "hidden_act", "ffn_act")
                if f"{arch}.{k}" in metadata
            ),
            None,
        )
        ffn_act = normalize_activation(act_key) if act_key is not None else DEFAULT_FFN_ACT[arch]
        tie = True if tensor_names is None else "output.weight" not in tensor_names
        rope_dim = key("rope.dimension_count", None)
        bos, eos = metadata.get("tokenizer.ggml.bos_token_id"), metadata.get("tokenizer.ggml.eos_token_id")
        return cls(
            arch=arch,
            hidden_size=hidden,
            n_layers=int(key("block_count")),
            n_heads=heads,
            n_kv_heads=kv_heads,
            head_dim=head_dim,
            ffn_size=int(key("feed_forward_length")),
            vocab_size=int(vocab),
            rope_theta=float(key("rope.freq_base", 10000.0)),
            rms_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            context_length=int(key("context_length")),
            ffn_act=ffn_act,
            tie_embeddings=tie,
            rope_dim=int(rope_dim) if rope_dim is not None else None,
            bos_token_id=int(bos) if bos is not None else None,
            eos_token_id=int(eos) if eos is not None else None,
        )

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> ModelConfig:
        """From a HF `config.json` dict (BitNetForCausalLM: hidden_act "relu2" → arch bitnet-b1.58; 1bitLLM's
        BitnetForCausalLM with silu → arch bitnet)."""
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            layers = int(config["num_hidden_layers"])
            ffn = int(config["intermediate_size"])
            vocab = int(config["vocab_size"])
        except KeyError as exc:
            raise FormatError(f"config.json lacks required key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise FormatError(f"config.json has a non-integer size: {exc}") from None
        act = normalize_activation(config.get("hidden_act", "silu"))
        arch = "bitnet-b1.58" if act == "relu2" else "bitnet"
        if heads <= 0 or hidden % heads:
            raise FormatError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        bos, eos = config.get("bos_token_id"), config.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        return cls(
            arch=arch,
            hidden_size=hidden,
            n_layers=layers,
            n_heads=heads,
            n_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            ffn_size=ffn,
            vocab_size=vocab,
            rope_theta=float(
                config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 10000.0))
            ),
            rms_eps=float(config.get("rms_norm_eps", 1e-5)),
            context_length=int(config.get("max_position_embeddings", 2048)),
            ffn_act=act,
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_dim=int(config.get("head_dim") or hidden // heads),
            bos_token_id=int(bos) if bos is not None else None,
            eos_token_id=int(eos) if eos is not None else None,
        )

    def gguf_metadata(self) -> dict[str, Any]:
        """The `<arch>.*` keys llama.cpp / bitnet.cpp read for this config (types: uint32 / float32)."""
        a = self.arch
        md: dict[str, Any] = {
            f"{a}.vocab_size": self.vocab_size,
            f"{a}.context_length": self.context_length,
            f"{a}.embedding_length": self.hidden_size,
            f"{a}.block_count": self.n_layers,
            f"{a}.feed_forward_length": self.ffn_size,
            f"{a}.attention.head_count": self.n_heads,
            f"{a}.attention.head_count_kv": self.n_kv_heads,
            f"{a}.attention.layer_norm_rms_epsilon": float(self.rms_eps),
            f"{a}.rope.freq_base": float(self.rope_theta),
            f"{a}.rope.dimension_count": self.rope_dim or self.head_dim,
        }
        if self.head_dim * self.n_heads != self.hidden_size:
            md[f"{a}.attention.key_length"] = self.head_dim
            md[f"{a}.attention.value_length"] = self.head_dim
        if self.ffn_act != DEFAULT_FFN_ACT[a]:
            md[f"{a}.hidden_activation"] = self.ffn_act
        return md
