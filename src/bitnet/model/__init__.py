"""bitnet.model: load a BitNet GGUF and run it (`load_model` → `Engine`), plus generation settings."""

from bitnet.model.engine import Engine, default_profile, load_model
from bitnet.model.sampling import GenerationConfig

__all__ = ["Engine", "GenerationConfig", "default_profile", "load_model"]
