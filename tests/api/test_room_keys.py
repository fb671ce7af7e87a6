"""Server-side key backups on both engines: versions, keys, version errors, etag/count, the
spec's better-key rule, and session_data kept opaque."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator
from urllib.parse import quote

import pytest_twisted
from twisted.internet import reactor

from storage.database import Database
from storage.engines import create_engine
from tests.harness import Client, ServerProcess

ALGO = "m.megolm_backup.v1.curve25519-aes-sha2"
AUTH = {"public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",
        "signatures": {"@alice:test.local": {"ed25519:DEV": "c2lnbmF0dXJl"}}}
ROOM1 = "!room1:test.local"
ROOM2 = "!room2:test.local"


def session_data(tag: str) -> dict[str, Any]:
    return {"ephemeral": f"eph-{tag}", "ciphertext": f"ct-{tag}", "mac": f"mac-{tag}"}


def key(tag: str, fmi: int = 0, fc: int = 0, verified: bool = False) -> dict[str, Any]:
    return {"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
            "session_data": session_data(tag)}


def kpath(room: str | None = None, session: str | None = None) -> str:
    path = "room_keys/keys"
    if room is not None:
        path += "/" + quote(room, safe="")
        if session is not None:
            path += "/" + quote(session, safe="")
    return path


def create(c: Client, auth: dict[str, Any] = AUTH) -> str:
    r = c.post("room_keys/version", {"algorithm": ALGO, "auth_data": auth})
    assert r.status_code == 200, r.text
    return r.json()["version"]


def err(r: Any) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")


@pytest_twisted.async_yield_fixture
async def server_db(server: ServerProcess) -> AsyncIterator[Database]:
    cfg = server.config["database"]
    database = Database(create_engine(cfg["name"], cfg["args"]), reactor)
    database.start()
    yield database
    database.stop()


# --- versions ---------------------------------------------------------------------------------

def test_version_lifecycle(server: ServerProcess, user: Client) -> None:
    r = user.get("room_keys/version")
    assert err(r) == (404, "M_NOT_FOUND")
    v1 = create(user)
    info = user.get("room_keys/version").json()
    assert info == {"algorithm": ALGO, "auth_data": AUTH, "count": 0, "etag": info["etag"],
                    "version": v1}
    assert user.get(f"room_keys/version/{v1}").json() == info
    v2 = create(user, {"public_key": "other"})
    assert v2 != v1
    assert user.get("room_keys/version").json()["version"] == v2
    assert user.get(f"room_keys/version/{v1}").json() == info  # older versions stay readable
    # Backups are per user.
    other = server.client()
    other.register()
    assert err(other.get("room_keys/version")) == (404, "M_NOT_FOUND")
    assert err(other.get(f"room_keys/version/{v1}")) == (404, "M_NOT_FOUND")
    assert err(other.delete(f"room_keys/version/{v1}")) == (404, "M_NOT_FOUND")
    for unknown in ("99", "0", "abc", "0" + v2):
        assert err(user.get(f"room_keys/version/{unknown}")) == (404, "M_NOT_FOUND"), unknown
    # Delete: keys and version go; deleting again succeeds; the previous version is current again.
    assert user.put(kpath(ROOM1, "s1"), key("a"), params={"version": v2}).status_code == 200
    r = user.delete(f"room_keys/version/{v2}")
    assert (r.status_code, r.json()) == (200, {})
    assert user.delete(f"room_keys/version/{v2}").status_code == 200
    assert err(user.get(f"room_keys/version/{v2}")) == (404, "M_NOT_FOUND")
    assert err(user.get(kpath(), params={"version": v2})) == (404, "M_NOT_FOUND")
    assert user.get("room_keys/version").json()["version"] == v1
    assert err(user.delete("room_keys/version/99")) == (404, "M_NOT_FOUND")
    assert err(user.delete("room_keys/version/abc")) == (404, "M_NOT_FOUND")
    # Version numbers are never handed out twice.
    v3 = create(user)
    assert v3 not in (v1, v2)
    assert user.get("room_keys/version").json()["version"] == v3
    assert user.get(kpath(), params={"version": v3}).json() == {"rooms": {}}
    assert user.delete(f"room_keys/version/{v1}").status_code == 200
    assert user.delete(f"room_keys/version/{v3}").status_code == 200
    assert err(user.get("room_keys/version")) == (404, "M_NOT_FOUND")


def test_update_version(user: Client) -> None:
    v1 = create(user)
    v2 = create(user)
    new_auth = {"public_key": "new-key", "signatures": {}, "extra": [1, {"x": None}]}
    r = user.put(f"room_keys/version/{v2}", {"algorithm": ALGO, "auth_data": new_auth})
    assert (r.status_code, r.json()) == (200, {})
    assert user.get("room_keys/version").json()["auth_data"] == new_auth
    r = user.put(f"room_keys/version/{v2}", {"algorithm": ALGO, "auth_data": AUTH, "version": v2})
    assert r.status_code == 200
    assert user.get(f"room_keys/version/{v2}").json()["auth_data"] == AUTH
    # An older version's auth_data can be updated too.
    assert user.put(f"room_keys/version/{v1}", {"algorithm": ALGO, "auth_data": new_auth}).status_code == 200
    assert user.get(f"room_keys/version/{v1}").json()["auth_data"] == new_auth
    bad = [
        ({"algorithm": "m.other", "auth_data": {"public_key": "x"}}, (400, "M_INVALID_PARAM")),
        ({"algorithm": ALGO, "auth_data": {"public_key": "x"}, "version": v1}, (400, "M_INVALID_PARAM")),
        ({"algorithm": ALGO}, (400, "M_MISSING_PARAM")),
        ({"auth_data": {"public_key": "x"}}, (400, "M_MISSING_PARAM")),
        ({"algorithm": ALGO, "auth_data": "x"}, (400, "M_INVALID_PARAM")),
    ]
    for body, want in bad:
        assert err(user.put(f"room_keys/version/{v2}", body)) == want, body
    assert user.get(f"room_keys/version/{v2}").json()["auth_data"] == AUTH  # nothing changed
    r = user.put("room_keys/version/99", {"algorithm": ALGO, "auth_data": AUTH})
    assert err(r) == (404, "M_NOT_FOUND")


def test_create_version_rejects_bad_bodies(user: Client) -> None:
    for body, want in [
        ({"algorithm": "m.megolm_backup.v2", "auth_data": AUTH}, (400, "M_INVALID_PARAM")),
        ({"auth_data": AUTH}, (400, "M_MISSING_PARAM")),
        ({"algorithm": ALGO}, (400, "M_MISSING_PARAM")),
        ({"algorithm": ALGO, "auth_data": [1]}, (400, "M_INVALID_PARAM")),
        ({"algorithm": 5, "auth_data": AUTH}, (400, "M_INVALID_PARAM")),
    ]:
        assert err(user.post("room_keys/version", body)) == want, body
    assert err(user.post("room_keys/version", data=b"{")) == (400, "M_NOT_JSON")
    assert err(user.get("room_keys/version")) == (404, "M_NOT_FOUND")
    assert user.get("room_keys/version", token=None).status_code == 401


# --- keys -------------------------------------------------------------------------------------

def test_keys_round_trip_at_every_level(user: Client) -> None:
    v = create(user)
    q = {"version": v}
    r = user.put(kpath(ROOM1, "s1"), key("a", 3, 1, True), params=q)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 1
    etags = {r.json()["etag"]}
    r = user.put(kpath(ROOM1), {"sessions": {"s2": key("b"), "s3": key("c", 7)}}, params=q)
    assert r.json()["count"] == 3
    etags.add(r.json()["etag"])
    r = user.put(kpath(), {"rooms": {ROOM2: {"sessions": {"s1": key("d")}},
                                     ROOM1: {"sessions": {"s4": key("e")}}}}, params=q)
    assert r.json()["count"] == 5
    etags.add(r.json()["etag"])
    assert len(etags) == 3  # every change moved the etag
    info = user.get("room_keys/version").json()
    assert (info["count"], info["etag"]) == (5, r.json()["etag"])

    assert user.get(kpath(ROOM1, "s1"), params=q).json() == key("a", 3, 1, True)
    room1 = {"s1": key("a", 3, 1, True), "s2": key("b"), "s3": key("c", 7), "s4": key("e")}
    assert user.get(kpath(ROOM1), params=q).json() == {"sessions": room1}
    assert user.get(kpath(), params=q).json() == {
        "rooms": {ROOM1: {"sessions": room1}, ROOM2: {"sessions": {"s1": key("d")}}}}
    # Unknown keys: 404 for one session, empty maps otherwise.
    assert err(user.get(kpath(ROOM1, "nope"), params=q)) == (404, "M_NOT_FOUND")
    assert err(user.get(kpath(ROOM2, "s2"), params=q)) == (404, "M_NOT_FOUND")
    assert user.get(kpath("!empty:test.local"), params=q).json() == {"sessions": {}}

    # Deleting: one session, a room, everything; each answers the new etag and count.
    last = info["etag"]
    r = user.delete(kpath(ROOM1, "s1"), params=q)
    assert r.status_code == 200 and r.json()["count"] == 4 and r.json()["etag"] != last
    last = r.json()["etag"]
    r = user.delete(kpath(ROOM1, "s1"), params=q)  # already gone: nothing changes
    assert r.json() == {"etag": last, "count": 4}
    r = user.delete(kpath(ROOM1), params=q)
    assert r.json()["count"] == 1 and r.json()["etag"] != last
    assert user.get(kpath(ROOM1), params=q).json() == {"sessions": {}}
    r = user.delete(kpath(), params=q)
    assert r.json()["count"] == 0
    assert user.get(kpath(), params=q).json() == {"rooms": {}}
    assert user.get("room_keys/version").json()["count"] == 0


def test_version_errors_on_keys(server: ServerProcess, user: Client) -> None:
    # No backup at all.
    assert err(user.put(kpath(ROOM1, "s1"), key("a"), params={"version": "1"})) == (404, "M_NOT_FOUND")
    assert err(user.get(kpath(), params={"version": "1"})) == (404, "M_NOT_FOUND")
    assert err(user.delete(kpath(), params={"version": "1"})) == (404, "M_NOT_FOUND")
    old = create(user)
    assert user.put(kpath(ROOM1, "s1"), key("old"), params={"version": old}).status_code == 200
    new = create(user)
    # Writing to anything but the current version: 403, naming the CURRENT version (the
    # spec's way; Synapse names the one asked for).
    for version in (old, "99", "garbage"):
        for path, body in ((kpath(ROOM1, "s2"), key("x")),
                           (kpath(ROOM1), {"sessions": {"s2": key("x")}}),
                           (kpath(), {"rooms": {ROOM1: {"sessions": {"s2": key("x")}}}})):
            r = user.put(path, body, params={"version": version})
            assert err(r) == (403, "M_WRONG_ROOM_KEYS_VERSION"), (version, path)
            assert r.json()["current_version"] == new
    # The old version is still readable, and unchanged.
    assert user.get(kpath(), params={"version": old}).json() == {
        "rooms": {ROOM1: {"sessions": {"s1": key("old")}}}}
    assert user.get(kpath(), params={"version": new}).json() == {"rooms": {}}
    # Unknown versions are 404 for reads and deletes.
    for version in ("99", "garbage"):
        assert err(user.get(kpath(ROOM1, "s1"), params={"version": version})) == (404, "M_NOT_FOUND")
        assert err(user.get(kpath(ROOM1), params={"version": version})) == (404, "M_NOT_FOUND")
        assert err(user.delete(kpath(ROOM1), params={"version": version})) == (404, "M_NOT_FOUND")
    # ?version= is required everywhere.
    for method in ("GET", "PUT", "DELETE"):
        for path in (kpath(), kpath(ROOM1), kpath(ROOM1, "s1")):
            r = user.request(method, path, {} if method == "PUT" else None)
            assert err(r) == (400, "M_MISSING_PARAM"), (method, path)
    # Another user's version numbers mean nothing for this user.
    other = server.client()
    other.register()
    r = other.put(kpath(ROOM1, "s1"), key("z"), params={"version": new})
    assert err(r) == (404, "M_NOT_FOUND")
    assert err(other.get(kpath(), params={"version": new})) == (404, "M_NOT_FOUND")


def test_better_key_rule_decides_what_stays(user: Client) -> None:
    v = create(user)
    q = {"version": v}
    path = kpath(ROOM1, "s")

    def put(k: dict[str, Any]) -> dict[str, Any]:
        r = user.put(path, k, params=q)
        assert r.status_code == 200, r.text
        assert r.json()["count"] == 1
        return r.json()

    def stored() -> dict[str, Any]:
        return user.get(path, params=q).json()

    etag = put(key("first", fmi=5, fc=2))["etag"]
    steps = [
        (key("worse index", fmi=6, fc=0), "first"),
        (key("same index, more forwards", fmi=5, fc=3), "first"),
        (key("identical metadata", fmi=5, fc=2), "first"),
        (key("same index, fewer forwards", fmi=5, fc=1), "same index, fewer forwards"),
        # A lower index wins even with more forwards (Synapse would keep the stored one).
        (key("lower index", fmi=2, fc=9), "lower index"),
        # A verified key beats an unverified one even with a worse index ...
        (key("verified", fmi=10, fc=9, verified=True), "verified"),
        # ... and an unverified one never replaces it (Synapse would take the lower index).
        (key("unverified, index 0", fmi=0, fc=0), "verified"),
        (key("verified, lower index", fmi=4, fc=9, verified=True), "verified, lower index"),
        (key("verified, fewer forwards", fmi=4, fc=0, verified=True), "verified, fewer forwards"),
        (key("verified, worse", fmi=4, fc=1, verified=True), "verified, fewer forwards"),
    ]
    for upload, winner in steps:
        out = put(upload)
        kept = stored()
        assert kept["session_data"] == session_data(winner), upload["session_data"]
        replaced = winner == upload["session_data"]["ephemeral"][4:]
        assert (out["etag"] != etag) == replaced, upload["session_data"]
        etag = out["etag"]
    assert stored() == key("verified, fewer forwards", fmi=4, fc=0, verified=True)
    # The rule applies per session inside one batch too.
    r = user.put(kpath(), {"rooms": {ROOM1: {"sessions": {
        "s": key("batch worse", fmi=4, fc=1, verified=True), "t": key("new")}}}}, params=q)
    assert r.json()["count"] == 2
    assert stored()["session_data"] == session_data("verified, fewer forwards")


def test_bad_key_bodies_store_nothing(user: Client) -> None:
    v = create(user)
    q = {"version": v}
    good = key("ok")
    bad_keys = [
        {k: val for k, val in good.items() if k != "first_message_index"},
        {k: val for k, val in good.items() if k != "is_verified"},
        {k: val for k, val in good.items() if k != "session_data"},
        {**good, "first_message_index": -1},
        {**good, "forwarded_count": 1.5},
        {**good, "forwarded_count": 2 ** 60},
        {**good, "is_verified": "yes"},
        {**good, "session_data": "ciphertext"},
        [good],
    ]
    for bad in bad_keys:
        r = user.put(kpath(ROOM1, "s1"), bad, params=q)
        assert r.status_code == 400 and r.json()["errcode"] in (
            "M_BAD_JSON", "M_MISSING_PARAM", "M_INVALID_PARAM"), bad
        # One bad key spoils the whole batch.
        r = user.put(kpath(), {"rooms": {ROOM1: {"sessions": {"s0": good, "s1": bad}}}}, params=q)
        assert r.status_code == 400, bad
    for body in ({}, {"rooms": []}, {"rooms": {ROOM1: []}}, {"rooms": {ROOM1: {}}},
                 {"rooms": {"not-a-room": {"sessions": {}}}},
                 {"rooms": {ROOM1: {"sessions": {"": good}}}}):
        assert user.put(kpath(), body, params=q).status_code == 400, body
    assert user.put(kpath(ROOM1), {"sessions": []}, params=q).status_code == 400
    assert err(user.put(kpath("not-a-room", "s1"), good, params=q)) == (400, "M_INVALID_PARAM")
    assert err(user.put(kpath(ROOM1, "s" * 256), good, params=q)) == (400, "M_INVALID_PARAM")
    assert err(user.put(kpath(ROOM1, "s1"), params=q, data=b"{bad")) == (400, "M_NOT_JSON")
    info = user.get("room_keys/version").json()
    assert (info["count"], user.get(kpath(), params=q).json()) == (0, {"rooms": {}})


@pytest_twisted.ensureDeferred
async def test_session_data_is_stored_byte_for_byte(user: Client, server_db: Database) -> None:
    v = create(user)
    # Whatever the algorithm's fields, the server stores and serves session_data untouched: no
    # required fields, key order kept, non-ASCII kept as UTF-8, numbers and nesting as sent.
    raw_session_data = ('{"mac":"QUJD+/=","ciphertext":"ünïcødé ☃ \\"quoted\\" \\\\ back",'
                        '"ephemeral":"e","extra":[1,-2,3.5,true,null,{"z":{},"a":[]}],'
                        '"big":12345678901234567}')
    body = ('{"first_message_index":1,"forwarded_count":0,"is_verified":false,'
            f'"session_data":{raw_session_data}}}').encode("utf-8")
    r = user.put(kpath(ROOM1, "sess"), data=body, params={"version": v},
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    rows = await server_db.query(
        "SELECT session_data FROM room_key_backup_keys WHERE user_id = ? AND room_id = ?"
        " AND session_id = ?", (user.user_id, ROOM1, "sess"))
    assert [row[0] for row in rows] == [raw_session_data]
    served = user.get(kpath(ROOM1, "sess"), params={"version": v})
    assert served.json()["session_data"] == json.loads(raw_session_data)
    assert raw_session_data.encode("utf-8") in served.content
    # Deleting the version deletes its keys from the database, not just from view.
    assert user.delete(f"room_keys/version/{v}").status_code == 200
    assert await server_db.query("SELECT 1 FROM room_key_backup_keys WHERE user_id = ?",
                                 (user.user_id,)) == []
