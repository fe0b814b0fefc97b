"""Model management: resumable, verified Hub downloads, the LLaMA-3 tokenizer, lockfiles and cache cleaning.

See docs/hub.md. The CLI commands (`xtask download-model`, `tokenizer`, `fetch-models`, `clean-cache`) are thin
wrappers over the names exported here.
"""

from bitnet.hub.cache import CacheEntry, delete_entries, list_caches
from bitnet.hub.download import Downloader, DownloadRequest, DownloadResult, download_model
from bitnet.hub.lockfile import LOCKFILE_SCHEMA, fetch_models, load_lockfile
from bitnet.hub.names import DEFAULT_MODEL_FILE, DEFAULT_MODEL_ID, local_path
from bitnet.hub.tokenizer import fetch_llama3_tokenizer, llama3_vocab_size

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DEFAULT_MODEL_ID",
    "LOCKFILE_SCHEMA",
    "CacheEntry",
    "DownloadRequest",
    "DownloadResult",
    "Downloader",
    "delete_entries",
    "download_model",
    "fetch_llama3_tokenizer",
    "fetch_models",
    "list_caches",
    "llama3_vocab_size",
    "load_lockfile",
    "local_path",
]
