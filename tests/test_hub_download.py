"""Library tests of bitnet.hub.download against the Hub-like server: resume, retries, verification, atomicity."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from bitnet.errors import (
    AuthError,
    HashMismatchError,
    Interrupted,
    NetworkError,
    NoSpaceError,
    NotFoundError,
    RateLimitError,
    UsageError,
)
from bitnet.hub.download import Downloader, DownloadRequest, download_model
from bitnet.hub.events import NdjsonSink
from bitnet.hub.http import RetryPolicy, parse_retry_after
from test_hub_fakehub import COMMIT, FakeHub, Fault

REPO = "org/model"
NAME = "model.gguf"
FIXED_NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def content() -> bytes:
    return os.urandom(300_000)


class Rig:
    """A Downloader wired to the fake hub with recorded sleeps and NDJSON events."""

    def __init__(self, hub: FakeHub, tmp: Path, **kw) -> None:
        self.sleeps: list[float] = []
        self.stream = io.StringIO()
        policy = kw.pop("policy", RetryPolicy(retries=3, backoff_base_s=0.01, backoff_cap_s=0.05))
        self.dl = Downloader(
            endpoint=hub.url, token=kw.pop("token", ""), policy=policy, sink=NdjsonSink(self.stream, interval_s=0),
            sleep=self.sleeps.append, now=lambda: FIXED_NOW, timeout_s=kw.pop("timeout_s", 5.0), **kw,
        )
        self.out = tmp / "out"

    def get(self, name: str = NAME, **kw) -> object:
        return self.dl.download(DownloadRequest(repo_id=kw.pop("repo", REPO), filename=name, out_dir=self.out, **kw))

    def events(self, name: str | None = None) -> list[dict]:
        rows = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [r for r in rows if name is None or r["event"] == name]

    def dest(self, name: str = NAME) -> Path:
        return (self.out / "org-model" / name).resolve()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _ranges(hub: FakeHub) -> list[str]:
    return [r.headers["range"] for r in hub.gets() if "range" in r.headers]


@pytest.mark.parametrize("redirect", [True, False])
def test_download_verifies_lfs_sha256_and_writes_sidecar(hub, tmp_path, content, redirect):
    hub.redirect_lfs = redirect
    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path, token="hf_tok_123")
    result = rig.get()
    assert result.path.read_bytes() == content
    assert (result.verified, result.sha256_source, result.sha256) == (True, "hub-lfs", _sha(content))
    assert result.commit == COMMIT
    side = json.loads(rig.dest().with_name(NAME + ".download.json").read_text())
    assert side["sha256"] == _sha(content) and side["commit"] == COMMIT
    assert not rig.dest().with_name(NAME + ".part").exists()
    # the token goes to the Hub but never to the CDN origin
    for r in hub.requests:
        on_cdn = r.path.startswith("/cdn/")
        assert ("authorization" in r.headers) == (not on_cdn), r.path
    assert [e["event"] for e in rig.events() if e["event"] != "progress"] == ["start", "done"]


def test_renamed_repo_relative_redirect_is_followed(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.renamed["org/old-name"] = REPO
    rig = Rig(hub, tmp_path)
    result = rig.get(repo="org/old-name")
    assert result.verified and result.commit == COMMIT and result.path.read_bytes() == content
    assert [r.status for r in hub.requests if r.method == "HEAD"] == [307, 302]


def test_rerun_gets_304_and_skips(hub, tmp_path, content):
    f = hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path)
    rig.get()
    n_bodies = len(hub.gets())
    again = rig.get()
    assert again.status == "up_to_date" and again.verified
    assert len(hub.gets()) == n_bodies
    heads = [r for r in hub.requests if r.method == "HEAD"]
    assert heads[-1].headers.get("if-none-match") == f.resolve_etag and heads[-1].status == 304


def test_server_without_304_still_skips_an_unchanged_file(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.honour_conditional = False
    rig = Rig(hub, tmp_path)
    rig.get()
    again = rig.get()
    assert again.status == "up_to_date" and again.verified and len(hub.gets()) == 1


def test_lost_sidecar_is_rebuilt_from_a_verified_file(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path)
    rig.get()
    sidecar = rig.dest().with_name(NAME + ".download.json")
    sidecar.unlink()  # as if killed between the rename and the sidecar write
    assert rig.get().status == "up_to_date" and sidecar.exists()
    rig.get()
    assert hub.requests[-1].status == 304 and len(hub.gets()) == 1


def test_damaged_local_copy_is_replaced(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path)
    rig.get()
    rig.dest().write_bytes(b"garbage" + content[7:])
    result = rig.get()
    assert result.status == "downloaded" and rig.dest().read_bytes() == content


def test_dropped_connection_resumes_with_range(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("drop", after_bytes=100_000))
    rig = Rig(hub, tmp_path)
    result = rig.get()
    assert rig.dest().read_bytes() == content and result.verified
    assert _ranges(hub) == ["bytes=100000-"]
    retry = rig.events("retry")
    assert len(retry) == 1 and "network" in retry[0]["reason"]


def test_resume_across_runs_sends_if_range(hub, tmp_path, content):
    f = hub.add(REPO, NAME, content)
    hub.fault(Fault("drop", after_bytes=120_000))
    rig = Rig(hub, tmp_path, policy=RetryPolicy(retries=0))
    with pytest.raises(NetworkError):
        rig.get()
    part = rig.dest().with_name(NAME + ".part")
    assert part.stat().st_size == 120_000 and not rig.dest().exists()
    result = Rig(hub, tmp_path).get()
    assert result.resumed_from == 120_000 and result.bytes_transferred == len(content) - 120_000
    resumed = hub.gets()[-1]
    assert resumed.headers["range"] == "bytes=120000-" and resumed.headers["if-range"] == f.cdn_etag
    assert rig.dest().read_bytes() == content


def test_server_ignoring_range_restarts_cleanly(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("drop", after_bytes=50_000))
    hub.honour_range = False
    rig = Rig(hub, tmp_path)
    result = rig.get()
    assert rig.dest().read_bytes() == content and result.sha256 == _sha(content)
    assert [r.status for r in hub.gets()] == [200, 200]
    assert any("restarting" in e["message"] for e in rig.events("info"))  # never a silent restart


def test_part_from_another_version_is_discarded(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("drop", after_bytes=100_000))
    with pytest.raises(NetworkError):
        Rig(hub, tmp_path, policy=RetryPolicy(retries=0)).get()
    new = os.urandom(len(content))
    hub.add(REPO, NAME, new)  # the remote file changes between runs
    result = Rig(hub, tmp_path).get()
    assert result.resumed_from == 0 and _ranges(hub) == []
    assert result.path.read_bytes() == new


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=416, headers={"Content-Range": "bytes */1"}),
        Fault("status", status=412),
        Fault("status", status=206, headers={"Content-Range": "bytes 7-9/10"}),
    ],
    ids=["416", "412", "bad-content-range"],
)
def test_unusable_resume_restarts_from_zero(hub, tmp_path, content, fault):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("drop", after_bytes=100_000))
    with pytest.raises(NetworkError):
        Rig(hub, tmp_path, policy=RetryPolicy(retries=0)).get()
    hub.fault(fault)
    rig = Rig(hub, tmp_path)
    result = rig.get()
    assert result.path.read_bytes() == content
    assert "restarting from zero" in rig.events("retry")[0]["reason"]
    assert "range" not in hub.gets()[-1].headers


def test_retry_after_seconds_and_http_date(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    date = format_datetime(FIXED_NOW + timedelta(seconds=42), usegmt=True)
    hub.fault(
        Fault("status", status=429, headers={"Retry-After": "7"}, method="HEAD"),
        Fault("status", status=503, headers={"Retry-After": date}),
        Fault("status", status=429, headers={"Retry-After": "999999"}),
    )
    rig = Rig(hub, tmp_path, policy=RetryPolicy(retries=3, retry_after_cap_s=3600))
    rig.get()
    assert rig.sleeps == [7.0, 42.0, 3600.0]
    assert [e["retry_after_s"] for e in rig.events("retry")] == [7.0, 42.0, 999999.0]


def test_parse_retry_after_forms():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", lambda: FIXED_NOW) == 30.0
    assert parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", lambda: FIXED_NOW) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_5xx_backoff_grows_with_jitter_and_is_capped(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("status", status=500, times=3), Fault("status", status=502))
    policy = RetryPolicy(retries=4, backoff_base_s=1.0, backoff_cap_s=5.0)
    rig = Rig(hub, tmp_path, policy=policy)
    rig.get()
    assert len(rig.sleeps) == 4
    for attempt, slept in enumerate(rig.sleeps, 1):
        base = min(2 ** (attempt - 1), 5.0)
        assert base <= slept <= min(base + 1.0, 5.0)


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault("status", status=429, times=9), RateLimitError), (Fault("status", status=500, times=9), NetworkError)],
)
def test_retries_are_bounded(hub, tmp_path, content, fault, error):
    hub.add(REPO, NAME, content)
    hub.fault(fault)
    rig = Rig(hub, tmp_path, policy=RetryPolicy(retries=2, retry_after_cap_s=0.0, backoff_cap_s=0.0))
    with pytest.raises(error):
        rig.get()
    assert len(hub.gets(body_only=False)) == 3 and not rig.dest().exists()
    assert rig.events("error")[0]["exit_code"] == error.exit_code


def test_hub_errors_are_typed(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.add("org/gated", NAME, content, token="right")
    rig = Rig(hub, tmp_path)
    with pytest.raises(NotFoundError, match="EntryNotFound"):
        rig.get("missing.gguf")
    with pytest.raises(NotFoundError, match="RevisionNotFound"):
        rig.get(revision="v9")
    with pytest.raises(NotFoundError, match="RepoNotFound"):
        rig.get(repo="org/absent")
    with pytest.raises(AuthError, match="GatedRepo") as no_token:
        rig.get(repo="org/gated")
    assert "HF_TOKEN" in no_token.value.hint
    with pytest.raises(AuthError, match="403"):
        Rig(hub, tmp_path, token="wrong").get(repo="org/gated")
    assert Rig(hub, tmp_path, token="right").get(repo="org/gated").verified


def test_short_body_is_resumed(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("short", after_bytes=1000))
    rig = Rig(hub, tmp_path)
    assert rig.get().path.read_bytes() == content
    assert _ranges(hub) == ["bytes=1000-"]


def test_wrong_bytes_once_are_redownloaded(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("wrong"))
    rig = Rig(hub, tmp_path)
    assert rig.get().path.read_bytes() == content
    assert "sha256 mismatch" in rig.events("retry")[0]["reason"]


def test_wrong_bytes_twice_fail_without_leaving_anything(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.fault(Fault("wrong", times=2))
    rig = Rig(hub, tmp_path)
    with pytest.raises(HashMismatchError, match="after one automatic re-download"):
        rig.get()
    folder = rig.dest().parent
    assert sorted(p.name for p in folder.iterdir()) == [NAME + ".lock"]


def test_given_sha256_that_disagrees_with_the_hub_downloads_nothing(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path)
    with pytest.raises(HashMismatchError, match="nothing was downloaded"):
        rig.get(sha256="0" * 64)
    assert hub.gets(body_only=False) == []


def test_given_sha256_verifies_a_non_lfs_file(hub, tmp_path):
    data = b'{"vocab": {}}'
    hub.add(REPO, "config.json", data, lfs=False)
    rig = Rig(hub, tmp_path)
    unverified = rig.get("config.json")
    assert (unverified.verified, unverified.sha256_source) == (False, "computed")
    verified = rig.get("config.json", sha256=_sha(data).upper(), force=True)
    assert (verified.verified, verified.sha256_source) == (True, "given")
    with pytest.raises(UsageError):
        rig.get("config.json", sha256="abc")


def test_no_space_before_download(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path, disk_free=lambda p: len(content) + 10, reserve_bytes=100)
    with pytest.raises(NoSpaceError):
        rig.get()
    assert hub.gets(body_only=False) == []


def test_no_space_during_download_keeps_the_part(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.trickle = (16_384, 0.0)
    calls = iter([10**12] * 3 + [0] * 100)
    rig = Rig(hub, tmp_path, disk_free=lambda p: next(calls), space_check_every=32_768)
    with pytest.raises(NoSpaceError):
        rig.get()
    kept = rig.dest().with_name(NAME + ".part").stat().st_size
    assert 0 < kept < len(content) and not rig.dest().exists()
    assert Rig(hub, tmp_path).get().resumed_from == kept


def test_stalled_trickle_times_out_as_network_error(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.trickle = (50_000, 0.6)
    rig = Rig(hub, tmp_path, timeout_s=0.2, policy=RetryPolicy(retries=1, backoff_cap_s=0.0))
    with pytest.raises(NetworkError, match=r"ReadTimeout|timed out"):
        rig.get()
    hub.trickle = (30_000, 0.01)  # slow but steady: completes, with progress events along the way
    steady = Rig(hub, tmp_path)
    assert steady.get().path.read_bytes() == content
    assert len(steady.events("progress")) >= 10


def test_ctrl_c_keeps_a_resumable_part(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    hub.trickle = (20_000, 0.0)

    class Interrupting(NdjsonSink):
        def emit(self, event, **fields):
            if event == "progress" and fields["bytes"] >= 60_000:
                raise KeyboardInterrupt
            super().emit(event, **fields)

    rig = Rig(hub, tmp_path)
    rig.dl.sink = Interrupting(rig.stream)
    with pytest.raises(Interrupted, match="re-run"):
        rig.get()
    assert rig.events("error")[0]["exit_code"] == 130
    result = Rig(hub, tmp_path).get()
    assert result.resumed_from >= 60_000 and result.path.read_bytes() == content


@pytest.mark.parametrize(("repo", "name"), [("org/model", "../escape.gguf"), ("org/model", "/abs"),
                                            ("../../etc", "x"), ("org/model", "a/./b"), ("org/model", "a\\b")])
def test_names_are_validated(hub, tmp_path, repo, name):
    with pytest.raises(UsageError):
        Rig(hub, tmp_path).get(name, repo=repo)
    assert hub.requests == []


def test_token_never_reaches_events_errors_or_files(hub, tmp_path, content):
    secret = "hf_SECRETsecretSECRET"
    hub.add("org/gated", NAME, content, token="other")
    rig = Rig(hub, tmp_path, token=secret)
    with pytest.raises(AuthError) as err:
        rig.get(repo="org/gated")
    assert secret not in str(err.value) and secret not in rig.stream.getvalue()
    hub.add(REPO, NAME, content)
    rig.get()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()
    assert any(r.headers.get("authorization") == f"Bearer {secret}" for r in hub.requests)


def test_download_model_fetches_tokenizer_best_effort(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path)
    result = download_model(rig.dl, DownloadRequest(repo_id=REPO, filename=NAME, out_dir=rig.out))
    assert result["ok"] and result["tokenizer"]["status"] == "unavailable"
    assert result["tokenizer"]["kind"] == "not_found"
    assert [e["file"] for e in rig.events("warning")] == ["tokenizer.json"] and rig.events("error") == []
    hub.add(REPO, "tokenizer.json", b"{}", lfs=False)
    result = download_model(rig.dl, DownloadRequest(repo_id=REPO, filename=NAME, out_dir=rig.out))
    assert result["tokenizer"]["status"] == "downloaded"
    assert Path(result["tokenizer"]["path"]) == rig.dest("tokenizer.json")


def test_damaged_non_lfs_file_is_caught_by_the_sidecar_hash(hub, tmp_path):
    data = b'{"a": 1}' * 100
    hub.add(REPO, "config.json", data, lfs=False)
    rig = Rig(hub, tmp_path)
    rig.get("config.json")
    rig.dest("config.json").write_bytes(b"X" * len(data))
    hub.faults.clear()
    hub.honour_range = True
    again = rig.get("config.json")
    assert again.status == "downloaded" and again.path.read_bytes() == data


def test_offline_mode_verifies_without_network(hub, tmp_path, content):
    hub.add(REPO, NAME, content)
    Rig(hub, tmp_path).get()
    n = len(hub.requests)
    offline = Rig(hub, tmp_path, offline=True)
    result = offline.get()
    assert (result.status, result.verified, result.requests) == ("up_to_date", True, 0)
    with pytest.raises(NotFoundError, match="offline"):
        offline.get("other.gguf")
    offline.dest().write_bytes(b"\0" * len(content))
    with pytest.raises(HashMismatchError, match="offline"):
        offline.get()
    assert len(hub.requests) == n


def test_lock_held_elsewhere_times_out_as_could_not_run(hub, tmp_path, content):
    import filelock

    from bitnet.errors import CheckCouldNotRun

    hub.add(REPO, NAME, content)
    rig = Rig(hub, tmp_path, lock_timeout_s=0.2)
    rig.dest().parent.mkdir(parents=True)
    with filelock.FileLock(str(rig.dest()) + ".lock"), pytest.raises(CheckCouldNotRun):
        rig.get()
    assert rig.events("error")[0]["exit_code"] == 22 and hub.requests == []
    assert rig.get().verified  # released: the next run proceeds


def test_unreachable_endpoint_is_a_network_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    sleeps: list[float] = []
    dl = Downloader(endpoint=f"http://127.0.0.1:{port}", token="", sleep=sleeps.append,
                    policy=RetryPolicy(retries=2, backoff_base_s=0.01, backoff_cap_s=0.02))
    with pytest.raises(NetworkError, match="after 2 retries"):
        dl.download(DownloadRequest(repo_id=REPO, filename=NAME, out_dir=tmp_path))
    assert len(sleeps) == 2
