"""MediaRepository over a real database (both engines) and a real media store: content
addressing, races between uploads and deletions, waiting downloads, shared thumbnailing,
retention."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet import defer, reactor, task

from homeserver.clock import Clock
from homeserver.config import MediaConfig, UploadLimit
from homeserver.http.errors import MatrixError
from homeserver.media.files import ContentFiles
from homeserver.media.repository import MediaRepository
from storage.database import Database
from storage.media import MediaStore

HERE = "test.local"
ALICE, BOB = "@alice:test.local", "@bob:test.local"


def make_repo(db: Database, root: str, **config: Any) -> MediaRepository:
    return MediaRepository(MediaStore(db), ContentFiles(root), Clock(reactor), HERE,
                           MediaConfig(**config), 1024 * 1024)


@pytest_twisted.async_yield_fixture
async def repo(db: Database) -> AsyncIterator[MediaRepository]:
    r = make_repo(db, tempfile.mkdtemp(prefix="hearth-media-"))
    yield r
    await r.wait_background()


def files_in(repo: MediaRepository) -> set[str]:
    root = os.path.join(repo.files.root, "content")
    return {f for _, _, fs in os.walk(root) for f in fs}


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "orange").save(buf, "PNG")
    return buf.getvalue()


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def error_of(coro: Any) -> MatrixError:
    with pytest.raises(MatrixError) as e:
        await coro
    return e.value


@pytest_twisted.ensureDeferred
async def test_content_files(repo: MediaRepository) -> None:
    files = repo.files
    t1 = await files.write_temp(b"abc")
    assert t1.sha256 == hashlib.sha256(b"abc").hexdigest() and t1.length == 3
    await files.commit(t1)
    t2 = await files.write_temp(io.BytesIO(b"abc"))  # a file object, read in chunks
    await files.commit(t2)  # the same bytes: the temporary file is dropped
    assert await files.read(t1.sha256) == b"abc"
    assert files_in(repo) == {t1.sha256}
    assert os.listdir(os.path.join(files.root, "tmp")) == []
    assert oct(os.stat(files.path(t1.sha256)).st_mode & 0o777) == "0o600"
    await files.remove(t1.sha256)
    await files.remove(t1.sha256)  # removing twice is fine
    assert files_in(repo) == set()
    with pytest.raises(ValueError):
        files.path("../../etc/passwd")
    stale = await files.write_temp(b"left over")
    os.utime(stale.path, (0, 0))
    assert await files.clean_temp() == 1 and not os.path.exists(stale.path)


@pytest_twisted.ensureDeferred
async def test_same_bytes_one_file_and_deletion_by_reference(repo: MediaRepository) -> None:
    a = await repo.upload(ALICE, b"same", "text/plain", "a.txt")
    b = await repo.upload(BOB, b"same", "application/octet-stream", None)
    assert a != b and len(files_in(repo)) == 1
    assert (await repo.get_content(HERE, a)).media.upload_name == "a.txt"
    assert await repo.delete([(HERE, a)]) == [(HERE, a)]
    assert len(files_in(repo)) == 1
    assert (await repo.get_content(HERE, b)).data == b"same"
    await repo.delete([(HERE, b)])
    assert files_in(repo) == set()


@pytest_twisted.ensureDeferred
async def test_concurrent_upload_and_delete_of_the_same_bytes(repo: MediaRepository) -> None:
    # However a deletion of the last reference and a new upload of the same bytes interleave,
    # the new upload's file survives.
    for i in range(15):
        data = f"racy {i}".encode()
        old = await repo.upload(ALICE, data, "text/plain", None)
        results = await defer.DeferredList([
            defer.ensureDeferred(repo.delete([(HERE, old)])),
            defer.ensureDeferred(repo.upload(BOB, data, "text/plain", None)),
        ], fireOnOneErrback=True, consumeErrors=True)
        new = results[1][1]
        assert (await repo.get_content(HERE, new)).data == data
        await repo.delete([(HERE, new)])
    assert files_in(repo) == set()


@pytest_twisted.ensureDeferred
async def test_two_puts_race_for_one_id(repo: MediaRepository) -> None:
    media_id, _ = await repo.create(ALICE)
    outcomes = await defer.DeferredList([
        defer.ensureDeferred(repo.upload_to(ALICE, HERE, media_id, b"first", "text/plain", None)),
        defer.ensureDeferred(repo.upload_to(ALICE, HERE, media_id, b"second", "text/plain", None)),
    ], consumeErrors=True)
    ok = [r for success, r in outcomes if success]
    failed = [r.value for success, r in outcomes if not success]
    assert len(ok) == 1 and len(failed) == 1 and failed[0].errcode == "M_CANNOT_OVERWRITE_MEDIA"
    content = (await repo.get_content(HERE, media_id)).data
    assert content in (b"first", b"second")
    # The loser's file was not kept.
    assert files_in(repo) == {hashlib.sha256(content).hexdigest()}


@pytest_twisted.ensureDeferred
async def test_waiting_downloads(repo: MediaRepository) -> None:
    media_id, expires = await repo.create(ALICE)
    assert expires > Clock(reactor).time_msec()
    assert (await error_of(repo.get_content(HERE, media_id, 0))).errcode == "M_NOT_YET_UPLOADED"

    waiting = defer.ensureDeferred(repo.get_content(HERE, media_id, 30_000))
    await sleep(0.1)
    assert not waiting.called
    await repo.upload_to(ALICE, HERE, media_id, b"arrived", "text/plain", "x.txt")
    await sleep(0.05)
    assert waiting.called  # woken by the upload, not by its timeout
    assert (await waiting).data == b"arrived"

    # A deletion wakes waiters too, who then find nothing.
    other, _ = await repo.create(ALICE)
    waiting = defer.ensureDeferred(repo.get_content(HERE, other, 30_000))
    await sleep(0.1)
    await repo.delete([(HERE, other)])
    assert (await error_of(waiting)).errcode == "M_NOT_FOUND"

    # Other users cannot fill someone's id; ids do not exist on other servers.
    third, _ = await repo.create(ALICE)
    assert (await error_of(repo.upload_to(BOB, HERE, third, b"x", "t/t", None))).status == 403
    assert (await error_of(repo.upload_to(ALICE, "other.example", third, b"x", "t/t", None))
            ).status == 404
    assert files_in(repo) == {hashlib.sha256(b"arrived").hexdigest()}


@pytest_twisted.ensureDeferred
async def test_concurrent_thumbnail_requests_share_one_rendering(repo: MediaRepository) -> None:
    media_id = await repo.upload(ALICE, png(300, 200), "image/png", None)
    results = await defer.gatherResults([
        defer.ensureDeferred(repo.get_thumbnail(HERE, media_id, 50, 50, "crop"))
        for _ in range(6)])
    assert len({r.data for r in results}) == 1
    assert Image.open(io.BytesIO(results[0].data)).size == (96, 96)
    await repo.wait_background()
    # The original, two crops, and the three scale sizes, which all come out as the 300x200
    # original (never enlarged), so their identical bytes share one file.
    assert len(files_in(repo)) == 4
    await repo.delete([(HERE, media_id)])
    assert files_in(repo) == set()


@pytest_twisted.ensureDeferred
async def test_quota_and_erasure(db: Database) -> None:
    repo = make_repo(db, tempfile.mkdtemp(), upload_limits=(UploadLimit(3_600_000, 100),))
    await repo.upload(ALICE, b"a" * 60, "text/plain", None)
    err = await error_of(repo.upload(ALICE, b"b" * 60, "text/plain", None))
    assert (err.status, err.errcode) == (403, "M_FORBIDDEN")
    kept = await repo.upload(BOB, b"b" * 60, "text/plain", None)
    created, _ = await repo.create(ALICE)
    assert len(files_in(repo)) == 2
    deleted = await repo.delete_user_media(ALICE)
    assert len(deleted) == 2 and created in deleted
    assert files_in(repo) == {hashlib.sha256(b"b" * 60).hexdigest()}
    assert (await repo.get_content(HERE, kept)).data == b"b" * 60
    await repo.upload(ALICE, b"c" * 90, "text/plain", None)  # the quota counts what exists


@pytest_twisted.ensureDeferred
async def test_retention(db: Database) -> None:
    repo = make_repo(db, tempfile.mkdtemp(), local_media_lifetime_ms=300,
                     unused_expiration_time_ms=200)
    assert repo.purge_interval_s() == 1.0
    old = await repo.upload(ALICE, b"old", "text/plain", None)
    read = await repo.upload(ALICE, b"read", "text/plain", None)
    pending, _ = await repo.create(ALICE)
    await repo.quarantine(HERE, old, "@admin:test.local")
    await sleep(0.2)
    await repo.get_content(HERE, read)  # an access restarts its lifetime
    await sleep(0.2)
    await repo.purge_expired()
    assert await repo.get_media_info(HERE, pending) is None
    assert (await repo.get_content(HERE, read)).data == b"read"
    assert await repo.get_media_info(HERE, old) is not None  # quarantined media is kept
    await sleep(0.4)
    await repo.purge_expired()
    assert await repo.get_media_info(HERE, read) is None
    assert files_in(repo) == {hashlib.sha256(b"old").hexdigest()}
    assert make_repo(db, tempfile.mkdtemp()).purge_interval_s() == 3600.0
