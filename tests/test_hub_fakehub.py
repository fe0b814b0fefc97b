"""A local Hub-like server for the download tests, and tests that it really behaves like the Hub.

`FakeHub` serves `HEAD/GET /{repo}/resolve/{rev}/{file}` the way huggingface.co does: X-Repo-Commit, X-Linked-Etag
(the sha256 for LFS files), X-Linked-Size, ETag, a 302 to a CDN URL for LFS files (here `/cdn/<sha256>` on the same
server, with its own S3-style ETag), Range → 206 + Content-Range, If-Range, If-None-Match → 304, 404 with
`X-Error-Code: EntryNotFound`, 401 `RepoNotFound` / `GatedRepo`. Faults are scripted per request (429 with
Retry-After in both forms, 5xx, a connection dropped mid-body, a short body, wrong bytes) or set for every request
(a slow trickle, a server that ignores Range). Every request is recorded so tests can assert what was asked.
127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

import pytest

# Tests never talk to huggingface.co: huggingface_hub would otherwise fetch its agent registry from there
# (read when huggingface_hub is first imported, so this is best effort if another module imported it earlier).
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    content: bytes
    lfs: bool = True

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    @property
    def resolve_etag(self) -> str:
        return f'"{self.sha256 if self.lfs else self.git_sha1}"'

    @property
    def cdn_etag(self) -> str:  # S3 ETags are md5s: deliberately not the sha256
        return f'"{hashlib.md5(self.content).hexdigest()}"'


@dataclass
class Fault:
    """One scripted misbehaviour, used by the next `times` requests it matches.

    kind: "status" (reply `status` + `headers`), "drop" (close the socket after `after_bytes` of the body),
    "short" (an honest Content-Length but only `after_bytes` bytes: the file looks shorter), "wrong" (the right
    length, wrong bytes). `method` is HEAD or GET; body faults only apply to requests that carry the body.
    """

    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int = 0
    method: str = "GET"
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Repo:
    files: dict[str, HubFile] = field(default_factory=dict)
    commit: str = COMMIT
    token: str | None = None  # a gated repo: only this bearer token gets in


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-body is exactly what several tests do


class FakeHub:
    def __init__(self, redirect_lfs: bool = True) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: deque[Fault] = deque()
        self.requests: list[Seen] = []
        self.redirect_lfs = redirect_lfs
        self.honour_range = True
        self.renamed: dict[str, str] = {}  # old repo id -> new repo id
        self.honour_conditional = True  # False: never answers 304 (some mirrors and proxies)
        self.trickle: tuple[int, float] | None = None  # (bytes per write, seconds between writes)
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_GET(self) -> None:
                hub._handle(self, "GET")

        # The CDN is a second origin (another port), as on the real Hub: clients must not carry the token there.
        self.servers = [_QuietServer(("127.0.0.1", 0), Handler) for _ in range(2)]

    # ------------------------------------------------------------------ setup
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.servers[1].server_address[1]}"

    def add(self, repo: str, name: str, content: bytes, *, lfs: bool = True, token: str | None = None) -> HubFile:
        entry = self.repos.setdefault(repo, Repo())
        if token is not None:
            entry.token = token
        entry.files[name] = HubFile(content, lfs)
        return entry.files[name]

    def fault(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def gets(self, *, body_only: bool = True) -> list[Seen]:
        """GETs that were answered with a body (200/206), or all GETs."""
        return [r for r in self.requests if r.method == "GET" and (not body_only or r.status in (200, 206))]

    def __enter__(self) -> FakeHub:
        for server in self.servers:
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    # ---------------------------------------------------------------- serving
    def _take_fault(self, method: str, body: bool) -> Fault | None:
        with self.lock:
            for fault in list(self.faults):
                if fault.method != method or (fault.kind != "status") != body:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        seen = Seen(method, h.path, {k.lower(): v for k, v in h.headers.items()})
        with self.lock:
            self.requests.append(seen)
        fault = self._take_fault(method, body=False)
        if fault is not None:
            return self._reply(h, seen, fault.status, fault.headers)
        path = urlsplit(h.path).path
        if path.startswith("/cdn/"):
            return self._cdn(h, seen, method, path[len("/cdn/") :])
        if "/resolve/" not in path:
            return self._reply(h, seen, 404, {"X-Error-Code": "RepoNotFound"})
        repo_id, rest = path[1:].split("/resolve/", 1)
        rev, _, name = rest.partition("/")
        if unquote(repo_id) in self.renamed:  # a renamed repo: relative redirect to the new name, as the Hub does
            return self._reply(h, seen, 307, {"Location": f"/{self.renamed[unquote(repo_id)]}/resolve/{rest}"})
        repo = self.repos.get(unquote(repo_id))
        if repo is None:
            return self._reply(h, seen, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        if repo.token is not None and seen.headers.get("authorization") != f"Bearer {repo.token}":
            status = 401 if "authorization" not in seen.headers else 403
            return self._reply(h, seen, status, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"})
        if unquote(rev) not in ("main", repo.commit):
            return self._reply(h, seen, 404, {"X-Error-Code": "RevisionNotFound", "X-Repo-Commit": repo.commit})
        f = repo.files.get(unquote(name))
        if f is None:
            return self._reply(h, seen, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
        hub_headers = {"X-Repo-Commit": repo.commit, "ETag": f.resolve_etag}
        if f.lfs:
            hub_headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.content))}
        if self.honour_conditional and seen.headers.get("if-none-match") == f.resolve_etag:
            return self._reply(h, seen, 304, hub_headers)
        if f.lfs and self.redirect_lfs:
            location = f"{self.cdn_url}/cdn/{f.sha256}?repo={quote(repo_id)}"
            return self._reply(h, seen, 302, hub_headers | {"Location": location})
        self._body(h, seen, method, f, hub_headers | {"Last-Modified": "Sun, 01 Nov 2026 00:00:00 GMT"}, f.resolve_etag)

    def _cdn(self, h: BaseHTTPRequestHandler, seen: Seen, method: str, sha: str) -> None:
        for repo in self.repos.values():
            for f in repo.files.values():
                if f.sha256 == sha:
                    return self._body(h, seen, method, f, {"Last-Modified": "Sun, 01 Nov 2026 00:00:00 GMT"}, f.cdn_etag)
        self._reply(h, seen, 404, {})

    def _body(self, h: BaseHTTPRequestHandler, seen: Seen, method: str, f: HubFile, headers: dict, etag: str) -> None:
        content = f.content
        status, start = 200, 0
        rng = seen.headers.get("range")
        if_range = seen.headers.get("if-range")
        if rng and self.honour_range and (if_range is None or if_range in (etag, headers.get("Last-Modified"))):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(content):
                return self._reply(h, seen, 416, {"Content-Range": f"bytes */{len(content)}"})
            status = 206
            headers = headers | {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"}
        body = content[start:]
        fault = self._take_fault(method, body=True) if method == "GET" else None
        length = len(body)
        if fault is not None and fault.kind == "short":
            body = body[: fault.after_bytes]
            length = len(body)
        elif fault is not None and fault.kind == "wrong":
            body = bytes(b ^ 0xFF for b in body)
        seen.status = status
        h.send_response(status)
        for k, v in (headers | {"ETag": etag, "Accept-Ranges": "bytes", "Content-Length": str(length)}).items():
            h.send_header(k, v)
        h.end_headers()
        if method == "HEAD":
            return
        if fault is not None and fault.kind == "drop":
            h.wfile.write(body[: fault.after_bytes])
            h.wfile.flush()
            h.close_connection = True
            return
        self._write(h, body)

    def _write(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        step, delay = self.trickle or (len(body) or 1, 0.0)
        try:
            for i in range(0, len(body), step):
                if delay:
                    time.sleep(delay)  # before each write, so even the first byte is late
                h.wfile.write(body[i : i + step])
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _reply(self, h: BaseHTTPRequestHandler, seen: Seen, status: int, headers: dict[str, str]) -> None:
        seen.status = status
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()


@pytest.fixture
def fake_hub():
    with FakeHub() as hub:
        yield hub


# ------------------------------------------------------------------------------------------------ the fake is Hub-like
def test_huggingface_hub_reads_the_fake_like_the_real_hub(fake_hub: FakeHub) -> None:
    """huggingface_hub's own metadata call parses our server: commit, LFS sha256 etag, size, CDN location."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    content = b"gguf" * 1000
    f = fake_hub.add("org/model", "m.gguf", content)
    meta = get_hf_file_metadata(hf_hub_url("org/model", "m.gguf", endpoint=fake_hub.url), token=False)
    assert meta.commit_hash == COMMIT
    assert meta.etag == f.sha256
    assert meta.size == len(content)
    assert meta.location.startswith(f"{fake_hub.cdn_url}/cdn/")


def test_huggingface_hub_classifies_the_fakes_errors(fake_hub: FakeHub) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    fake_hub.add("org/model", "m.gguf", b"x")
    fake_hub.add("org/gated", "m.gguf", b"x", token="sekrit")
    cases = [
        ("org/model", "missing.gguf", EntryNotFoundError),
        ("org/nope", "m.gguf", RepositoryNotFoundError),
        ("org/gated", "m.gguf", GatedRepoError),
    ]
    for repo, name, error in cases:
        with pytest.raises(error):
            get_hf_file_metadata(hf_hub_url(repo, name, endpoint=fake_hub.url), token=False)


def test_range_if_range_and_not_modified(fake_hub: FakeHub) -> None:
    import httpx

    f = fake_hub.add("org/model", "t.json", b"0123456789", lfs=False)
    url = f"{fake_hub.url}/org/model/resolve/main/t.json"
    with httpx.Client() as c:
        r = c.get(url, headers={"Range": "bytes=4-", "If-Range": f.resolve_etag})
        assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, b"456789", "bytes 4-9/10")
        r = c.get(url, headers={"Range": "bytes=4-", "If-Range": '"stale"'})
        assert (r.status_code, r.content) == (200, b"0123456789")
        assert c.head(url, headers={"If-None-Match": f.resolve_etag}).status_code == 304
