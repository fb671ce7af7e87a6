"""Remote media with a real Synapse, both ways, over TLS on loopback.

Synapse -> Hearth: a Hearth user downloads a Synapse upload through Hearth's
/_matrix/client/v1/media/download/{synapse}/{id}; Hearth fetches it once over Synapse's
authenticated federation endpoint (multipart/mixed) and serves later requests from its cache.
Hearth -> Synapse: a Synapse user downloads a Hearth upload through Synapse, which calls our
/_matrix/federation/v1/media/download/{id} and parses our multipart answer.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from typing import Iterator

import pytest
from PIL import Image

from synapse_compat_tests.federation_fixture import (
    FederationCA, SynapseServer, hearth_federation_server)
from synapse_compat_tests.test_federation_synapse import wait_for
from tests.harness import Client, ServerProcess

pytestmark = pytest.mark.compat

V1 = "/_matrix/client/v1/media"


@pytest.fixture(scope="module")
def hearth_fed(federation_ca: FederationCA) -> Iterator[ServerProcess]:
    srv = hearth_federation_server(federation_ca, "sqlite")
    try:
        srv.start()
        yield srv
        tbs = srv.tracebacks()
        if tbs:
            pytest.fail(f"Hearth log has {len(tbs)} traceback(s):\n" + "\n---\n".join(tbs),
                        pytrace=False)
    finally:
        srv.cleanup()


def png(w: int, h: int, colour: str = "teal") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


def upload(c: Client, data: bytes, content_type: str, filename: str) -> tuple[str, str]:
    r = c.post("/_matrix/media/v3/upload", data=data, headers={"Content-Type": content_type},
               params={"filename": filename}, validate=False)
    assert r.status_code == 200, r.text
    server, media_id = r.json()["content_uri"][len("mxc://"):].split("/", 1)
    return server, media_id


def synapse_log_count(synapse: SynapseServer, needle: str) -> int:
    if not os.path.exists(synapse.log_path):
        return 0
    with open(synapse.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace").count(needle)


def test_hearth_user_downloads_synapse_media_and_caches_it(
        hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    s = synapse.register(validate=False)
    h = hearth_fed.users(1)[0]
    data = b"synapse file " + uuid.uuid4().hex.encode() + bytes(range(256)) * 40
    server, media_id = upload(s, data, "application/x-test-data", "data.bin")
    assert server == synapse.server_name

    r = h.get(f"{V1}/download/{server}/{media_id}", validate=False)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["Content-Type"] == "application/x-test-data"
    assert "data.bin" in r.headers.get("Content-Disposition", "")
    assert r.headers["Content-Disposition"].startswith("attachment")

    # Synapse served it once through its authenticated federation endpoint.
    fed_path = f"/_matrix/federation/v1/media/download/{media_id}"
    wait_for("Synapse's access log line", lambda: synapse_log_count(synapse, fed_path) >= 1,
             timeout=15)
    # Again, with another file name: from Hearth's cache, Synapse is not asked.
    r = h.get(f"{V1}/download/{server}/{media_id}/other.bin", validate=False)
    assert r.status_code == 200 and r.content == data
    assert "other.bin" in r.headers["Content-Disposition"]
    assert len(re.findall(rf"cached \d+ bytes of mxc://{re.escape(server)}/{media_id}",
                          hearth_fed.log())) == 1
    time.sleep(6)  # Synapse flushes its buffered log every 5 s
    assert synapse_log_count(synapse, fed_path) == 1

    # Unknown media on Synapse is 404 M_NOT_FOUND; a bad id never leaves Hearth.
    r = h.get(f"{V1}/download/{server}/NoSuchMedia{uuid.uuid4().hex}", validate=False)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND", r.text
    r = h.get(f"{V1}/download/{server}/bad%21id", validate=False)
    assert r.status_code == 400, r.text
    # A server that does not exist: 502, quickly.
    r = h.get(f"{V1}/download/127.0.0.1:1/whatever", validate=False)
    assert r.status_code in (502, 504) and r.json()["errcode"] == "M_UNKNOWN", r.text


def test_hearth_thumbnails_synapse_media(hearth_fed: ServerProcess,
                                         synapse: SynapseServer) -> None:
    s = synapse.register(validate=False)
    h = hearth_fed.users(1)[0]
    server, media_id = upload(s, png(400, 300, "navy"), "image/png", "big.png")
    r = h.get(f"{V1}/thumbnail/{server}/{media_id}", params={"width": 40, "height": 40,
                                                              "method": "crop"}, validate=False)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] in ("image/png", "image/jpeg")
    assert Image.open(io.BytesIO(r.content)).size == (96, 96)
    # The original came along and is cached too.
    r = h.get(f"{V1}/download/{server}/{media_id}", validate=False)
    assert r.status_code == 200 and r.content == png(400, 300, "navy")


def test_synapse_user_downloads_hearth_media(hearth_fed: ServerProcess,
                                             synapse: SynapseServer) -> None:
    s = synapse.register(validate=False)
    h = hearth_fed.users(1)[0]
    data = "a text file from Hearth, é\n".encode() + uuid.uuid4().hex.encode()
    server, media_id = upload(h, data, "text/plain; charset=utf-8", "notes.txt")
    assert server == hearth_fed.server_name

    r = s.get(f"{V1}/download/{server}/{media_id}", validate=False)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "notes.txt" in r.headers.get("Content-Disposition", "")
    # Synapse used our authenticated federation endpoint (multipart/mixed), not the legacy one.
    log = hearth_fed.log()
    assert re.search(rf'server:{re.escape(synapse.server_name)} "GET '
                     rf'/_matrix/federation/v1/media/download/{media_id}[^"]*" 200 ', log), \
        [line for line in log.splitlines() if media_id in line]

    # An image: Synapse thumbnails it (from our thumbnail endpoint or from the original).
    _, image_id = upload(h, png(320, 240, "olive"), "image/png", "pic.png")
    r = s.get(f"{V1}/thumbnail/{server}/{image_id}", params={"width": 32, "height": 32,
                                                              "method": "scale"}, validate=False)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] in ("image/png", "image/jpeg", "image/webp")
    w, h_ = Image.open(io.BytesIO(r.content)).size
    assert w <= 320 and h_ <= 240 and abs(w / h_ - 4 / 3) < 0.1

    # Media Hearth does not have is 404 on Synapse too.
    r = s.get(f"{V1}/download/{server}/Missing{uuid.uuid4().hex}", validate=False)
    assert r.status_code == 404, r.text
