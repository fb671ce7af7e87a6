"""Remote media over a real database (both engines) and media store, with a scripted remote
server behind the federation client's get_raw: the federation endpoint and the legacy fallback,
the cache, shared downloads, thumbnails made locally, retention, every error a client can get,
and our own federation endpoints' multipart answers."""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import Any, Callable

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet import defer

from federation.client import (CONNECT, DNS, TIMEOUT, FederationBadResponse, FederationError,
                               FederationUnreachable)
from federation.media import MULTIPART_OVERHEAD, FederationMediaApi, FederationMediaDownloader
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_FEDERATION, Router
from homeserver.media.fetch import Fetched, FetchError, TooLarge
from homeserver.media.multipart import encode_media, filename_of, parse_media
from homeserver.media.repository import MediaRepository
from storage.database import Database
from tests.media.test_media_repository import ALICE, HERE, error_of, files_in, make_repo, png, sleep

REMOTE = "remote.example:8448"
FED = "/_matrix/federation/v1/media/download/"
LEGACY = "/_matrix/media/v3/download/remote.example%3A8448/"
MAX = 1024 * 1024  # make_repo's max_upload_size

Answer = Any  # (status, headers, body), an exception, or an async callable returning either


def multipart(data: bytes, ctype: str = "text/plain", disposition: str | None = None
              ) -> tuple[int, dict[str, list[str]], bytes]:
    mp, body = encode_media(data, ctype, disposition)
    return 200, {"content-type": [mp]}, body


class FakeFederation:
    """get_raw of the federation client, answering from a script keyed by path."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: list[tuple[str, str, dict[str, Any], int, int | None]] = []

    async def get_raw(self, destination: str, path: str, args: Any = None,
                      max_size: int = 0, *, timeout_ms: int | None = None) -> Any:
        self.calls.append((destination, path, dict(args or {}), max_size, timeout_ms))
        answer = self.answers.get(path, FederationError(404, "M_UNRECOGNIZED", "Unrecognized",
                                                        destination=destination))
        if callable(answer):
            answer = await answer()
        if isinstance(answer, Exception):
            raise answer
        if len(answer[2]) > max_size:
            raise FederationBadResponse(f"{destination}: answer is over {max_size} bytes")
        return answer

    def paths(self) -> list[str]:
        return [c[1] for c in self.calls]


def remote_repo(db: Database, fed: FakeFederation, fetch_url: Any = None,
                whitelist: tuple[str, ...] | None = None, **config: Any) -> MediaRepository:
    repo = make_repo(db, tempfile.mkdtemp(prefix="hearth-remote-"), **config)
    repo.remote = FederationMediaDownloader(fed, HERE, domain_whitelist=whitelist,
                                            fetch_url=fetch_url)
    return repo


@pytest_twisted.ensureDeferred
async def test_download_over_federation_is_cached(db: Database) -> None:
    fed = FakeFederation()
    fed.answers[FED + "abc"] = multipart(b"remote bytes", "text/plain; charset=utf-8",
                                         "inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt")
    repo = remote_repo(db, fed)
    content = await repo.get_content(REMOTE, "abc", 5_000)
    assert content.data == b"remote bytes"
    row = content.media
    assert (row.origin, row.media_id, row.user_id) == (REMOTE, "abc", None)
    assert row.content_type == "text/plain; charset=utf-8" and row.upload_name == "résumé.txt"
    assert row.authenticated  # fetched while authenticated media is on
    (dest, path, args, max_size, timeout), = fed.calls
    assert (dest, path, args) == (REMOTE, FED + "abc", {"timeout_ms": 5_000})
    assert max_size == MAX + MULTIPART_OVERHEAD and timeout > 5_000
    # Served from the cache from now on: no more requests.
    assert (await repo.get_content(REMOTE, "abc")).data == b"remote bytes"
    assert (await repo.get_content(REMOTE, "abc", legacy=False, allow_remote=False)).data \
        == b"remote bytes"
    assert len(fed.calls) == 1
    assert files_in(repo) == {hashlib.sha256(b"remote bytes").hexdigest()}
    # The same bytes uploaded here share the file; deleting the remote copy keeps it.
    local = await repo.upload(ALICE, b"remote bytes", "text/plain", None)
    await repo.delete([(REMOTE, "abc")])
    assert (await repo.get_content(HERE, local)).data == b"remote bytes"
    assert len(files_in(repo)) == 1
    # Deleted from the cache: the next request downloads it again.
    await repo.get_content(REMOTE, "abc")
    assert len(fed.calls) == 2


@pytest_twisted.ensureDeferred
async def test_legacy_fallback(db: Database) -> None:
    fed = FakeFederation()
    fed.answers[LEGACY + "old"] = (200, {"content-type": ["image/png"],
                                         "content-disposition": ['inline; filename="p.png"']},
                                   png(20, 10))
    repo = remote_repo(db, fed)
    content = await repo.get_content(REMOTE, "old")
    assert content.data == png(20, 10) and content.media.content_type == "image/png"
    assert content.media.upload_name == "p.png"
    assert fed.paths() == [FED + "old", LEGACY + "old"]
    assert fed.calls[1][2] == {"allow_remote": "false", "timeout_ms": 20_000}
    assert fed.calls[1][3] == MAX
    await repo.wait_background()


@pytest.mark.parametrize("fed_answer, legacy_answer, status, errcode, asks_legacy", [
    # Unknown on both endpoints.
    (None, FederationError(404, "M_NOT_FOUND", "Not found"), 404, "M_NOT_FOUND", True),
    # The federation endpoint knows the media is missing; the legacy one is asked anyway
    # (older servers answer unknown paths with 404 M_NOT_FOUND too) and agrees.
    (FederationError(404, "M_NOT_FOUND", "x"), None, 404, "M_NOT_FOUND", True),
    (FederationError(405, "M_UNRECOGNIZED", "x"), FederationError(404, None, "Not Found"),
     404, "M_NOT_FOUND", True),
    (FederationError(504, "M_NOT_YET_UPLOADED", "x"), None, 504, "M_NOT_YET_UPLOADED", False),
    (FederationError(502, "M_TOO_LARGE", "x"), None, 502, "M_TOO_LARGE", False),
    (FederationError(500, "M_UNKNOWN", "x"), None, 502, "M_UNKNOWN", False),
    (FederationError(403, "M_FORBIDDEN", "x"), None, 502, "M_UNKNOWN", False),
    (FederationUnreachable(REMOTE, CONNECT, "refused"), None, 502, "M_UNKNOWN", False),
    (FederationUnreachable(REMOTE, DNS, "no such host"), None, 502, "M_UNKNOWN", False),
    (FederationUnreachable(REMOTE, TIMEOUT, "slow"), None, 504, "M_UNKNOWN", False),
    # Answers over the limit, announced or not, and a payload over it inside the multipart.
    (multipart(b"x" * (MAX + MULTIPART_OVERHEAD + 1)), None, 502, "M_TOO_LARGE", False),
    (multipart(b"x" * (MAX + 1)), None, 502, "M_TOO_LARGE", False),
    (None, (200, {"content-type": ["text/plain"]}, b"y" * (MAX + 1)), 502, "M_TOO_LARGE", True),
    # Not the spec's multipart.
    ((200, {"content-type": ["application/octet-stream"]}, b"raw"), None, 502, "M_UNKNOWN", False),
    ((200, {"content-type": ["multipart/mixed; boundary=zz"]}, b"--zz\r\n\r\n{}\r\n--zz--"),
     None, 502, "M_UNKNOWN", False),
    # The legacy endpoint fails in its own way.
    (None, FederationUnreachable(REMOTE, "connection lost", "reset"), 502, "M_UNKNOWN", True),
])
@pytest_twisted.ensureDeferred
async def test_errors(db: Database, fed_answer: Answer, legacy_answer: Answer, status: int,
                      errcode: str, asks_legacy: bool) -> None:
    fed = FakeFederation()
    if fed_answer is not None:
        fed.answers[FED + "m"] = fed_answer
    if legacy_answer is not None:
        fed.answers[LEGACY + "m"] = legacy_answer
    repo = remote_repo(db, fed)
    err = await error_of(repo.get_content(REMOTE, "m"))
    assert (err.status, err.errcode) == (status, errcode)
    assert (LEGACY + "m" in fed.paths()) == asks_legacy
    # Nothing is cached after a failure, and the next request asks again.
    assert await repo.get_media_info(REMOTE, "m") is None and files_in(repo) == set()
    await error_of(repo.get_content(REMOTE, "m"))
    assert fed.paths().count(FED + "m") == 2


@pytest_twisted.ensureDeferred
async def test_requests_that_never_reach_the_remote(db: Database) -> None:
    fed = FakeFederation()
    fed.answers[FED + "m"] = multipart(b"data")
    repo = remote_repo(db, fed, whitelist=("friend.example",))
    err = await error_of(repo.get_content(REMOTE, "m"))
    assert (err.status, err.errcode) == (403, "M_FORBIDDEN")
    # Only from the cache; the legacy endpoints never get (authenticated) remote media.
    for kwargs in ({"allow_remote": False}, {"legacy": True}):
        assert (await error_of(repo.get_content(REMOTE, "m", **kwargs))).status == 404
        assert (await error_of(repo.get_thumbnail(REMOTE, "m", 32, 32, "crop", **kwargs))
                ).status == 404
    assert fed.calls == []
    # Without a remote source (federation not wired), remote media is simply not found.
    repo.remote = None
    assert (await error_of(repo.get_content("other.example", "m"))).errcode == "M_NOT_FOUND"
    # A bad id never gets this far (the API checks it), and our own name is never fetched.
    downloader = FederationMediaDownloader(fed, HERE)
    assert (await error_of(downloader.download(HERE, "m", MAX, 0))).status == 404
    assert fed.calls == []


@pytest_twisted.ensureDeferred
async def test_legacy_endpoints_without_authenticated_media(db: Database) -> None:
    fed = FakeFederation()
    fed.answers[FED + "m"] = multipart(b"public")
    repo = remote_repo(db, fed, enable_authenticated_media=False)
    content = await repo.get_content(REMOTE, "m", legacy=True)
    assert content.data == b"public" and not content.media.authenticated
    assert (await repo.get_content(REMOTE, "m", legacy=True, allow_remote=False)).data == b"public"
    assert len(fed.calls) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_one_download(db: Database) -> None:
    fed = FakeFederation()
    gate: defer.Deferred = defer.Deferred()

    async def slow() -> Any:
        await gate
        return multipart(b"once")
    fed.answers[FED + "m"] = slow
    repo = remote_repo(db, fed)
    waiting = [defer.ensureDeferred(repo.get_content(REMOTE, "m")) for _ in range(5)]
    await sleep(0.1)
    assert len(fed.calls) == 1 and not any(d.called for d in waiting)
    gate.callback(None)
    results = await defer.gatherResults(waiting)
    assert {r.data for r in results} == {b"once"}
    assert len(fed.calls) == 1


@pytest_twisted.ensureDeferred
async def test_thumbnails_of_remote_media_are_made_here(db: Database) -> None:
    fed = FakeFederation()
    fed.answers[FED + "img"] = multipart(png(300, 200), "image/png")
    fed.answers[FED + "txt"] = multipart(b"not an image", "text/plain")
    repo = remote_repo(db, fed)
    thumb = await repo.get_thumbnail(REMOTE, "img", 50, 50, "crop")
    assert Image.open(io.BytesIO(thumb.data)).size == (96, 96)
    assert fed.paths() == [FED + "img"]  # the original, once; no remote thumbnail request
    again = await repo.get_thumbnail(REMOTE, "img", 50, 50, "crop")
    assert again.data == thumb.data and len(fed.calls) == 1
    assert (await error_of(repo.get_thumbnail(REMOTE, "txt", 50, 50, "crop"))).status == 400
    await repo.wait_background()
    # Deleting the remote media takes its thumbnails with it.
    await repo.delete([(REMOTE, "img"), (REMOTE, "txt")])
    assert files_in(repo) == set()


@pytest_twisted.ensureDeferred
async def test_remote_media_retention(db: Database) -> None:
    fed = FakeFederation()
    fed.answers[FED + "old"] = multipart(b"old remote")
    fed.answers[FED + "read"] = multipart(b"read remote")
    repo = remote_repo(db, fed, remote_media_lifetime_ms=300)
    local = await repo.upload(ALICE, b"local", "text/plain", None)
    await repo.get_content(REMOTE, "old")
    await repo.get_content(REMOTE, "read")
    await sleep(0.2)
    await repo.get_content(REMOTE, "read")  # an access restarts its lifetime
    await sleep(0.2)
    await repo.purge_expired()
    assert await repo.get_media_info(REMOTE, "old") is None
    assert await repo.get_media_info(REMOTE, "read") is not None
    assert await repo.get_media_info(HERE, local) is not None  # only remote media expires
    assert files_in(repo) == {hashlib.sha256(b"read remote").hexdigest(),
                              hashlib.sha256(b"local").hexdigest()}
    # Purged media is downloaded again when asked for.
    assert (await repo.get_content(REMOTE, "old")).data == b"old remote"


@pytest_twisted.ensureDeferred
async def test_location_parts_are_followed_through_the_safe_fetcher(db: Database) -> None:
    fed = FakeFederation()
    mp, body = encode_media(None, None, location="https://cdn.example/m?sig=1")
    fed.answers[FED + "m"] = (200, {"content-type": [mp]}, body)
    fed.answers[FED + "big"] = (200, {"content-type": [mp]}, body.replace(b"=1", b"=2"))
    fed.answers[FED + "bad"] = (200, {"content-type": [mp]}, body.replace(b"=1", b"=3"))
    fetched: list[str] = []

    async def fetch(url: str) -> Fetched:
        fetched.append(url)
        if url.endswith("=2"):
            raise TooLarge("too big")
        if url.endswith("=3"):
            raise FetchError("blocked")
        return Fetched(url, "image/gif", b"GIF89a")
    repo = remote_repo(db, fed, fetch_url=fetch)
    content = await repo.get_content(REMOTE, "m")
    assert content.data == b"GIF89a" and content.media.content_type == "image/gif"
    assert fetched == ["https://cdn.example/m?sig=1"]
    assert (await error_of(repo.get_content(REMOTE, "big"))).errcode == "M_TOO_LARGE"
    assert (await error_of(repo.get_content(REMOTE, "bad"))).status == 502
    # Without a fetcher, a redirecting answer is a failure, not a crash.
    repo.remote = FederationMediaDownloader(fed, HERE)
    await repo.delete([(REMOTE, "m")])
    assert (await error_of(repo.get_content(REMOTE, "m"))).status == 502


# --- our federation endpoints -----------------------------------------------------------------

class FakeRaw:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value


class FakeRequest:
    """The parts of HttpRequest the federation media handlers use."""

    def __init__(self, **args: str) -> None:
        self.raw = FakeRaw()
        self.args = args
        self.origin = REMOTE

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.args.get(name, default)

    def query_int(self, name: str, default: int | None = None, *, lo: int | None = None) -> int | None:
        v = self.args.get(name)
        if v is None:
            return default
        if not v.isdigit() or (lo is not None and int(v) < lo):
            raise MatrixError(400, "M_INVALID_PARAM", name)
        return int(v)

    def query_bool(self, name: str, default: bool = False) -> bool:
        v = self.args.get(name)
        return default if v is None else v == "true"


def answer(req: FakeRequest, result: tuple[int, Any]) -> Any:
    status, body = result
    assert status == 200
    return parse_media(req.raw.headers[b"Content-Type"].decode(), body)


@pytest_twisted.ensureDeferred
async def test_federation_endpoints_answer_multipart(db: Database) -> None:
    repo = make_repo(db, tempfile.mkdtemp())
    api = FederationMediaApi(repo)
    router = Router()
    api.register(router)
    for path in ("/_matrix/federation/v1/media/download/x",
                 "/_matrix/federation/v1/media/thumbnail/x"):
        route, params = router.match("GET", path)
        assert route.auth == AUTH_FEDERATION and params == {"mediaId": "x"}

    media_id = await repo.upload(ALICE, b"<html>", "text/html", "page.html")
    req = FakeRequest()
    part = answer(req, await api.download(req, media_id))
    assert part.metadata == {} and part.content == b"<html>"
    assert part.content_type == "text/html"
    assert part.content_disposition.startswith("attachment")  # never inline for HTML
    assert filename_of(part.content_disposition) == "page.html"

    image = await repo.upload(ALICE, png(300, 200), "image/png", None)
    req = FakeRequest(width="40", height="40", method="crop")
    part = answer(req, await api.thumbnail(req, image))
    assert part.content_type == "image/png"
    assert Image.open(io.BytesIO(part.content)).size == (96, 96)
    await repo.wait_background()

    pending, _ = await repo.create(ALICE)

    def err(coro: Any) -> Any:
        return error_of(coro)
    cases: list[tuple[Callable[[], Any], int, str]] = [
        (lambda: api.download(FakeRequest(), "no_such_media"), 404, "M_NOT_FOUND"),
        (lambda: api.download(FakeRequest(), "bad!id"), 400, "M_INVALID_PARAM"),
        (lambda: api.download(FakeRequest(timeout_ms="0"), pending), 504, "M_NOT_YET_UPLOADED"),
        (lambda: api.thumbnail(FakeRequest(height="5"), image), 400, "M_MISSING_PARAM"),
        (lambda: api.thumbnail(FakeRequest(width="5"), image), 400, "M_MISSING_PARAM"),
        (lambda: api.thumbnail(FakeRequest(width="5", height="5", method="zoom"), image),
         400, "M_INVALID_PARAM"),
        (lambda: api.thumbnail(FakeRequest(width="0", height="5"), image), 400, "M_INVALID_PARAM"),
        (lambda: api.thumbnail(FakeRequest(width="5", height="5"), media_id), 400, "M_UNKNOWN"),
    ]
    for call, status, errcode in cases:
        e = await err(call())
        assert (e.status, e.errcode) == (status, errcode), (status, errcode, e.to_json())
    # Quarantined media is not served to other servers either.
    await repo.quarantine(HERE, media_id, "@admin:test.local")
    assert (await err(api.download(FakeRequest(), media_id))).status == 404
