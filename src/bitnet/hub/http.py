"""HTTP plumbing shared by every Hub request: endpoint, headers, retry policy and error classification.

huggingface_hub decides *where* a file lives (endpoint, URL template, token, user agent); we send the requests
ourselves with httpx because the hub client neither resumes across runs, nor honours an HTTP-date Retry-After, nor
retries 5xx on the file GET (see the project notes on huggingface_hub, shared/reference/ecosystem.md §1). Errors are classified from the status
and the Hub's `X-Error-Code` header into the typed exceptions of `bitnet.errors`, never from message text.
"""

from __future__ import annotations

import email.utils
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from bitnet.errors import AuthError, BitnetError, NetworkError, NotFoundError, RateLimitError, UsageError

#: statuses worth another try (the Hub's own list plus every other 5xx)
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_NOT_FOUND_CODES = frozenset({"RepoNotFound", "RevisionNotFound", "EntryNotFound"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Every loop that talks to the network is bounded by `retries` and `max_requests`.

    `retries` counts consecutive failures without progress (a request that delivered bytes resets it, as
    huggingface_hub does inside one call); `max_requests` bounds the total whatever happens. The caps keep a
    hostile `Retry-After: 99999999` from hanging CI, and tests set them to milliseconds.
    """

    retries: int = 3
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0
    retry_after_cap_s: float = 3600.0
    retry_after_default_s: float = 5.0
    max_requests: int = 100

    @classmethod
    def from_env(cls, retries: int) -> RetryPolicy:
        """Caps can be lowered with BITNET_HUB_MAX_WAIT (seconds) - used by tests and impatient CI jobs."""
        cap = os.environ.get("BITNET_HUB_MAX_WAIT")
        if cap is None:
            return cls(retries=retries)
        try:
            value = float(cap)
        except ValueError:
            raise UsageError(f"BITNET_HUB_MAX_WAIT={cap!r} is not a number of seconds") from None
        return cls(
            retries=retries,
            backoff_base_s=min(0.2, value),
            backoff_cap_s=value,
            retry_after_cap_s=value,
            retry_after_default_s=min(5.0, value),
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter on top: base·2^(attempt-1), capped, plus up to one base."""
        rng = rng or random
        delay = min(self.backoff_base_s * (2 ** max(0, attempt - 1)), self.backoff_cap_s)
        return min(delay + rng.uniform(0, self.backoff_base_s), self.backoff_cap_s)

    def retry_after_wait(self, requested: float | None) -> float:
        if requested is None:
            requested = self.retry_after_default_s
        return max(0.0, min(requested, self.retry_after_cap_s))


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, in either form (delta-seconds or an HTTP-date); None if absent
    or unparsable. A date in the past means "now" (0)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def resolve_endpoint(endpoint: str | None = None) -> str:
    """Explicit argument, else HF_ENDPOINT read *now* (huggingface_hub reads it once at import), else the default."""
    from huggingface_hub import constants

    value = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"invalid Hub endpoint {value!r}: expected http(s)://host[:port]")
    return value.rstrip("/")


def file_url(repo_id: str, filename: str, revision: str, endpoint: str) -> str:
    """`{endpoint}/{repo}/resolve/{rev}/{file}`, built by huggingface_hub so quoting matches the Hub exactly."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)


def current_token() -> str | None:
    """HF_TOKEN (or the token saved by `hf auth login`), as huggingface_hub finds it."""
    from huggingface_hub import get_token

    return get_token()


def hub_headers(token: str | None) -> dict[str, str]:
    """User agent and Authorization from huggingface_hub; identity encoding so sizes and ranges are raw bytes."""
    from huggingface_hub.utils import build_hf_headers

    import bitnet

    headers = build_hf_headers(
        token=token if token else False,
        library_name="bitnet-py",
        library_version=getattr(bitnet, "__version__", "0"),
    )
    headers["Accept-Encoding"] = "identity"
    return headers


class Redactor:
    """Replaces the token wherever it could appear in text we print or write (events, logs, error messages)."""

    def __init__(self, token: str | None) -> None:
        self._secrets = [s for s in (token,) if s]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def make_client(timeout_s: float) -> httpx.Client:
    """One client per download. `timeout_s` bounds each connect/read stall, not the whole multi-GB transfer."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=min(15.0, timeout_s)),
        follow_redirects=True,
        trust_env=True,
    )


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status < 600


def error_for_status(response: httpx.Response, what: str, *, has_token: bool) -> BitnetError:
    """The typed error for a final (non-retried) HTTP failure, classified by status and `X-Error-Code`."""
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    hub_message = response.headers.get("X-Error-Message", "")
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {hub_message}" if hub_message else "")
    if code in _NOT_FOUND_CODES or status == 404:
        hint = None
        if code == "RepoNotFound" and not has_token:
            hint = "the repo does not exist, or it is private/gated: set HF_TOKEN"
        return NotFoundError(f"{what} not found ({detail})", hint=hint)
    if code == "GatedRepo" or status in (401, 403):
        hint = (
            "the token was rejected or lacks access; accept the model's licence on the Hub and check HF_TOKEN"
            if has_token
            else "set HF_TOKEN to a Hugging Face token with access to this repo"
        )
        return AuthError(f"not authorized to download {what} ({detail})", hint=hint)
    if status == 429:
        return RateLimitError(f"rate limited while downloading {what} ({detail}), retries exhausted")
    return NetworkError(f"server error for {what} ({detail}), retries exhausted")
