"""/keys/* on both engines: upload, query, claim, changes, cross-signing and signatures."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.e2ee.test_keys_helpers import CrossSigning, Device
from tests.harness import Client, ServerProcess

PW = "correct horse battery"


def device_of(c: Client) -> Device:
    assert c.user_id and c.device_id
    return Device(c.user_id, c.device_id)


def upload(c: Client, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = c.post("keys/upload", body)
    assert r.status_code == status, r.text
    return r.json()


def query(c: Client, users: dict[str, list[str]]) -> dict[str, Any]:
    r = c.post("keys/query", {"device_keys": users})
    assert r.status_code == 200, r.text
    return r.json()


def claim(c: Client, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
    r = c.post("keys/claim", {"one_time_keys": wanted})
    assert r.status_code == 200, r.text
    return r.json()


def next_batch(c: Client) -> str:
    r = c.get("sync", params={"timeout": 0})
    assert r.status_code == 200, r.text
    return r.json()["next_batch"]


def changes(c: Client, since: str) -> tuple[list[str], list[str]]:
    r = c.get("keys/changes", params={"from": since, "to": next_batch(c)})
    assert r.status_code == 200, r.text
    return r.json()["changed"], r.json()["left"]


def changes_eventually(c: Client, since: str, expected: tuple[list[str], list[str]]) -> None:
    """Joins and leaves reach the device_lists stream just after their event is committed."""
    deadline = time.monotonic() + 10
    while (got := changes(c, since)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got == expected


def shared_room(a: Client, *others: Client) -> str:
    room = a.post("createRoom", {"invite": [o.user_id for o in others]}).json()["room_id"]
    for o in others:
        assert o.post(f"rooms/{room}/join", {}).status_code == 200
    return room


# --- upload / query / claim ---------------------------------------------------------------------

def test_upload_query_claim_round_trip(server: ServerProcess) -> None:
    a, b = server.users(2)
    assert a.put(f"devices/{a.device_id}", {"display_name": "Alice's phone"}).status_code == 200
    dev = device_of(a)
    keys = dev.device_keys()
    otks = dev.one_time_keys(3)
    fallback = dev.fallback_key()
    out = upload(a, {"device_keys": keys, "one_time_keys": otks, "fallback_keys": fallback})
    assert out["one_time_key_counts"] == {"signed_curve25519": 3}

    got = query(b, {a.user_id: []})
    stored = got["device_keys"][a.user_id][a.device_id]
    assert stored.pop("unsigned") == {"device_display_name": "Alice's phone"}
    assert stored == keys  # exactly as uploaded, signatures intact
    assert query(b, {a.user_id: ["NOPE"]})["device_keys"] == {a.user_id: {}}

    claimed = [claim(b, {a.user_id: {a.device_id: "signed_curve25519"}})["one_time_keys"]
               for _ in range(5)]
    names = [next(iter(c[a.user_id][a.device_id])) for c in claimed]
    assert set(names[:3]) == set(otks)
    assert names[3] == names[4] == next(iter(fallback))
    assert claimed[3][a.user_id][a.device_id] == fallback
    # Nothing left to count; an empty upload reports that.
    assert upload(a, {})["one_time_key_counts"] == {"signed_curve25519": 0}
    # A device or user without keys is simply absent.
    assert claim(b, {a.user_id: {"NOPE": "signed_curve25519"}, b.user_id: {b.device_id: "signed_curve25519"}}
                 )["one_time_keys"] == {}


def test_concurrent_claims_over_http(server: ServerProcess) -> None:
    (a,) = server.users(1)
    dev = device_of(a)
    otks = dev.one_time_keys(5)
    fallback = dev.fallback_key()
    upload(a, {"device_keys": dev.device_keys(), "one_time_keys": otks, "fallback_keys": fallback})
    claimers = server.users(4)

    def one(i: int) -> dict[str, Any]:
        c = Client(server.base_url, claimers[i % 4].token)
        return claim(c, {a.user_id: {a.device_id: "signed_curve25519"}})["one_time_keys"][a.user_id][a.device_id]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    names = [next(iter(r)) for r in results]
    one_time = [n for n in names if n in otks]
    assert sorted(one_time) == sorted(otks)  # each key exactly once
    assert names.count(next(iter(fallback))) == 15


def test_upload_rejects_bad_keys_and_changes_nothing(server: ServerProcess) -> None:
    (a,) = server.users(1)
    dev = device_of(a)
    keys = dev.device_keys()

    wrong_user = copy.deepcopy(keys)
    wrong_user["user_id"] = "@someone:test.local"
    assert upload(a, {"device_keys": wrong_user}, 400)["errcode"] == "M_INVALID_PARAM"
    wrong_device = Device(a.user_id, "OTHERDEVICE").device_keys()
    assert upload(a, {"device_keys": wrong_device}, 400)["errcode"] == "M_INVALID_PARAM"
    tampered = copy.deepcopy(keys)
    tampered["algorithms"] = ["m.megolm.v1.aes-sha2"]
    assert upload(a, {"device_keys": tampered}, 400)["errcode"] == "M_INVALID_SIGNATURE"
    # Signed one-time keys need the device keys first.
    assert upload(a, {"one_time_keys": dev.one_time_keys(1)}, 400)["errcode"] == "M_INVALID_PARAM"
    assert query(a, {a.user_id: []})["device_keys"] == {a.user_id: {}}

    upload(a, {"device_keys": keys, "one_time_keys": dev.one_time_keys(2)})
    upload(a, {"device_keys": keys})  # the same keys again are fine
    impostor = Device(a.user_id, a.device_id)
    assert upload(a, {"device_keys": impostor.device_keys()}, 400)["errcode"] == "M_INVALID_PARAM"

    # A batch with one badly signed key stores none of it.
    good = dev.one_time_keys(2)
    bad = impostor.one_time_keys(1)
    assert upload(a, {"one_time_keys": {**good, **bad}}, 400)["errcode"] == "M_INVALID_SIGNATURE"
    assert upload(a, {})["one_time_key_counts"] == {"signed_curve25519": 2}
    # A key id uploaded again with other content.
    name = next(iter(good))
    upload(a, {"one_time_keys": good})
    clash = {name: dev.sign({"key": impostor.account.identity_keys["curve25519"]})}
    assert upload(a, {"one_time_keys": clash}, 400)["errcode"] == "M_INVALID_PARAM"
    two_fallbacks = {**dev.fallback_key(), "signed_curve25519:zzz": next(iter(dev.fallback_key().values()))}
    assert upload(a, {"fallback_keys": two_fallbacks}, 400)["errcode"] == "M_INVALID_PARAM"
    assert upload(a, {"one_time_keys": {"nocolon": {}}}, 400)["errcode"] == "M_INVALID_PARAM"
    assert upload(a, {"device_keys": "nope"}, 400)["errcode"] == "M_INVALID_PARAM"
    assert upload(a, {})["one_time_key_counts"] == {"signed_curve25519": 4}
    assert query(a, {a.user_id: []})["device_keys"][a.user_id][a.device_id]["keys"] == keys["keys"]


def test_query_and_claim_bad_input_and_remote_users(server: ServerProcess) -> None:
    (a,) = server.users(1)
    assert a.post("keys/query", {}).status_code == 400
    assert a.post("keys/query", {"device_keys": {a.user_id: "all"}}).json()["errcode"] == "M_INVALID_PARAM"
    assert a.post("keys/query", {"device_keys": {"not-a-user": []}}).json()["errcode"] == "M_INVALID_PARAM"
    assert a.post("keys/claim", {"one_time_keys": {a.user_id: ["x"]}}).json()["errcode"] == "M_INVALID_PARAM"
    got = query(a, {"@bob:remote.example": [], a.user_id: []})
    assert "remote.example" in got["failures"] and "@bob:remote.example" not in got["device_keys"]
    got = claim(a, {"@bob:remote.example": {"DEV": "signed_curve25519"}})
    assert "remote.example" in got["failures"] and got["one_time_keys"] == {}
    assert a.get("keys/changes", params={"from": "bogus", "to": "s0"}).status_code == 400
    assert a.get("keys/changes", params={"to": "s0"}).status_code == 400


def test_deleted_device_keys_disappear(server: ServerProcess) -> None:
    a, b = server.users(2)
    shared_room(a, b)
    changes_eventually(b, "s0", ([a.user_id], []))  # b's join, once recorded
    phone = Client(server.base_url)
    phone.login(a.user_id, PW)
    dev = device_of(phone)
    upload(phone, {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(2)})
    assert phone.device_id in query(b, {a.user_id: []})["device_keys"][a.user_id]
    since = next_batch(b)
    r = a.delete(f"devices/{phone.device_id}", {"auth": a.password_auth(PW)})
    assert r.status_code == 200, r.text
    assert query(b, {a.user_id: []})["device_keys"][a.user_id] == {}
    assert claim(b, {a.user_id: {phone.device_id: "signed_curve25519"}})["one_time_keys"] == {}
    assert changes(b, since) == ([a.user_id], [])


# --- device-list changes ------------------------------------------------------------------------

def test_keys_changes_for_shared_rooms_joins_and_leaves(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = shared_room(a, b)
    changes_eventually(a, "s0", ([b.user_id], []))  # b's join, once recorded
    since = next_batch(a)
    dev = device_of(b)
    upload(b, {"device_keys": dev.device_keys()})
    lone = device_of(c)
    upload(c, {"device_keys": lone.device_keys()})  # c shares no room with a
    assert changes(a, since) == ([b.user_id], [])
    # One-time keys are not a device-list change.
    mid = next_batch(a)
    upload(b, {"one_time_keys": dev.one_time_keys(1)})
    assert changes(a, mid) == ([], [])
    # c joining makes c "changed" for a; b leaving makes b "left".
    assert a.post(f"rooms/{room}/invite", {"user_id": c.user_id}).status_code == 200
    assert c.post(f"rooms/{room}/join", {}).status_code == 200
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    changes_eventually(a, mid, ([c.user_id], [b.user_id]))
    # a's own new device shows up for a.
    late = next_batch(a)
    own = device_of(a)
    upload(a, {"device_keys": own.device_keys()})
    assert changes(a, late) == ([a.user_id], [])
    assert changes(c, late) == ([a.user_id], [])


# --- cross-signing ------------------------------------------------------------------------------

def _device_signing(c: Client, body: dict[str, Any]) -> Any:
    r = c.post("keys/device_signing/upload", body, validate=False)
    if r.status_code != 401:  # the spec documents no UIA 401 here: check the rest
        from tests.harness import _validate
        _validate("POST", "/_matrix/client/v3/keys/device_signing/upload", r)
    return r


def test_cross_signing_upload_and_uia(server: ServerProcess) -> None:
    a, b = server.users(2)
    cs = CrossSigning(a.user_id)
    body = cs.upload_body()
    assert _device_signing(a, body).status_code == 200  # first upload: no UIA
    assert _device_signing(a, body).status_code == 200  # the same keys again: no UIA

    mine = query(a, {a.user_id: []})
    assert mine["master_keys"][a.user_id] == body["master_key"]
    assert mine["self_signing_keys"][a.user_id] == body["self_signing_key"]
    assert mine["user_signing_keys"][a.user_id] == body["user_signing_key"]
    theirs = query(b, {a.user_id: []})
    assert theirs["master_keys"][a.user_id] == body["master_key"]
    assert a.user_id not in theirs.get("user_signing_keys", {})

    new = CrossSigning(a.user_id)
    r = _device_signing(a, new.upload_body())
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    session = r.json()["session"]
    # A new self-signing key alone (signed by the stored master) also needs UIA.
    only_ssk = {"self_signing_key": cs.master.sign(new.self_signing.key_object(a.user_id, "self_signing"), a.user_id)}
    assert _device_signing(a, only_ssk).status_code == 401
    wrong = _device_signing(a, {**new.upload_body(), "auth": a.password_auth("wrong", session)})
    assert wrong.status_code == 401 and wrong.json()["errcode"] == "M_FORBIDDEN"
    assert query(a, {a.user_id: []})["master_keys"][a.user_id] == body["master_key"]
    ok = _device_signing(a, {**new.upload_body(), "auth": a.password_auth(PW, session)})
    assert ok.status_code == 200, ok.text
    assert query(b, {a.user_id: []})["master_keys"][a.user_id] == new.master_key()


def test_cross_signing_upload_validation(server: ServerProcess) -> None:
    (a,) = server.users(1)
    cs = CrossSigning(a.user_id)
    other = CrossSigning(a.user_id)
    r = _device_signing(a, {"self_signing_key": cs.self_signing_key()})
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    badly_signed = {"master_key": cs.master_key(), "self_signing_key": other.self_signing_key()}
    r = _device_signing(a, badly_signed)
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_SIGNATURE"
    wrong_usage = {"master_key": cs.self_signing.key_object(a.user_id, "self_signing")}
    assert _device_signing(a, wrong_usage).json()["errcode"] == "M_INVALID_PARAM"
    foreign = {"master_key": CrossSigning("@x:test.local").master_key()}
    assert _device_signing(a, foreign).json()["errcode"] == "M_INVALID_PARAM"
    # A cross-signing public key may not be one of the user's device ids.
    Client(server.base_url).login(a.user_id, PW, device_id=cs.self_signing.public)
    r = _device_signing(a, cs.upload_body())
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    assert query(a, {a.user_id: []})["master_keys"] == {}
    # An empty upload is a no-op, even once keys exist.
    assert _device_signing(a, {}).status_code == 200
    assert _device_signing(a, CrossSigning(a.user_id).upload_body()).status_code == 200
    assert _device_signing(a, {}).status_code == 200


def test_signature_upload_and_visibility(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    acs, bcs = CrossSigning(a.user_id), CrossSigning(b.user_id)
    adev, bdev = device_of(a), device_of(b)
    upload(a, {"device_keys": adev.device_keys()})
    upload(b, {"device_keys": bdev.device_keys()})
    assert _device_signing(a, acs.upload_body()).status_code == 200
    assert _device_signing(b, bcs.upload_body()).status_code == 200

    stored_keys = query(a, {a.user_id: []})["device_keys"][a.user_id][a.device_id]
    stored_keys.pop("unsigned")
    master_b = query(a, {b.user_id: []})["master_keys"][b.user_id]
    my_master = adev.sign(copy.deepcopy(acs.master_key()))
    forged = CrossSigning(a.user_id).sign_device(stored_keys)  # signed by a key that is not a's
    tampered = acs.sign_device(stored_keys)
    tampered["algorithms"] = []
    r = a.post("keys/signatures/upload", {
        a.user_id: {a.device_id: acs.sign_device(stored_keys), acs.master.public: my_master},
        b.user_id: {bcs.master.public: acs.sign_user(master_b)},
    })
    assert r.status_code == 200, r.text
    assert r.json()["failures"] == {}
    r = a.post("keys/signatures/upload", {
        a.user_id: {"UNKNOWNDEVICE": forged},
        b.user_id: {bdev.device_id: acs.sign_device(stored_keys)},
        c.user_id: {"nokey": acs.sign_user(master_b)},
    })
    failures = r.json()["failures"]
    assert set(failures) == {a.user_id, b.user_id, c.user_id}
    r = a.post("keys/signatures/upload", {a.user_id: {a.device_id: forged}})
    assert r.json()["failures"][a.user_id][a.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    r = a.post("keys/signatures/upload", {a.user_id: {a.device_id: tampered}})
    assert r.json()["failures"][a.user_id][a.device_id]["errcode"] == "M_INVALID_SIGNATURE"

    # a's device carries its self-signing signature for everyone, and nothing forged.
    for viewer in (a, b, c):
        sigs = query(viewer, {a.user_id: []})["device_keys"][a.user_id][a.device_id]["signatures"][a.user_id]
        assert set(sigs) == {adev.key_id, acs.self_signing.key_id}
        master_sigs = query(viewer, {a.user_id: []})["master_keys"][a.user_id]["signatures"][a.user_id]
        assert set(master_sigs) == {adev.key_id}
    # a's user-signing signature on b's master key is for a's eyes only.
    assert acs.user_signing.key_id in query(a, {b.user_id: []})["master_keys"][b.user_id]["signatures"][a.user_id]
    for viewer in (b, c):
        assert a.user_id not in query(viewer, {b.user_id: []})["master_keys"][b.user_id].get("signatures", {})
    # Uploading the same signatures again is not an error.
    r = a.post("keys/signatures/upload", {a.user_id: {a.device_id: acs.sign_device(stored_keys)}})
    assert r.json()["failures"] == {}
