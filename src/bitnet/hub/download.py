"""Resumable, verified, locked downloads of single files from a Hugging Face-style Hub.

Why not `hf_hub_download`: since huggingface_hub 1.18 a killed download restarts from zero, the content is never
hashed, an HTTP-date Retry-After is ignored and a 5xx on the file GET fails at once. A multi-GB model must survive
all of that, so this module owns the transfer and keeps huggingface_hub for URLs, tokens and header names.

Files next to the destination `F` (all inside `--out/<org>-<name>/`):
- `F.part` - the bytes received so far; `F.part.json` - which remote version they belong to (etag, size, the GET's
  own ETag / Last-Modified for If-Range). A part from another version is discarded, never spliced.
- `F.lock` - a `filelock` lock: a second process waits, then finds the file up to date.
- `F.download.json` - what the final file is (commit, etag, sha256, ...), so a re-run can ask for a 304.

`F` itself appears only by `os.replace` of a complete, hash-checked, fsynced `.part`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import filelock
import httpx

from bitnet.errors import (
    BitnetError,
    CheckCouldNotRun,
    HashMismatchError,
    Interrupted,
    NetworkError,
    NoSpaceError,
    NotFoundError,
)
from bitnet.fsutil import atomic_write_json, fsync_dir, hash_file_into, read_json, remove, sha256_file
from bitnet.hub import names
from bitnet.hub.events import EventSink, NullSink
from bitnet.hub.http import (
    Redactor,
    RetryPolicy,
    current_token,
    error_for_status,
    file_url,
    hub_headers,
    is_retryable,
    make_client,
    parse_retry_after,
    resolve_endpoint,
)

SIDECAR_SCHEMA_VERSION = 1
DEFAULT_RESERVE_BYTES = 50 * 1024 * 1024
_SPACE_CHECK_EVERY = 64 * 1024 * 1024
_MAX_SAME_ORIGIN_REDIRECTS = 5
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says about a file (HEAD on `/resolve/`), parsed like `huggingface_hub.get_hf_file_metadata`."""

    url: str
    commit: str | None
    etag: str | None  # X-Linked-Etag or ETag, quotes and W/ stripped: sha256 for LFS files, git sha1 otherwise
    http_etag: str | None  # the raw ETag header, for If-None-Match
    size: int | None
    last_modified: str | None
    not_modified: bool = False

    @property
    def lfs_sha256(self) -> str | None:
        return self.etag if names.looks_like_sha256(self.etag) else None


@dataclass
class DownloadResult:
    path: Path
    repo: str
    file: str
    revision: str
    commit: str | None
    size: int
    sha256: str
    #: True only when the bytes were compared against a known hash (given, or the Hub's LFS sha256)
    verified: bool
    sha256_source: str  # "given" | "hub-lfs" | "sidecar" | "computed" (nothing to compare with)
    status: str  # "downloaded" | "up_to_date"
    resumed_from: int = 0
    bytes_transferred: int = 0
    requests: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


@dataclass(frozen=True)
class DownloadRequest:
    repo_id: str = names.DEFAULT_MODEL_ID
    filename: str = names.DEFAULT_MODEL_FILE
    out_dir: Path = Path("models")
    revision: str = names.DEFAULT_REVISION
    sha256: str | None = None
    force: bool = False
    #: an explicit destination (lockfile entries); by default `out_dir/<org>-<name>/<filename>`
    dest: Path | None = None


class _Restart(Exception):
    """The partial bytes cannot be trusted (bad Content-Range, 412/416, too many bytes): start from zero."""


@dataclass
class _Transfer:
    """Mutable state of one file's GET loop."""

    offset: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)
    failures: int = 0
    requests: int = 0
    transferred: int = 0


def _normalize_etag(value: str | None) -> str | None:
    if not value:
        return None
    return re.sub(r'^W/', "", value).strip('"') or None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class Downloader:
    """Downloads files with retries, resume, locking and verification. One instance per command.

    `sleep`, `now` and `disk_free` are injectable so tests run backoffs in microseconds and can simulate a disk
    that fills up; production uses the real clock and `shutil.disk_usage`.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        policy: RetryPolicy | None = None,
        sink: EventSink | None = None,
        timeout_s: float = 60.0,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        lock_timeout_s: float = 6 * 3600,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        disk_free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
        client: httpx.Client | None = None,
        validate: Callable[[Path], None] | None = None,
        space_check_every: int = _SPACE_CHECK_EVERY,
        offline: bool = False,
    ) -> None:
        self.space_check_every = space_check_every
        self.offline = offline
        self.endpoint = resolve_endpoint(endpoint)
        self.token = token if token is not None else current_token()
        self.redact = Redactor(self.token)
        self.policy = policy or RetryPolicy()
        self.sink = sink or NullSink()
        self.reserve_bytes = reserve_bytes
        self.lock_timeout_s = lock_timeout_s
        self.sleep = sleep
        self.now = now
        self.disk_free = disk_free
        self.client = client or make_client(timeout_s)
        self.validate = validate
        self._headers = hub_headers(self.token)

    # ----------------------------------------------------------------------------------------------- public
    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def download(
        self,
        req: DownloadRequest,
        *,
        validate: Callable[[Path], None] | None = None,
        best_effort: bool = False,
    ) -> DownloadResult:
        """Make `req`'s file present and verified at its destination; raise a typed error otherwise.

        `validate(path)` runs on the complete `.part` before it is renamed into place (e.g. a tokenizer's vocab
        check), so a file that fails it never appears at the final path. `best_effort` reports a failure as a
        `warning` event instead of an `error` one (the caller carries on without the file).
        """
        ctx = {"repo": req.repo_id, "file": req.filename, "revision": req.revision}
        started = time.monotonic()
        dest = req.dest or Path(req.out_dir) / names.repo_dirname(req.repo_id) / req.filename
        try:
            names.validate_repo_id(req.repo_id)
            names.validate_filename(req.filename)
            names.validate_revision(req.revision)
            expected_given = names.normalize_sha256(req.sha256)
            dest = req.dest or names.local_path(req.out_dir, req.repo_id, req.filename)
            url = file_url(req.repo_id, req.filename, req.revision, self.endpoint)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(dest, ctx):
                result = self._download_locked(req, dest, url, expected_given, validate or self.validate, ctx)
        except KeyboardInterrupt:
            part = _part_path(dest)
            kept = part.stat().st_size if part.exists() else 0
            message = f"interrupted; {kept} bytes kept in {part}, re-run the same command to resume"
            self.sink.emit("error", **ctx, kind="interrupted", exit_code=130, message=message)
            raise Interrupted(message) from None
        except BitnetError as exc:
            event = "warning" if best_effort else "error"
            self.sink.emit(event, **ctx, kind=exc.kind, exit_code=int(exc.exit_code), message=self.redact(str(exc)))
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                err = NoSpaceError(f"disk full while writing {dest}: {exc.strerror}; the .part is kept for resume")
                self.sink.emit("error", **ctx, kind=err.kind, exit_code=int(err.exit_code), message=str(err))
                raise err from exc
            self.sink.emit("error", **ctx, kind="os_error", exit_code=1, message=self.redact(str(exc)))
            raise
        result.elapsed_s = round(time.monotonic() - started, 3)
        self.sink.emit("done", **ctx, **{k: v for k, v in result.to_dict().items() if k not in ctx})
        return result

    # ------------------------------------------------------------------------------------------ lock + flow
    @contextlib.contextmanager
    def _locked(self, dest: Path, ctx: dict[str, str]) -> Iterator[None]:
        """Hold `dest.lock` (flock, released by the kernel if we die) for the whole check-download-rename."""
        lock = filelock.FileLock(str(dest) + ".lock")
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            self.sink.emit("info", **ctx, message=f"another process is downloading {dest.name}; waiting for it")
            try:
                lock.acquire(timeout=self.lock_timeout_s)
            except filelock.Timeout:
                raise CheckCouldNotRun(
                    f"another download of {dest} held the lock for more than {self.lock_timeout_s:.0f}s",
                    hint="wait for the other download to finish, or stop it",
                ) from None
        try:
            yield
        finally:
            lock.release()

    def _download_locked(
        self,
        req: DownloadRequest,
        dest: Path,
        url: str,
        expected_given: str | None,
        validate: Callable[[Path], None] | None,
        ctx: dict[str, str],
    ) -> DownloadResult:
        sidecar = _sidecar_path(dest)
        saved = None if req.force else read_json(sidecar) if dest.exists() else None
        if self.offline:
            return self._offline(req, dest, expected_given, saved)
        if req.force:
            remove(_part_path(dest), _part_meta_path(dest))
        conditional: dict[str, str] = {}
        if saved and saved.get("http_etag"):
            conditional["If-None-Match"] = saved["http_etag"]
        if saved and saved.get("last_modified"):
            conditional["If-Modified-Since"] = saved["last_modified"]
        remote = self._metadata(url, conditional, ctx)

        if remote.not_modified and saved is not None:
            up = self._check_existing(
                req, dest, expected_given or saved.get("sha256"), "given" if expected_given else "sidecar",
                saved, remote, ctx,
            )
            if up is not None:
                return up
            saved = None  # the local copy is damaged: forget it, get full metadata and download again
            remote = self._metadata(url, {}, ctx)

        if expected_given and remote.lfs_sha256 and expected_given != remote.lfs_sha256:
            raise HashMismatchError(
                f"--sha256 {expected_given} does not match the Hub's sha256 {remote.lfs_sha256} for "
                f"{req.repo_id}/{req.filename}@{req.revision} (commit {remote.commit}); nothing was downloaded",
                hint="check the revision, or drop --sha256 to trust the Hub's LFS hash",
            )
        expected = expected_given or remote.lfs_sha256
        source = "given" if expected_given else ("hub-lfs" if remote.lfs_sha256 else "computed")

        if dest.exists() and not req.force:
            same_version = saved is not None and saved.get("etag") == remote.etag and remote.etag is not None
            if same_version or expected:
                # Without a Hub hash (non-LFS file) the sidecar's sha256 still catches a damaged local copy.
                check, label = (expected, source) if expected else (saved and saved.get("sha256"), "sidecar")
                up = self._check_existing(req, dest, check, label, saved, remote, ctx)
                if up is not None:
                    return up

        return self._fetch(req, dest, url, remote, expected, source, validate, ctx)

    def _offline(
        self, req: DownloadRequest, dest: Path, expected_given: str | None, saved: dict[str, Any] | None
    ) -> DownloadResult:
        """No network: the local file is the answer, and it is still hashed (the original skipped that)."""
        if not dest.exists():
            raise NotFoundError(f"offline mode: {dest} is not on disk", hint="run once without --offline")
        expected = expected_given or (saved or {}).get("sha256")
        local_only = RemoteFile("", (saved or {}).get("commit"), None, None, None, None, not_modified=True)
        up = self._check_existing(req, dest, expected, "given" if expected_given else "sidecar", saved,
                                  local_only, {"repo": req.repo_id, "file": req.filename, "revision": req.revision})
        if up is None:
            raise HashMismatchError(f"offline mode: {dest} does not match its sha256 {expected}")
        up.requests = 0
        return up

    def _check_existing(
        self,
        req: DownloadRequest,
        dest: Path,
        expected: str | None,
        source: str,
        saved: dict[str, Any] | None,
        remote: RemoteFile,
        ctx: dict[str, str],
    ) -> DownloadResult | None:
        """The existing file as an up-to-date result if its bytes hash to `expected`, else None (re-download)."""
        actual = sha256_file(dest)
        if expected is not None and actual != expected:
            self.sink.emit("info", **ctx, message=f"{dest.name} on disk does not match its sha256; re-downloading")
            remove(_sidecar_path(dest))
            return None
        verified = expected is not None and (source != "sidecar" or bool(saved and saved.get("verified")))
        if saved is None and not remote.not_modified and remote.etag:
            # e.g. killed between the rename and the sidecar write: record it now so the next run gets its 304
            _write_sidecar(dest, req, remote, size=dest.stat().st_size, sha256=actual, verified=verified,
                           source=source, last_modified=remote.last_modified)
        return DownloadResult(
            path=dest,
            repo=req.repo_id,
            file=req.filename,
            revision=req.revision,
            commit=remote.commit or (saved or {}).get("commit"),
            size=dest.stat().st_size,
            sha256=actual,
            verified=verified,
            sha256_source=source if expected is not None else "computed",
            status="up_to_date",
            requests=1,
        )

    # ---------------------------------------------------------------------------------------------- metadata
    def _metadata(self, url: str, conditional: dict[str, str], ctx: dict[str, str]) -> RemoteFile:
        """HEAD the file (the Hub's metadata: commit, LFS sha256, size), retrying like the GET."""
        failures = 0
        for _ in range(self.policy.max_requests):
            try:
                resp = self._head_following_relative(url, conditional)
            except httpx.TransportError as exc:
                failures += 1
                self._retry_or_raise(failures, ctx, f"network error: {type(exc).__name__}", None, exc)
                continue
            if resp.status_code == 304:
                return RemoteFile(url, None, None, None, None, None, not_modified=True)
            if resp.status_code < 400:
                return _parse_metadata(resp)
            if is_retryable(resp.status_code):
                failures += 1
                self._retry_or_raise(failures, ctx, f"HTTP {resp.status_code}", resp, None, url=url)
                continue
            raise error_for_status(resp, f"{ctx['repo']}/{ctx['file']}@{ctx['revision']}", has_token=bool(self.token))
        raise NetworkError(f"gave up on {url} after {self.policy.max_requests} requests")

    def _head_following_relative(self, url: str, conditional: dict[str, str]) -> httpx.Response:
        """HEAD, following redirects only while they stay on the same origin (as huggingface_hub does): a
        redirect to another host is the CDN, whose response would lack the X-Linked-* metadata."""
        headers = {**self._headers, **conditional}
        resp = self.client.head(url, headers=headers, follow_redirects=False)
        for _ in range(_MAX_SAME_ORIGIN_REDIRECTS):
            location = resp.headers.get("Location")
            if not resp.is_redirect or not location:
                break
            target = urljoin(str(resp.request.url), location)
            if _origin(target) != _origin(str(resp.request.url)):
                break
            resp = self.client.head(target, headers=headers, follow_redirects=False)
        return resp

    # ------------------------------------------------------------------------------------------------ retry
    def _retry_or_raise(
        self,
        failures: int,
        ctx: dict[str, str],
        reason: str,
        resp: httpx.Response | None,
        exc: BaseException | None,
        url: str = "",
    ) -> None:
        """Sleep before the next attempt, or raise the typed error once `retries` consecutive failures are used up."""
        what = f"{ctx['repo']}/{ctx['file']}@{ctx['revision']}"
        if failures > self.policy.retries:
            if resp is not None:
                raise error_for_status(resp, what, has_token=bool(self.token))
            raise NetworkError(
                f"network error downloading {what}: {self.redact(str(exc) or type(exc).__name__)} "
                f"(after {self.policy.retries} retries)"
            ) from exc
        requested = None
        if resp is not None and resp.status_code in (429, 503):
            requested = parse_retry_after(resp.headers.get("Retry-After"), self.now)
        if resp is not None and (requested is not None or resp.status_code == 429):
            wait = self.policy.retry_after_wait(requested)
        else:
            wait = self.policy.backoff(failures)
        self.sink.emit(
            "retry", **ctx, attempt=failures, reason=self.redact(reason), wait_s=round(wait, 3),
            retry_after_s=requested, status=resp.status_code if resp is not None else None,
        )
        self.sleep(wait)

    # ------------------------------------------------------------------------------------------------ fetch
    def _fetch(
        self,
        req: DownloadRequest,
        dest: Path,
        url: str,
        remote: RemoteFile,
        expected: str | None,
        source: str,
        validate: Callable[[Path], None] | None,
        ctx: dict[str, str],
    ) -> DownloadResult:
        part = _part_path(dest)
        total_requests = 0
        transferred = 0
        resumed_from = 0
        for attempt in (1, 2):  # the second pass is the one automatic re-download after a hash mismatch
            state, resumed = self._stream_to_part(url, part, remote, ctx, first_attempt=attempt == 1)
            total_requests += state.requests
            transferred += state.transferred
            resumed_from = resumed_from or resumed
            actual = state.hasher.hexdigest()
            if expected is None or actual == expected:
                break
            remove(part, _part_meta_path(dest))
            if attempt == 2:
                raise HashMismatchError(
                    f"sha256 mismatch for {req.repo_id}/{req.filename}: expected {expected}, got {actual} "
                    "(after one automatic re-download); nothing was written",
                    hint="the server sent different bytes than it advertises; retry later or check --sha256",
                )
            self.sink.emit(
                "retry", **ctx, attempt=1, reason=f"sha256 mismatch (got {actual}); re-downloading from zero",
                wait_s=0.0, retry_after_s=None, status=None,
            )
        if validate is not None:
            try:
                validate(part)
            except BitnetError:
                remove(part, _part_meta_path(dest))
                raise
        with open(part, "rb+") as fh:  # the bytes may come from an earlier run that never reached its fsync
            os.fsync(fh.fileno())
        size = part.stat().st_size
        part.replace(dest)
        fsync_dir(dest.parent)
        meta = read_json(_part_meta_path(dest)) or {}
        _write_sidecar(dest, req, remote, size=size, sha256=actual, verified=expected is not None, source=source,
                       last_modified=remote.last_modified or meta.get("last_modified"))
        remove(_part_meta_path(dest))
        return DownloadResult(
            path=dest, repo=req.repo_id, file=req.filename, revision=req.revision, commit=remote.commit,
            size=size, sha256=actual, verified=expected is not None, sha256_source=source, status="downloaded",
            resumed_from=resumed_from, bytes_transferred=transferred, requests=total_requests + 1,
        )

    def _stream_to_part(
        self, url: str, part: Path, remote: RemoteFile, ctx: dict[str, str], *, first_attempt: bool
    ) -> tuple[_Transfer, int]:
        """Fill `part` until it holds the whole file; returns the transfer state and the offset resumed from."""
        meta_path = part.with_name(part.name + ".json")
        meta = read_json(meta_path) if part.exists() else None
        if part.exists() and (
            meta is None or meta.get("etag") != remote.etag or meta.get("size") != remote.size
        ):
            self.sink.emit("info", **ctx, message="partial file belongs to another version; starting over")
            remove(part)
            meta = None
        if meta is None:
            meta = {"url": url, "etag": remote.etag, "size": remote.size, "commit": remote.commit}
            atomic_write_json(meta_path, meta)
        st = _Transfer()
        if part.exists():
            st.offset = part.stat().st_size
            if remote.size is not None and st.offset > remote.size:
                remove(part)
                st.offset = 0
            else:
                st.hasher = hash_file_into(part, hashlib.sha256())
        else:
            part.touch()
        resumed_from = st.offset
        self.sink.emit(
            "start", **ctx, url=url, commit=remote.commit, size=remote.size, resume_from=st.offset,
            dest=str(part.with_name(part.name[: -len(".part")])), attempt=1 if first_attempt else 2,
        )
        while remote.size is None or st.offset < remote.size:
            st.requests += 1
            if st.requests > self.policy.max_requests:
                raise NetworkError(f"gave up on {url} after {self.policy.max_requests} requests")
            self._check_space(part.parent, remote.size, st.offset)
            before = st.offset
            try:
                outcome = self._one_get(url, part, meta_path, meta, remote, st, ctx)
            except _Restart as why:
                remove(part)
                part.touch()
                st.offset, st.hasher = 0, hashlib.sha256()
                st.failures += 1
                self._retry_or_raise(st.failures, ctx, f"{why}; restarting from zero", None, why)
                continue
            except httpx.TransportError as exc:
                if st.offset > before:
                    st.failures = 0  # progress was made: only consecutive fruitless attempts count
                st.failures += 1
                self._retry_or_raise(st.failures, ctx, f"network error: {type(exc).__name__}", None, exc)
                continue
            if outcome != "body":
                continue  # a retryable status; the wait already happened
            if st.offset > before:
                st.failures = 0
            if remote.size is None:
                break  # the server says the body is complete and we have nothing to check it against
            if st.offset < remote.size:
                # The body ended cleanly but early (a Content-Length smaller than the file): resume from here.
                st.failures += 1
                self._retry_or_raise(
                    st.failures, ctx, f"body ended at {st.offset} of {remote.size} bytes", None,
                    NetworkError(f"download truncated: got {st.offset} bytes, expected {remote.size}"),
                )
        return st, resumed_from

    def _one_get(
        self,
        url: str,
        part: Path,
        meta_path: Path,
        meta: dict[str, Any],
        remote: RemoteFile,
        st: _Transfer,
        ctx: dict[str, str],
    ) -> str:
        """One GET: "body" when a body was streamed into the part, "retry" after a retryable status (and its wait)."""
        headers = dict(self._headers)
        if st.offset:
            headers["Range"] = f"bytes={st.offset}-"
            strong_etag = meta.get("http_etag")
            if strong_etag and strong_etag.startswith("W/"):
                strong_etag = None  # a weak validator cannot guard a byte range (RFC 9110 §13.1.5)
            if_range = strong_etag or meta.get("last_modified")
            if if_range:
                headers["If-Range"] = if_range
        with self.client.stream("GET", url, headers=headers) as resp:
            status = resp.status_code
            if status == 206:
                _check_content_range(resp.headers.get("Content-Range"), st.offset, remote.size)
            elif status == 200:
                if st.offset:
                    self.sink.emit("info", **ctx, message="server sent the whole file instead of a range; restarting")
                    st.offset, st.hasher = 0, hashlib.sha256()
                    part.write_bytes(b"")
            elif status in (412, 416):
                raise _Restart(f"HTTP {status} on resume")
            elif is_retryable(status):
                resp.read()
                st.failures += 1
                self._retry_or_raise(st.failures, ctx, f"HTTP {status}", resp, None)
                return "retry"
            else:
                resp.read()
                raise error_for_status(resp, f"{ctx['repo']}/{ctx['file']}@{ctx['revision']}", has_token=bool(self.token))
            if status == 200:
                meta.update(http_etag=resp.headers.get("ETag"), last_modified=resp.headers.get("Last-Modified"))
                atomic_write_json(meta_path, meta)
            self._stream_body(resp, part, remote, st, ctx)
        return "body"

    def _stream_body(
        self, resp: httpx.Response, part: Path, remote: RemoteFile, st: _Transfer, ctx: dict[str, str]
    ) -> None:
        next_space_check = st.offset + self.space_check_every
        with open(part, "ab") as fh:
            try:
                for chunk in resp.iter_bytes():  # no chunk_size: a buffered chunk would be lost on a drop
                    if remote.size is not None and st.offset + len(chunk) > remote.size:
                        raise _Restart(f"server sent more than the advertised {remote.size} bytes")
                    fh.write(chunk)
                    st.hasher.update(chunk)
                    st.offset += len(chunk)
                    st.transferred += len(chunk)
                    self.sink.emit("progress", **ctx, bytes=st.offset, total=remote.size)
                    if st.offset >= next_space_check:
                        fh.flush()
                        self._check_space(part.parent, remote.size, st.offset)
                        next_space_check = st.offset + self.space_check_every
            finally:
                fh.flush()
                os.fsync(fh.fileno())

    def _check_space(self, folder: Path, size: int | None, offset: int) -> None:
        remaining = max(0, (size or 0) - offset)
        free = self.disk_free(folder)
        if free < remaining + self.reserve_bytes:
            raise NoSpaceError(
                f"not enough disk space in {folder}: {free} bytes free, need {remaining} more "
                f"plus a {self.reserve_bytes}-byte reserve",
                hint="free some space (xtask clean-cache) and re-run; the partial download is kept",
            )


def _check_content_range(value: str | None, offset: int, size: int | None) -> None:
    match = _CONTENT_RANGE_RE.match(value or "")
    if not match:
        raise _Restart(f"206 without a usable Content-Range ({value!r})")
    start, end, total = int(match[1]), int(match[2]), match[3]
    if start != offset:
        raise _Restart(f"206 starts at byte {start}, asked for {offset}")
    if size is not None and ((total != "*" and int(total) != size) or end != size - 1):
        raise _Restart(f"206 Content-Range {value} does not match the file size {size}")


def _parse_metadata(resp: httpx.Response) -> RemoteFile:
    h = resp.headers
    size_header = h.get("X-Linked-Size") or (None if resp.is_redirect else h.get("Content-Length"))
    return RemoteFile(
        url=str(resp.request.url),
        commit=h.get("X-Repo-Commit"),
        etag=_normalize_etag(h.get("X-Linked-Etag") or h.get("ETag")),
        http_etag=h.get("ETag"),
        size=_int_or_none(size_header),
        last_modified=h.get("Last-Modified"),
    )


def _write_sidecar(
    dest: Path, req: DownloadRequest, remote: RemoteFile, *, size: int, sha256: str, verified: bool, source: str,
    last_modified: str | None,
) -> None:
    """`F.download.json`: what `F` is, so the next run can ask for a 304 and check the bytes."""
    atomic_write_json(
        _sidecar_path(dest),
        {
            "schema_version": SIDECAR_SCHEMA_VERSION,
            "repo": req.repo_id,
            "file": req.filename,
            "revision": req.revision,
            "commit": remote.commit,
            "url": remote.url,
            "etag": remote.etag,
            "http_etag": remote.http_etag,
            "last_modified": last_modified,
            "size": size,
            "sha256": sha256,
            "verified": verified,
            "sha256_source": source,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _part_meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def _sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".download.json")


def sidecar_paths(dest: Path) -> list[Path]:
    """Every helper file a download of `dest` may leave (for clean-cache and tests)."""
    return [_part_path(dest), _part_meta_path(dest), _sidecar_path(dest), Path(str(dest) + ".lock")]


def download_model(
    downloader: Downloader,
    req: DownloadRequest,
    *,
    with_tokenizer: bool = True,
) -> dict[str, Any]:
    """The model file, then a best-effort `tokenizer.json` from the same repo and revision.

    The tokenizer is optional (GGUF files embed their vocabulary), so its absence or any failure is reported in
    the result, not raised - except Ctrl-C, which always stops everything.
    """
    model = downloader.download(req)
    result: dict[str, Any] = {"ok": True, "model": model.to_dict(), "tokenizer": None}
    if with_tokenizer:
        tok_req = DownloadRequest(
            repo_id=req.repo_id, filename="tokenizer.json", out_dir=req.out_dir, revision=req.revision,
            dest=model.path.with_name("tokenizer.json"), force=req.force,
        )
        try:
            result["tokenizer"] = downloader.download(tok_req, best_effort=True).to_dict()
        except Interrupted:
            raise
        except BitnetError as exc:
            result["tokenizer"] = {"status": "unavailable", "kind": exc.kind, "message": downloader.redact(str(exc))}
    return result
