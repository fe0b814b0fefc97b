"""Typed errors and the one table of process exit codes.

Every failure the library can report is an exception class here. The CLI maps the *type* of the exception to an
exit code (never the message text, which is what the original xtask did and got wrong). Add a new class here rather
than raising a bare Exception from library code.

| code | meaning                                                       | exception                  |
|------|---------------------------------------------------------------|----------------------------|
| 0    | success                                                       |                            |
| 1    | the check ran and its verdict is negative (gate, divergence,  | CheckFailed                |
|      | regression, API breaks, no GPU in preflight)                  |                            |
| 2    | usage error (bad flags, bad combination of options)           | UsageError / click         |
| 10   | not enough disk space                                         | NoSpaceError               |
| 11   | authentication / authorization (401, 403, gated repo)         | AuthError                  |
| 12   | rate limited (429) after retries                              | RateLimitError             |
| 13   | sha256 mismatch after the automatic re-download               | HashMismatchError          |
| 14   | network error (connection, timeout, 5xx after retries)        | NetworkError               |
| 15   | receipt / signature verification failed                       | VerificationError          |
| 16   | inference failed                                              | InferenceError             |
| 17   | benchmark failed                                              | BenchmarkError             |
| 18   | bad input: corrupt or unsupported model file, bad JSON, shape | InvalidInputError (and the |
|      | mismatch                                                      | FormatError subclass)      |
| 19   | the C++ reference (or another optional backend) is missing    | ReferenceUnavailable       |
| 20   | remote or local entry not found (404, missing file)           | NotFoundError              |
| 21   | a build (C++ reference, native kernels) failed                | BuildError                 |
| 22   | a check could not run (as opposed to: it ran and failed)      | CheckCouldNotRun           |
| 130  | interrupted (Ctrl-C); partial downloads are kept resumable    | Interrupted / KeyboardInt. |
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes shared by `xtask` and `bitnet` (documented in the README)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    NO_SPACE = 10
    AUTH = 11
    RATE_LIMIT = 12
    HASH_MISMATCH = 13
    NETWORK = 14
    VERIFICATION_FAILED = 15
    INFERENCE_FAILED = 16
    BENCHMARK_FAILED = 17
    INVALID_INPUT = 18
    REFERENCE_UNAVAILABLE = 19
    NOT_FOUND = 20
    BUILD_FAILED = 21
    CHECK_COULD_NOT_RUN = 22
    INTERRUPTED = 130


class BitnetError(Exception):
    """Base class of every error the library raises on purpose. `exit_code` drives the CLI."""

    exit_code: ExitCode = ExitCode.CHECK_FAILED
    #: a short machine-readable class name used in JSON error objects and NDJSON events
    kind: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CheckFailed(BitnetError):
    exit_code = ExitCode.CHECK_FAILED
    kind = "check_failed"


class UsageError(BitnetError):
    exit_code = ExitCode.USAGE
    kind = "usage"


class NoSpaceError(BitnetError):
    exit_code = ExitCode.NO_SPACE
    kind = "no_space"


class AuthError(BitnetError):
    exit_code = ExitCode.AUTH
    kind = "auth"


class NetworkError(BitnetError):
    exit_code = ExitCode.NETWORK
    kind = "network"


class RateLimitError(NetworkError):
    exit_code = ExitCode.RATE_LIMIT
    kind = "rate_limit"


class HashMismatchError(BitnetError):
    exit_code = ExitCode.HASH_MISMATCH
    kind = "hash_mismatch"


class VerificationError(BitnetError):
    exit_code = ExitCode.VERIFICATION_FAILED
    kind = "verification_failed"


class InferenceError(BitnetError):
    exit_code = ExitCode.INFERENCE_FAILED
    kind = "inference_failed"


class BenchmarkError(BitnetError):
    exit_code = ExitCode.BENCHMARK_FAILED
    kind = "benchmark_failed"


class InvalidInputError(BitnetError):
    exit_code = ExitCode.INVALID_INPUT
    kind = "invalid_input"


class FormatError(InvalidInputError):
    """A model file is corrupt, truncated or uses something we do not support. The message names the problem."""

    kind = "format"


class ReferenceUnavailable(BitnetError):
    exit_code = ExitCode.REFERENCE_UNAVAILABLE
    kind = "reference_unavailable"


class NotFoundError(BitnetError):
    exit_code = ExitCode.NOT_FOUND
    kind = "not_found"


class BuildError(BitnetError):
    exit_code = ExitCode.BUILD_FAILED
    kind = "build_failed"


class CheckCouldNotRun(BitnetError):
    exit_code = ExitCode.CHECK_COULD_NOT_RUN
    kind = "could_not_run"


class Interrupted(BitnetError):
    exit_code = ExitCode.INTERRUPTED
    kind = "interrupted"


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map an exception to its exit code by type only."""
    if isinstance(exc, BitnetError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:  # ENOSPC
        return ExitCode.NO_SPACE
    return ExitCode.CHECK_FAILED
