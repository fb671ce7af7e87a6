"""MediaStore on both engines: pending ids, completing uploads once, references, listings."""

from __future__ import annotations

import pytest_twisted

from storage.database import Database
from storage.media import (UPLOAD_DONE, UPLOAD_EXISTS, UPLOAD_NOT_YOURS, UPLOAD_UNKNOWN, MediaRow,
                           MediaStore, ThumbnailRow)

HERE = "test.local"
H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def row(media_id: str, user: str | None = "@a:test.local", sha: str | None = H1, *,
        created: int = 1000, length: int | None = 10, origin: str = HERE,
        expires: int | None = None, accessed: int | None = None, ctype: str = "text/plain",
        name: str | None = None) -> MediaRow:
    return MediaRow(origin, media_id, user, ctype if sha else None, name, length if sha else None,
                    sha, created, expires, accessed if accessed is not None else created, True, None)


@pytest_twisted.ensureDeferred
async def test_insert_get_touch_quarantine(db: Database) -> None:
    s = MediaStore(db)
    await s.insert_media(row("m1", name="a.txt"))
    got = await s.get_media(HERE, "m1")
    assert got == row("m1", name="a.txt") and got.uploaded and got.authenticated is True
    assert await s.get_media(HERE, "nope") is None
    assert await s.get_media("other.example", "m1") is None
    await s.touch(HERE, "m1", 5000)
    await s.touch(HERE, "m1", 4000)  # never moves back
    assert (await s.get_media(HERE, "m1")).last_access_ts == 5000
    assert await s.set_quarantined(HERE, "m1", "@admin:test.local")
    assert (await s.get_media(HERE, "m1")).quarantined_by == "@admin:test.local"
    assert await s.set_quarantined(HERE, "m1", None)
    assert (await s.get_media(HERE, "m1")).quarantined_by is None
    assert not await s.set_quarantined(HERE, "nope", "@admin:test.local")


@pytest_twisted.ensureDeferred
async def test_pending_ids_and_completing_them_once(db: Database) -> None:
    s = MediaStore(db)
    for i in range(2):
        assert await s.create_pending(row(f"p{i}", sha=None, expires=10_000), 2000, 2)
    assert not await s.create_pending(row("p2", sha=None, expires=10_000), 2000, 2)
    # Expired ones do not count against the limit.
    assert await s.create_pending(row("p2", sha=None, expires=10_000), 10_000, 2)
    # Another user has their own limit.
    assert await s.create_pending(row("q0", "@b:test.local", sha=None, expires=10_000), 2000, 2)

    args = ("text/plain", "n.txt", 5, H2, 3000)
    assert await s.complete_upload(HERE, "nope", "@a:test.local", *args) == UPLOAD_UNKNOWN
    assert await s.complete_upload(HERE, "p0", "@b:test.local", *args) == UPLOAD_NOT_YOURS
    assert await s.complete_upload(HERE, "p0", "@a:test.local", *args) == UPLOAD_DONE
    assert await s.complete_upload(HERE, "p0", "@a:test.local", *args) == UPLOAD_EXISTS
    done = await s.get_media(HERE, "p0")
    assert (done.sha256, done.media_length, done.upload_name, done.unused_expires_at) == \
        (H2, 5, "n.txt", None)
    # Past its expiry an id cannot be completed.
    assert await s.complete_upload(HERE, "p1", "@a:test.local", "t/t", None, 1, H2, 10_000) == \
        UPLOAD_UNKNOWN
    assert sorted(await s.expired_pending(10_000, 10)) == [(HERE, "p1"), (HERE, "p2"), (HERE, "q0")]
    assert await s.expired_pending(9_999, 10) == []


@pytest_twisted.ensureDeferred
async def test_thumbnails_references_and_deletion(db: Database) -> None:
    s = MediaStore(db)
    await s.insert_media(row("m1", sha=H1))
    await s.insert_media(row("m2", sha=H1))  # the same bytes
    t = ThumbnailRow(32, 32, "crop", "image/png", 7, H2)
    assert await s.add_thumbnail(HERE, "m1", t, 1)
    assert not await s.add_thumbnail(HERE, "m1", t, 2)  # already there
    assert not await s.add_thumbnail(HERE, "gone", t, 2)  # no such media
    assert await s.add_thumbnail(HERE, "m2", ThumbnailRow(96, 96, "crop", "image/png", 9, H3), 1)
    assert await s.get_thumbnail(HERE, "m1", 32, 32, "crop") == t
    assert await s.get_thumbnail(HERE, "m1", 32, 32, "scale") is None

    deleted, hashes = await s.delete_media([(HERE, "m1"), (HERE, "missing")])
    assert deleted == [(HERE, "m1")] and hashes == {H1, H2}
    assert await s.get_thumbnail(HERE, "m1", 32, 32, "crop") is None
    assert await s.is_referenced(H1)  # m2 still has it
    assert not await s.is_referenced(H2)
    assert await s.is_referenced(H3)  # m2's thumbnail
    deleted, hashes = await s.delete_media([(HERE, "m2")])
    assert hashes == {H1, H3}
    assert not await s.is_referenced(H1) and not await s.is_referenced(H3)


@pytest_twisted.ensureDeferred
async def test_user_listing_quota_and_retention_queries(db: Database) -> None:
    s = MediaStore(db)
    await s.insert_media(row("a1", created=100, length=10, name="zeta", accessed=100))
    await s.insert_media(row("a2", created=200, length=30, name="alpha", accessed=900))
    await s.insert_media(row("a3", created=300, length=20, name="mid", accessed=300))
    await s.create_pending(row("a4", sha=None, created=400, expires=10**12), 400, 10)
    await s.insert_media(row("b1", "@b:test.local", created=150, length=99))
    await s.insert_media(row("r1", None, created=100, origin="remote.example", accessed=100))

    rows, total = await s.user_media("@a:test.local", "created_ts", True, 10, 0)
    assert [r.media_id for r in rows] == ["a1", "a2", "a3", "a4"] and total == 4
    rows, _ = await s.user_media("@a:test.local", "media_length", False, 2, 0)
    assert [r.media_id for r in rows] == ["a2", "a3"]
    rows, _ = await s.user_media("@a:test.local", "upload_name", True, 10, 1)
    assert [r.media_id for r in rows] == ["a3", "a1", "a4"]  # names: alpha, mid, zeta, none
    assert sorted(await s.user_media_keys("@a:test.local")) == [(HERE, f"a{i}") for i in range(1, 5)]

    assert await s.uploaded_bytes_since("@a:test.local", 0) == 60
    assert await s.uploaded_bytes_since("@a:test.local", 150) == 50
    assert await s.uploaded_bytes_since("@nobody:test.local", 0) == 0

    # Unread since 500: local a1 and a3 and b1 (a2 was read at 900; a4 has no content yet).
    assert sorted(await s.unused_since(HERE, True, 500, 10)) == \
        [(HERE, "a1"), (HERE, "a3"), (HERE, "b1")]
    assert await s.unused_since(HERE, False, 500, 10) == [("remote.example", "r1")]
    await s.set_quarantined(HERE, "a1", "@admin:test.local")
    assert (HERE, "a1") not in await s.unused_since(HERE, True, 500, 10)
    assert len(await s.unused_since(HERE, True, 500, 1)) == 1
