"""The content repository over HTTP on both engines: uploads (direct and asynchronous),
authenticated and legacy downloads, thumbnails, safe-serving headers, limits and quotas,
retention, URL previews, erasure and the admin API."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
import requests
from PIL import Image

from tests.harness import Client, ServerProcess
from tests.spec_validation import validate_error, validate_response

PW = "correct horse battery"
AUTHED = "/_matrix/client/v1/media"


# --- helpers ------------------------------------------------------------------------------------

def media(c: Client, method: str, path: str, **kw: Any) -> requests.Response:
    """A request whose response is checked against the spec, binary bodies included (the
    harness validates only JSON under /_matrix/client/)."""
    r = c.request(method, path, validate=False, **kw)
    if r.status_code == 204 or method == "HEAD":
        return r
    is_json = r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json() if is_json else r.content
    if r.status_code < 400:
        validate_response(method, path, r.status_code, body)
        return r
    try:
        validate_response(method, path, r.status_code, body)
    except AssertionError as e:
        if not any(m in str(e) for m in ("is not documented", "no path in the",
                                         "method not documented")):
            raise
        validate_error(r.status_code, body)
    return r


def upload(c: Client, data: bytes, content_type: str | None = "application/octet-stream",
           filename: str | None = None) -> str:
    """Upload and return "server/mediaId"."""
    headers = {"Content-Type": content_type} if content_type else {}
    params = {"filename": filename} if filename is not None else None
    r = media(c, "POST", "/_matrix/media/v3/upload", data=data, headers=headers, params=params)
    assert r.status_code == 200, r.text
    uri = r.json()["content_uri"]
    assert uri.startswith("mxc://test.local/")
    return uri[len("mxc://"):]


def download(c: Client, mxc: str, filename: str | None = None, **kw: Any) -> requests.Response:
    path = f"{AUTHED}/download/{mxc}" + (f"/{filename}" if filename is not None else "")
    return media(c, "GET", path, **kw)


def thumbnail(c: Client, mxc: str, width: Any, height: Any, method: str | None = None,
              legacy: bool = False, **kw: Any) -> requests.Response:
    params: dict[str, Any] = {"width": width, "height": height, **kw.pop("params", {})}
    if method:
        params["method"] = method
    base = "/_matrix/media/v3" if legacy else AUTHED
    return media(c, "GET", f"{base}/thumbnail/{mxc}", params=params, **kw)


def err(r: requests.Response) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")


def png(width: int, height: int, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(buf, "JPEG")
    return buf.getvalue()


def image_of(r: requests.Response) -> Image.Image:
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))


def content_file(srv: ServerProcess, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    return os.path.join(srv.workdir, "media_store", "content", h[:2], h[2:4], h)


def stored_files(srv: ServerProcess) -> int:
    root = os.path.join(srv.workdir, "media_store", "content")
    return sum(len(files) for _, _, files in os.walk(root))


def wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


# --- upload and download -----------------------------------------------------------------------

def test_upload_download_and_serving_headers(server: ServerProcess) -> None:
    alice, bob = server.users(2)
    mxc = upload(alice, b"hello media", "text/plain", "notes.txt")
    r = download(bob, mxc)  # any user may read media by its id
    assert r.status_code == 200 and r.content == b"hello media"
    assert r.headers["Content-Type"] == "text/plain"
    assert r.headers["Content-Disposition"] == 'inline; filename="notes.txt"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp and "script-src 'none'" in csp
    assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert r.headers["Content-Length"] == str(len(b"hello media"))

    # The filename in the path replaces the uploaded one; non-ASCII names use RFC 8187.
    r = download(bob, mxc, "other name.txt")
    assert r.headers["Content-Disposition"] == 'inline; filename="other name.txt"'
    r = download(bob, mxc, "r%C3%A9sum%C3%A9.txt")
    assert r.headers["Content-Disposition"] == "inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt"

    # HEAD: the headers without the body.
    r = bob.request("HEAD", f"{AUTHED}/download/{mxc}", validate=False)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == str(len(b"hello media"))

    # No token: the authenticated endpoints refuse.
    assert err(download(bob, mxc, token=None)) == (401, "M_MISSING_TOKEN")
    assert err(thumbnail(bob, mxc, 32, 32, token=None)) == (401, "M_MISSING_TOKEN")


@pytest.mark.parametrize("content_type,disposition", [
    ("text/html", "attachment"), ("image/svg+xml", "attachment"),
    ("application/javascript", "attachment"), ("text/xml", "attachment"),
    ("application/pdf", "attachment"), ("image/png", "inline"), ("video/mp4", "inline"),
    ("text/plain; charset=utf-8", "inline"),
])
def test_active_content_is_served_as_attachment(server: ServerProcess, content_type: str,
                                                disposition: str) -> None:
    c = server.users(1)[0]
    mxc = upload(c, b"<script>alert(1)</script>", content_type, "x")
    r = download(c, mxc)
    assert r.headers["Content-Type"] == content_type  # the type given at upload
    assert r.headers["Content-Disposition"] == f'{disposition}; filename="x"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"].startswith("sandbox;")


def test_upload_without_type_or_name(server: ServerProcess) -> None:
    c = server.users(1)[0]
    mxc = upload(c, b"\x00\x01binary", None)
    r = download(c, mxc)
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"] == "attachment"  # no filename was given
    # A malformed type is not echoed back.
    mxc = upload(c, b"x", "not a type")
    assert download(c, mxc).headers["Content-Type"] == "application/octet-stream"
    # Empty uploads are content too.
    mxc = upload(c, b"", "text/plain")
    r = download(c, mxc)
    assert (r.status_code, r.content) == (200, b"")


def test_media_config(server: ServerProcess) -> None:
    c = server.users(1)[0]
    for path in (f"{AUTHED}/config", "/_matrix/media/v3/config"):
        r = media(c, "GET", path)
        assert r.status_code == 200 and r.json() == {"m.upload.size": 50 * 1024 * 1024}
    assert err(media(c, "GET", f"{AUTHED}/config", token=None)) == (401, "M_MISSING_TOKEN")
    assert err(media(c, "POST", "/_matrix/media/v3/upload", data=b"x", token=None)) == \
        (401, "M_MISSING_TOKEN")


def test_bad_and_unknown_ids(server: ServerProcess) -> None:
    c = server.users(1)[0]
    for path in (f"{AUTHED}/download/test.local/bad!id", f"{AUTHED}/download/bad_server!/abc",
                 "/_matrix/media/v3/download/test.local/bad!id",
                 f"{AUTHED}/download/test.local/{'a' * 300}"):
        assert err(media(c, "GET", path)) == (400, "M_INVALID_PARAM"), path
    assert err(thumbnail(c, "test.local/bad.id", 32, 32)) == (400, "M_INVALID_PARAM")
    assert err(download(c, "test.local/unknownMediaId")) == (404, "M_NOT_FOUND")
    assert err(thumbnail(c, "test.local/unknownMediaId", 32, 32)) == (404, "M_NOT_FOUND")
    # Another server's media, on a server that cannot be reached (loopback is blacklisted as a
    # federation destination here): 502, as Synapse answers. The legacy endpoints with
    # allow_remote=false only look in the cache.
    assert err(download(c, "127.0.0.1:1/abcdef")) == (502, "M_UNKNOWN")
    assert err(thumbnail(c, "127.0.0.1:1/abcdef", 32, 32)) == (502, "M_UNKNOWN")
    r = media(c, "GET", "/_matrix/media/v3/download/127.0.0.1:1/abcdef?allow_remote=false")
    assert err(r) == (404, "M_NOT_FOUND")
    r = media(c, "PUT", "/_matrix/media/v3/upload/test.local/unknownMediaId", data=b"x")
    assert err(r) == (404, "M_NOT_FOUND")
    r = media(c, "PUT", "/_matrix/media/v3/upload/other.example/abcdef", data=b"x")
    assert err(r) == (404, "M_NOT_FOUND")
    r = media(c, "PUT", "/_matrix/media/v3/upload/test.local/bad!id", data=b"x")
    assert err(r) == (400, "M_INVALID_PARAM")


def test_same_bytes_share_one_file_until_the_last_reference_goes(server: ServerProcess) -> None:
    alice, bob = server.users(2)
    admin = server.admin()
    data = b"shared bytes " + uuid.uuid4().bytes
    first = upload(alice, data, "text/plain")
    second = upload(bob, data, "application/octet-stream", "copy.bin")
    assert first != second
    path = content_file(server, data)
    assert os.path.isfile(path)
    with open(path, "rb") as f:
        assert f.read() == data
    # Each id keeps its own type and name.
    assert download(alice, first).headers["Content-Type"] == "text/plain"
    assert download(alice, second).headers["Content-Disposition"] == 'attachment; filename="copy.bin"'

    r = admin.delete(f"/_synapse/admin/v1/media/{first}")
    assert r.status_code == 200 and r.json() == {"deleted_media": [first.split("/")[1]], "total": 1}
    assert err(download(alice, first)) == (404, "M_NOT_FOUND")
    assert os.path.isfile(path)  # still referenced by the second upload
    assert download(alice, second).content == data
    assert admin.delete(f"/_synapse/admin/v1/media/{second}").status_code == 200
    assert not os.path.exists(path)
    assert err(admin.delete(f"/_synapse/admin/v1/media/{second}")) == (404, "M_NOT_FOUND")
    # No temporary files are left behind.
    assert os.listdir(os.path.join(server.workdir, "media_store", "tmp")) == []


# --- asynchronous upload --------------------------------------------------------------------------

def test_asynchronous_upload(server: ServerProcess) -> None:
    alice, bob = server.users(2)
    before = int(time.time() * 1000)
    r = media(alice, "POST", "/_matrix/media/v1/create")
    assert r.status_code == 200, r.text
    body = r.json()
    mxc = body["content_uri"][len("mxc://"):]
    assert body["unused_expires_at"] >= before + 23 * 3600 * 1000  # the 24h default

    # Not uploaded yet: the download waits timeout_ms, then gives up.
    start = time.monotonic()
    r = download(bob, mxc, params={"timeout_ms": 300})
    assert err(r) == (504, "M_NOT_YET_UPLOADED")
    assert time.monotonic() - start >= 0.25
    assert err(thumbnail(bob, mxc, 32, 32, params={"timeout_ms": 0})) == (504, "M_NOT_YET_UPLOADED")

    # Only the creator may upload.
    r = media(bob, "PUT", f"/_matrix/media/v3/upload/{mxc}", data=b"x")
    assert err(r) == (403, "M_FORBIDDEN")

    # A download waiting for the content gets it as soon as it arrives.
    result: dict[str, Any] = {}

    def wait() -> None:
        t0 = time.monotonic()
        result["r"] = bob.request("GET", f"{AUTHED}/download/{mxc}", params={"timeout_ms": 20000},
                                  validate=False)
        result["elapsed"] = time.monotonic() - t0
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    r = media(alice, "PUT", f"/_matrix/media/v3/upload/{mxc}", data=b"late content",
              headers={"Content-Type": "text/plain"}, params={"filename": "late.txt"})
    assert r.status_code == 200 and r.json() == {}
    waiter.join(30)
    assert result["r"].status_code == 200 and result["r"].content == b"late content"
    assert result["elapsed"] < 10

    r = download(bob, mxc)
    assert r.content == b"late content"
    assert r.headers["Content-Type"] == "text/plain"
    assert r.headers["Content-Disposition"] == 'inline; filename="late.txt"'
    r = media(alice, "PUT", f"/_matrix/media/v3/upload/{mxc}", data=b"again")
    assert err(r) == (409, "M_CANNOT_OVERWRITE_MEDIA")
    assert download(bob, mxc).content == b"late content"


def test_pending_uploads_are_limited(server: ServerProcess) -> None:
    c = server.users(1)[0]
    ids = []
    for _ in range(5):  # max_pending_media_uploads defaults to 5
        r = media(c, "POST", "/_matrix/media/v1/create")
        assert r.status_code == 200
        ids.append(r.json()["content_uri"][len("mxc://"):])
    r = media(c, "POST", "/_matrix/media/v1/create")
    assert err(r) == (429, "M_LIMIT_EXCEEDED")
    assert r.json()["retry_after_ms"] > 0
    # Completing one frees a slot.
    assert media(c, "PUT", f"/_matrix/media/v3/upload/{ids[0]}", data=b"x").status_code == 200
    assert media(c, "POST", "/_matrix/media/v1/create").status_code == 200


# --- thumbnails -------------------------------------------------------------------------------------

def test_thumbnails_crop_and_scale(server: ServerProcess) -> None:
    c = server.users(1)[0]
    mxc = upload(c, png(400, 300), "image/png", "photo.png")
    cases = [
        # (requested w, h, method) -> thumbnail size: the smallest configured size at least as
        # large (32x32 crop, 96x96 crop, 320x240/640x480/800x600 scale), never enlarged.
        ((96, 96, "crop"), (96, 96)),
        ((32, 32, "crop"), (32, 32)),
        ((50, 40, "crop"), (96, 96)),
        ((320, 240, "scale"), (320, 240)),
        ((100, 100, "scale"), (320, 240)),
        ((600, 400, "scale"), (400, 300)),  # 640x480 box: the 400x300 source is not enlarged
        ((5000, 5000, "scale"), (400, 300)),
        ((64, 64, None), (320, 240)),  # method defaults to scale
    ]
    for (w, h, method), expected in cases:
        r = thumbnail(c, mxc, w, h, method)
        img = image_of(r)
        assert img.size == expected, (w, h, method, img.size)
        assert img.format == "PNG"
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Disposition"] == 'inline; filename="thumbnail.png"'
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Security-Policy"].startswith("sandbox;")

    # Crop keeps the centre at the requested aspect ratio; scale keeps the image's.
    tall = upload(c, png(200, 800), "image/png")
    assert image_of(thumbnail(c, tall, 96, 96, "crop")).size == (96, 96)
    assert image_of(thumbnail(c, tall, 320, 240, "scale")).size == (60, 240)

    # JPEG stays JPEG.
    jp = upload(c, jpeg(640, 480), "image/jpeg")
    r = thumbnail(c, jp, 320, 240, "scale")
    assert image_of(r).format == "JPEG" and r.headers["Content-Type"] == "image/jpeg"
    assert image_of(r).size == (320, 240)


def test_thumbnails_are_pregenerated_for_images(server: ServerProcess) -> None:
    c = server.users(1)[0]
    before = _all_files(server)
    mxc = upload(c, png(1000, 800, "green"), "image/png")
    # The original and its five configured thumbnails (all of different sizes) appear without
    # any thumbnail request ...
    wait_for(lambda: len(_all_files(server) - before) >= 6)
    made = _all_files(server) - before
    # ... and are what the thumbnail requests then serve.
    for w, h, m, size in ((32, 32, "crop", (32, 32)), (96, 96, "crop", (96, 96)),
                          (320, 240, "scale", (300, 240)), (640, 480, "scale", (600, 480)),
                          (800, 600, "scale", (750, 600))):
        r = thumbnail(c, mxc, w, h, m)
        assert image_of(r).size == size
        assert content_file(server, r.content) in made


def _all_files(srv: ServerProcess) -> set[str]:
    root = os.path.join(srv.workdir, "media_store", "content")
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def test_thumbnail_errors(server: ServerProcess) -> None:
    c = server.users(1)[0]
    mxc = upload(c, png(50, 50), "image/png")
    assert err(media(c, "GET", f"{AUTHED}/thumbnail/{mxc}", params={"height": 32})) == \
        (400, "M_MISSING_PARAM")
    assert err(media(c, "GET", f"{AUTHED}/thumbnail/{mxc}", params={"width": 32})) == \
        (400, "M_MISSING_PARAM")
    for w, h, m in ((-1, 32, "crop"), (0, 32, "crop"), ("ten", 32, "crop"), (32, 1.5, "crop"),
                    (32, 32, "stretch")):
        assert thumbnail(c, mxc, w, h, m).status_code == 400, (w, h, m)
    # Content that is not an image cannot be thumbnailed.
    text = upload(c, b"just text", "text/plain")
    assert err(thumbnail(c, text, 32, 32)) == (400, "M_UNKNOWN")
    # Claiming to be an image is not enough.
    fake = upload(c, b"not really a png", "image/png")
    assert err(thumbnail(c, fake, 32, 32)) == (400, "M_UNKNOWN")
    assert download(c, fake).content == b"not really a png"


# --- legacy endpoints and authenticated media -----------------------------------------------------

def test_legacy_endpoints_refuse_authenticated_media(server: ServerProcess) -> None:
    c = server.users(1)[0]
    mxc = upload(c, png(64, 64), "image/png", "a.png")
    anon = server.client()
    for path in (f"/_matrix/media/v3/download/{mxc}", f"/_matrix/media/v3/download/{mxc}/a.png",
                 f"/_matrix/media/r0/download/{mxc}"):
        assert err(media(anon, "GET", path)) == (404, "M_NOT_FOUND")
        assert err(media(c, "GET", path)) == (404, "M_NOT_FOUND")  # a token does not help
    assert err(thumbnail(anon, mxc, 32, 32, "crop", legacy=True)) == (404, "M_NOT_FOUND")
    assert download(c, mxc).status_code == 200


def test_legacy_media_from_before_the_switch_stays_available(make_server: Any) -> None:
    srv = make_server({"enable_authenticated_media": False})
    c = srv.users(1)[0]
    old = upload(c, png(64, 48), "image/png", "old.png")
    anon = srv.client()
    r = media(anon, "GET", f"/_matrix/media/v3/download/{old}")
    assert r.status_code == 200 and r.content == png(64, 48)
    assert r.headers["Content-Disposition"] == 'inline; filename="old.png"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"].startswith("sandbox;")
    r = media(anon, "GET", f"/_matrix/media/v3/download/{old}/renamed.png")
    assert r.headers["Content-Disposition"] == 'inline; filename="renamed.png"'
    assert image_of(thumbnail(anon, old, 32, 32, "crop", legacy=True)).size == (32, 32)

    srv.config["enable_authenticated_media"] = True
    srv.restart()
    c.login(c.user_id, PW)
    new = upload(c, png(10, 10), "image/png")
    assert media(anon, "GET", f"/_matrix/media/v3/download/{old}").status_code == 200
    assert err(media(anon, "GET", f"/_matrix/media/v3/download/{new}")) == (404, "M_NOT_FOUND")
    assert err(thumbnail(anon, new, 32, 32, legacy=True)) == (404, "M_NOT_FOUND")
    assert download(c, new).status_code == 200 and download(c, old).status_code == 200


# --- limits -------------------------------------------------------------------------------------

def test_upload_size_limit_and_quota(make_server: Any) -> None:
    srv = make_server({"max_upload_size": "1K", "max_image_pixels": 1000,
                       "media_upload_limits": [{"time_period": "1h", "max_size": 1500}]})
    alice, bob = srv.users(2)
    assert media(alice, "GET", f"{AUTHED}/config").json() == {"m.upload.size": 1024}
    r = media(alice, "POST", "/_matrix/media/v3/upload", data=b"x" * 1025)
    assert err(r) == (413, "M_TOO_LARGE")
    created = media(alice, "POST", "/_matrix/media/v1/create").json()["content_uri"][6:]
    r = media(alice, "PUT", f"/_matrix/media/v3/upload/{created}", data=b"x" * 2000)
    assert err(r) == (413, "M_TOO_LARGE")

    # The quota: 1500 bytes per hour per user.
    first = upload(alice, b"a" * 1024)
    r = media(alice, "POST", "/_matrix/media/v3/upload", data=b"b" * 600)
    assert err(r) == (403, "M_FORBIDDEN")
    r = media(alice, "PUT", f"/_matrix/media/v3/upload/{created}", data=b"b" * 600)
    assert err(r) == (403, "M_FORBIDDEN")
    upload(bob, b"c" * 1024)  # another user has their own quota
    upload(alice, b"d" * 400)  # what fits still goes
    # Deleted media stops counting.
    admin = srv.admin()
    assert admin.delete(f"/_synapse/admin/v1/media/{first}").status_code == 200
    upload(alice, b"e" * 1000)

    # An image with more pixels than max_image_pixels is not thumbnailed.
    big = upload(bob, png(40, 30), "image/png")  # 1200 pixels
    assert err(thumbnail(bob, big, 32, 32, "crop")) == (413, "M_TOO_LARGE")
    assert download(bob, big).status_code == 200


def test_retention_purges_unused_media(make_server: Any) -> None:
    srv = make_server({"media_retention": {"local_media_lifetime": "2s"},
                       "unused_expiration_time": "1s"})
    c = srv.users(1)[0]
    data = b"short-lived " + uuid.uuid4().bytes
    mxc = upload(c, data, "text/plain")
    img = upload(c, png(100, 100), "image/png")
    assert image_of(thumbnail(c, img, 32, 32, "crop")).size == (32, 32)
    pending = media(c, "POST", "/_matrix/media/v1/create").json()["content_uri"][6:]
    assert download(c, mxc).content == data
    path = content_file(srv, data)
    assert os.path.isfile(path)

    wait_for(lambda: not os.path.exists(path), timeout=15)
    assert err(download(c, mxc)) == (404, "M_NOT_FOUND")
    assert err(thumbnail(c, img, 32, 32, "crop")) == (404, "M_NOT_FOUND")
    assert stored_files(srv) == 0  # thumbnails went with their media
    # The created id expired unused (after 1s) and cannot be uploaded to any more.
    r = media(c, "PUT", f"/_matrix/media/v3/upload/{pending}", data=b"x")
    assert err(r) == (404, "M_NOT_FOUND")


# --- admin -----------------------------------------------------------------------------------------

def test_quarantine(server: ServerProcess) -> None:
    c = server.users(1)[0]
    admin = server.admin()
    mxc = upload(c, png(64, 64), "image/png")
    assert thumbnail(c, mxc, 32, 32, "crop").status_code == 200
    path = f"/_synapse/admin/v1/media/quarantine/{mxc}"
    assert err(c.post(path, {})) == (403, "M_FORBIDDEN")
    r = admin.post(path, {})
    assert r.status_code == 200 and r.json() == {}
    assert err(download(c, mxc)) == (404, "M_NOT_FOUND")
    assert err(thumbnail(c, mxc, 32, 32, "crop")) == (404, "M_NOT_FOUND")
    info = admin.get(f"/_synapse/admin/v1/media/{mxc}").json()["media_info"]
    assert info["quarantined_by"] == admin.user_id
    assert admin.post(f"/_synapse/admin/v1/media/unquarantine/{mxc}", {}).status_code == 200
    assert download(c, mxc).status_code == 200
    assert err(admin.post("/_synapse/admin/v1/media/quarantine/test.local/nosuchmedia", {})) == \
        (404, "M_NOT_FOUND")
    assert err(admin.post("/_synapse/admin/v1/media/quarantine/test.local/bad!id", {})) == \
        (400, "M_INVALID_PARAM")


def test_admin_user_media_listing_and_deletion(server: ServerProcess) -> None:
    c = server.users(1)[0]
    admin = server.admin()
    ids = [upload(c, f"file {i}".encode(), "text/plain", f"f{i}.txt").split("/")[1]
           for i in range(3)]
    url = f"/_synapse/admin/v1/users/{c.user_id}/media"
    assert err(c.get(url)) == (403, "M_FORBIDDEN")
    r = admin.get(url)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 3 and "next_token" not in body
    assert [m["media_id"] for m in body["media"]] == ids  # oldest first by default
    first = body["media"][0]
    assert first["media_type"] == "text/plain" and first["media_length"] == 6
    assert first["upload_name"] == "f0.txt" and first["quarantined_by"] is None
    page = admin.get(url, params={"limit": 2, "dir": "b"}).json()
    assert [m["media_id"] for m in page["media"]] == ids[::-1][:2] and page["next_token"] == 2
    page = admin.get(url, params={"from": 2, "limit": 2, "dir": "b"}).json()
    assert [m["media_id"] for m in page["media"]] == [ids[0]] and "next_token" not in page
    assert admin.get(url, params={"order_by": "nonsense"}).status_code == 400
    assert admin.get("/_synapse/admin/v1/users/@x:other.example/media").status_code == 400
    assert err(admin.delete("/_synapse/admin/v1/media/other.example/abc")) == (400, "M_INVALID_PARAM")

    r = admin.delete(url)
    assert r.status_code == 200
    assert sorted(r.json()["deleted_media"]) == sorted(ids) and r.json()["total"] == 3
    assert admin.get(url).json() == {"media": [], "total": 0}
    assert err(download(c, f"test.local/{ids[0]}")) == (404, "M_NOT_FOUND")


def test_erasing_a_user_deletes_their_media(server: ServerProcess) -> None:
    c, other = server.users(2)
    data = b"erase me " + uuid.uuid4().bytes
    mine = upload(c, data, "text/plain")
    theirs = upload(other, b"keep me", "text/plain")
    r = c.post("account/deactivate", {"auth": c.password_auth(PW), "erase": True})
    assert r.status_code == 200, r.text
    assert err(download(other, mine)) == (404, "M_NOT_FOUND")
    assert not os.path.exists(content_file(server, data))
    assert download(other, theirs).status_code == 200

    # Without erase=true, media stays.
    d = server.users(1)[0]
    kept = upload(d, b"not erased", "text/plain")
    assert d.post("account/deactivate", {"auth": d.password_auth(PW)}).status_code == 200
    assert download(other, kept).status_code == 200


# --- URL previews --------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head><meta charset="utf-8">
<title>Fallback title</title>
<meta property="og:title" content="A preview &amp; more">
<meta property="og:description" content="Described here">
<meta property="og:image" content="/picture.png">
</head><body>hello</body></html>"""


class _Site(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, ctype: str, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/page":
            self._send(200, "text/html; charset=utf-8", PAGE)
        elif self.path == "/picture.png":
            self._send(200, "image/png", png(120, 80, "purple"))
        elif self.path == "/plain":
            self._send(200, "text/html", b"<html><head><title>Only a title</title></head></html>")
        elif self.path == "/big":
            self._send(200, "text/html", b"<html>" + b"x" * 200_000)
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 10_000)
        elif self.path == "/slow":
            time.sleep(4)
            self._send(200, "text/html", PAGE)
        elif self.path == "/to-blocked":
            self._send(302, "text/plain", b"", Location=f"http://127.0.0.2:{port}/page")
        elif self.path == "/to-page":
            self._send(302, "text/plain", b"", Location="/page")
        else:
            self._send(404, "text/plain", b"no")


@pytest.fixture
def website() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def preview(c: Client, url: str, legacy: bool = False) -> requests.Response:
    base = "/_matrix/media/v3" if legacy else AUTHED
    return media(c, "GET", f"{base}/preview_url", params={"url": url})


def test_url_previews_are_off_by_default(server: ServerProcess) -> None:
    c = server.users(1)[0]
    assert preview(c, "https://example.com/").status_code == 404


def test_url_preview(make_server: Any, website: str) -> None:
    # Loopback is blacklisted by default; this server allows 127.0.0.1 (the test site) only.
    srv = make_server({"url_preview_enabled": True, "max_spider_size": "100K",
                       "url_preview_timeout": "1s",
                       "url_preview_ip_range_blacklist": ["127.0.0.2/32", "10.0.0.0/8", "::1/128"]})
    c = srv.users(1)[0]
    r = preview(c, f"{website}/page")
    assert r.status_code == 200, r.text
    og = r.json()
    assert og["og:title"] == "A preview & more" and og["og:description"] == "Described here"
    assert og["og:image"].startswith("mxc://test.local/")
    assert og["og:image:type"] == "image/png" and og["matrix:image:size"] == len(png(120, 80, "purple"))
    assert (og["og:image:width"], og["og:image:height"]) == (120, 80)
    r = download(c, og["og:image"][len("mxc://"):])
    assert r.content == png(120, 80, "purple")
    assert preview(c, f"{website}/page", legacy=True).json() == og  # cached

    assert preview(c, f"{website}/plain").json() == {"og:title": "Only a title"}
    assert preview(c, f"{website}/to-page").json()["og:title"] == "A preview & more"
    assert preview(c, f"{website}/picture.png").json()["og:image:width"] == 120

    # SSRF: blacklisted literals, names and redirects are refused before connecting.
    port = website.rsplit(":", 1)[1]
    assert err(preview(c, f"http://127.0.0.2:{port}/page")) == (403, "M_FORBIDDEN")
    assert err(preview(c, "http://10.1.2.3/")) == (403, "M_FORBIDDEN")
    assert err(preview(c, f"http://[::1]:{port}/page")) == (403, "M_FORBIDDEN")
    assert err(preview(c, f"{website}/to-blocked")) == (403, "M_FORBIDDEN")
    # Size and time limits.
    assert err(preview(c, f"{website}/big")) == (502, "M_TOO_LARGE")
    assert err(preview(c, f"{website}/big-chunked")) == (502, "M_TOO_LARGE")
    start = time.monotonic()
    assert err(preview(c, f"{website}/slow")) == (504, "M_UNKNOWN")
    assert time.monotonic() - start < 3
    # Bad input.
    assert err(preview(c, "ftp://example.com/")) == (400, "M_INVALID_PARAM")
    assert err(preview(c, "not a url")) == (400, "M_INVALID_PARAM")
    assert err(media(c, "GET", f"{AUTHED}/preview_url")) == (400, "M_MISSING_PARAM")
    assert err(preview(c, f"{website}/missing")) == (502, "M_UNKNOWN")
    assert err(media(c, "GET", f"{AUTHED}/preview_url", params={"url": website}, token=None)) == \
        (401, "M_MISSING_TOKEN")


def test_url_preview_default_blacklist_blocks_loopback(make_server: Any, website: str) -> None:
    srv = make_server({"url_preview_enabled": True})
    c = srv.users(1)[0]
    port = website.rsplit(":", 1)[1]
    assert err(preview(c, f"{website}/page")) == (403, "M_FORBIDDEN")
    assert err(preview(c, f"http://localhost:{port}/page")) == (403, "M_FORBIDDEN")
    assert err(preview(c, f"http://[::ffff:127.0.0.1]:{port}/page")) == (403, "M_FORBIDDEN")
