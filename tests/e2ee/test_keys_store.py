"""storage/e2ee_keys.py on both engines: uploads, atomic claims, deletion, the device_lists stream."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from storage.database import Database
from storage.e2ee_keys import ClaimedKey, E2eKeyStore, KeyConflict, Signature
from tests.e2ee.test_keys_helpers import Device

A = "@alice:test.local"


async def _store(db: Database) -> E2eKeyStore:  # noqa: F811
    s = E2eKeyStore(db)
    await s.load()
    return s


def _keys(mapping: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [(n.partition(":")[0], n.partition(":")[2], v) for n, v in mapping.items()]


def _accept(current: Any) -> bool:
    return True


async def _upload(s: E2eKeyStore, dev: Device, otks: dict[str, Any] | None = None,
                  fallback: dict[str, Any] | None = None, with_keys: bool = False
                  ) -> tuple[dict[str, int], int | None]:
    return await s.upload(dev.user_id, dev.device_id, 1, dev.device_keys() if with_keys else None,
                          _accept, _keys(otks or {}), _keys(fallback or {}))


@pytest_twisted.ensureDeferred
async def test_upload_counts_and_conflicting_reupload(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    dev = Device(A, "D1")
    otks = dev.one_time_keys(5)
    counts, pos = await _upload(s, dev, otks, with_keys=True)
    assert counts == {"signed_curve25519": 5}
    assert pos is not None and pos == s.current_position()
    # The same keys again change nothing.
    assert (await _upload(s, dev, otks))[0] == {"signed_curve25519": 5}
    name = next(iter(otks))
    other = Device(A, "D1").one_time_keys(1)
    with pytest.raises(KeyConflict):
        await _upload(s, dev, {name: next(iter(other.values()))})
    assert await s.one_time_key_counts(A, "D1") == {"signed_curve25519": 5}
    stored = await s.get_device_keys(A, "D1")
    assert stored is not None and stored["keys"]["ed25519:D1"] == dev.ed25519


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_hand_each_key_out_once(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    dev = Device(A, "D1")
    otks = dev.one_time_keys(5)
    fallback = dev.fallback_key()
    await _upload(s, dev, otks, fallback, with_keys=True)
    results = await defer.gatherResults([
        defer.ensureDeferred(s.claim([(A, "D1", "signed_curve25519")])) for _ in range(20)])
    claimed: list[ClaimedKey] = [r[(A, "D1", "signed_curve25519")] for r in results]
    one_time = [c for c in claimed if not c.fallback]
    assert sorted(c.name for c in one_time) == sorted(otks)
    assert len({c.name for c in one_time}) == 5
    assert all(c.key == otks[c.name] for c in one_time)
    fallbacks = [c for c in claimed if c.fallback]
    assert len(fallbacks) == 15 and all(c.key == fallback[c.name] for c in fallbacks)
    assert await s.one_time_key_counts(A, "D1") == {}
    assert await s.unused_fallback_key_types(A, "D1") == []


@pytest_twisted.ensureDeferred
async def test_many_concurrent_claimers_over_many_devices(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    devices = [Device(A, f"D{i}") for i in range(3)]
    uploaded: dict[str, dict[str, Any]] = {}
    for dev in devices:
        uploaded[dev.device_id] = dev.one_time_keys(30)
        await _upload(s, dev, uploaded[dev.device_id], with_keys=True)
    wanted = [(A, d.device_id, "signed_curve25519") for d in devices]
    results = await defer.gatherResults([defer.ensureDeferred(s.claim(list(reversed(wanted)) if i % 2 else wanted))
                                         for i in range(40)])
    for dev in devices:
        got = [r[(A, dev.device_id, "signed_curve25519")].name for r in results
               if (A, dev.device_id, "signed_curve25519") in r]
        # No fallback key: every key is handed out exactly once, and 10 claimers get nothing.
        assert len(got) == 30 and set(got) == set(uploaded[dev.device_id])


@pytest_twisted.ensureDeferred
async def test_claims_follow_upload_order(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    dev = Device(A, "D1")
    first = dev.one_time_keys(2)
    await _upload(s, dev, first, with_keys=True)
    second = dev.one_time_keys(2)
    await _upload(s, dev, second)
    names = []
    for _ in range(4):
        names.append((await s.claim([(A, "D1", "signed_curve25519")]))[(A, "D1", "signed_curve25519")].name)
    assert set(names[:2]) == set(first) and set(names[2:]) == set(second)
    assert await s.claim([(A, "D1", "signed_curve25519")]) == {}


@pytest_twisted.ensureDeferred
async def test_fallback_key_replacement_and_used_flag(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    dev = Device(A, "D1")
    fb1 = dev.fallback_key()
    await _upload(s, dev, fallback=fb1, with_keys=True)
    assert await s.unused_fallback_key_types(A, "D1") == ["signed_curve25519"]
    key = (A, "D1", "signed_curve25519")
    assert (await s.claim([key]))[key].name == next(iter(fb1))
    assert await s.unused_fallback_key_types(A, "D1") == []
    # Uploading the same key again does not make it unused; a new one does.
    await _upload(s, dev, fallback=fb1)
    assert await s.unused_fallback_key_types(A, "D1") == []
    fb2 = dev.fallback_key()
    await _upload(s, dev, fallback=fb2)
    assert await s.unused_fallback_key_types(A, "D1") == ["signed_curve25519"]
    claimed = (await s.claim([key]))[key]
    assert claimed.fallback and claimed.key == next(iter(fb2.values()))


@pytest_twisted.ensureDeferred
async def test_deleting_devices_removes_keys_and_signatures(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    d1, d2 = Device(A, "D1"), Device(A, "D2")
    await _upload(s, d1, d1.one_time_keys(2), d1.fallback_key(), with_keys=True)
    await _upload(s, d2, with_keys=True)
    await s.add_signatures([Signature(A, "D1", A, "ed25519:ssk", "sig1"),
                            Signature(A, "masterpub", A, "ed25519:D1", "sig2"),
                            Signature(A, "D2", A, "ed25519:ssk", "sig3")])
    before = s.current_position()
    pos = await s.delete_devices(A, ["D1", "UNKNOWN"])
    assert pos is not None and pos > before
    assert await s.get_device_keys(A, "D1") is None
    assert await s.one_time_key_counts(A, "D1") == {}
    assert await s.unused_fallback_key_types(A, "D1") == []
    assert [x.signature for x in await s.get_signatures([A])] == ["sig3"]
    assert set((await s.query_device_keys([A]))[A]) == {"D2"}
    # A device without keys: nothing to tell anyone.
    assert await s.delete_devices(A, ["NOKEYS"]) is None


@pytest_twisted.ensureDeferred
async def test_cross_signing_keys_replace_and_drop_old_signatures(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    p1 = await s.set_cross_signing_keys(A, {"master": ("ed25519:m1", {"k": 1}),
                                            "self_signing": ("ed25519:s1", {"k": 2})}, 1)
    await s.add_signatures([Signature(A, "D1", A, "ed25519:s1", "by-old-ssk"),
                            Signature(A, "m1", A, "ed25519:D1", "on-old-master"),
                            Signature("@bob:x", "bm", A, "ed25519:u1", "kept")])
    p2 = await s.set_cross_signing_keys(A, {"master": ("ed25519:m2", {"k": 3}),
                                            "self_signing": ("ed25519:s2", {"k": 4})}, 2)
    assert p1 is not None and p2 is not None and p2 > p1
    assert await s.get_cross_signing_keys([A, "@nobody:x"]) == {A: {"master": {"k": 3}, "self_signing": {"k": 4}}}
    assert [x.signature for x in await s.get_signatures([A, "@bob:x"])] == ["kept"]


@pytest_twisted.ensureDeferred
async def test_stream_positions_survive_a_restart(db: Database) -> None:  # noqa: F811
    s = await _store(db)
    p1 = await s.record_key_change(A)
    p2 = await s.record_membership(A, "!r:x", "join")
    assert p2 > p1 and s.current_position() == p2
    again = await _store(db)
    assert again.current_position() == p2
    assert await again.record_key_change(A) > p2
