"""Account, device, token, client-IP, profile, UIA and registration-token stores on both engines."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from storage.accounts import AccountStore, UserExistsError
from storage.client_ips import ClientIpStore
from storage.database import Database
from storage.profiles import ProfileStore
from storage.registration_tokens import RegistrationTokenStore
from storage.uia import UiaStore


@pytest_twisted.ensureDeferred
async def test_user_ids_are_unique_and_stay_taken_after_deactivation(db: Database) -> None:
    s = AccountStore(db)
    await s.create_user("@al:x", "hash", 1)
    with pytest.raises(UserExistsError):
        await s.create_user("@AL:x", "hash", 2)
    await s.deactivate_user("@al:x", 3, erase=True)
    user = await s.get_user("@al:x")
    assert user is not None and user.deactivated and user.password_hash is None
    assert await s.user_id_taken("@al:x")
    with pytest.raises(UserExistsError):
        await s.create_user("@al:x", "hash", 4)


@pytest_twisted.ensureDeferred
async def test_deactivation_removes_sessions_devices_and_ips(db: Database) -> None:
    s, ips = AccountStore(db), ClientIpStore(db)
    await s.create_user("@b:x", "h", 1)
    await s.upsert_device("@b:x", "D1", "phone", 1)
    await s.add_access_token("t1", "@b:x", "D1", 1)
    await s.add_refresh_token("r1", "@b:x", "D1", 1, None)
    await ips.record_batch([("@b:x", "D1", "10.0.0.1", "ua", 5)])
    await s.deactivate_user("@b:x", 9)
    assert await s.get_access_token("t1") is None
    assert await s.get_refresh_token("r1") is None
    assert await s.get_devices("@b:x") == []
    assert await ips.get_for_user("@b:x") == []


@pytest_twisted.ensureDeferred
async def test_device_upsert_and_delete_take_tokens_with_them(db: Database) -> None:
    s = AccountStore(db)
    await s.create_user("@c:x", "h", 1)
    assert await s.upsert_device("@c:x", "D1", "one", 1) is True
    assert await s.upsert_device("@c:x", "D1", None, 2) is False
    assert (await s.get_device("@c:x", "D1")).display_name == "one"
    await s.add_access_token("tok", "@c:x", "D1", 1)
    await s.upsert_device("@c:x", "D2", "two", 2)
    await s.add_access_token("tok2", "@c:x", "D2", 2)
    await s.delete_devices("@c:x", ["D1", "UNKNOWN"])
    assert [d.device_id for d in await s.get_devices("@c:x")] == ["D2"]
    assert await s.get_access_token("tok") is None
    assert (await s.get_access_token("tok2")).device_id == "D2"


@pytest_twisted.ensureDeferred
async def test_refresh_rotation_keeps_predecessor_until_successor_is_used(db: Database) -> None:
    s = AccountStore(db)
    await s.create_user("@d:x", "h", 1)
    await s.upsert_device("@d:x", "D", None, 1)
    await s.add_refresh_token("r1", "@d:x", "D", 1, None)
    await s.add_access_token("a1", "@d:x", "D", 1, 100, "r1")
    await s.rotate_refresh_token("r1", "r2", "a2", "@d:x", "D", 2, 200, None)
    assert await s.get_access_token("a1") is None          # old access token goes at once
    assert (await s.get_refresh_token("r1")).next_token_hash == "r2"  # old refresh stays
    # A retried refresh with r1 replaces r2 (never used) by r3.
    await s.rotate_refresh_token("r1", "r3", "a3", "@d:x", "D", 3, 300, None)
    assert await s.get_refresh_token("r2") is None and await s.get_access_token("a2") is None
    await s.consume_predecessor("r3")
    assert await s.get_refresh_token("r1") is None
    assert (await s.get_access_token("a3")).used


@pytest_twisted.ensureDeferred
async def test_client_ips_upsert_update_device_and_purge(db: Database) -> None:
    s, ips = AccountStore(db), ClientIpStore(db)
    await s.create_user("@e:x", "h", 1)
    await s.upsert_device("@e:x", "D", None, 1)
    await ips.record_batch([("@e:x", "D", "1.1.1.1", "ua1", 10), ("@e:x", "D", "2.2.2.2", "ua2", 20)])
    await ips.record_batch([("@e:x", "D", "1.1.1.1", "ua1", 30)])
    rows = await ips.get_for_user("@e:x")
    assert rows == [("D", "1.1.1.1", "ua1", 30), ("D", "2.2.2.2", "ua2", 20)]
    dev = await s.get_device("@e:x", "D")
    assert (dev.last_seen_ip, dev.last_seen_ts) == ("1.1.1.1", 30)
    # An older sighting written late never moves last_seen backwards.
    await ips.record_batch([("@e:x", "D", "3.3.3.3", "ua3", 25)])
    assert (await s.get_device("@e:x", "D")).last_seen_ip == "1.1.1.1"
    assert await ips.purge_older_than(26) == 2  # two user_ips rows; the device row is newer
    assert [r[1] for r in await ips.get_for_user("@e:x")] == ["1.1.1.1"]
    await ips.purge_older_than(31)
    dev = await s.get_device("@e:x", "D")
    assert dev.last_seen_ip is None and dev.last_seen_user_agent is None
    assert await ips.get_for_user("@e:x") == []


@pytest_twisted.ensureDeferred
async def test_profile_fields(db: Database) -> None:
    s, p = AccountStore(db), ProfileStore(db)
    await s.create_user("@f:x", "h", 1)
    await p.set_field("@f:x", "displayname", "Eff")
    await p.set_field("@f:x", "m.tz", {"zone": "Europe/Paris"})
    assert await p.get_profile("@f:x") == {"displayname": "Eff", "m.tz": {"zone": "Europe/Paris"}}
    await p.set_field("@f:x", "displayname", "Ef")
    await p.set_field("@f:x", "m.tz", None)
    assert await p.get_profile("@f:x") == {"displayname": "Ef"}


@pytest_twisted.ensureDeferred
async def test_uia_sessions_persist_stages(db: Database) -> None:
    u = UiaStore(db)
    await u.create("s1", 1, "register", None, {"username": "x"}, {})
    assert await u.mark_completed("s1", "m.login.dummy") == ["m.login.dummy"]
    assert await u.mark_completed("s1", "m.login.dummy") == ["m.login.dummy"]
    await u.set_param("s1", "k", "v")
    sess = await u.get("s1")
    assert sess.request == {"username": "x"} and sess.params == {"k": "v"}
    assert await u.delete_older_than(2) == 1
    assert await u.get("s1") is None


@pytest_twisted.ensureDeferred
async def test_registration_token_uses_are_never_overbooked(db: Database) -> None:
    t = RegistrationTokenStore(db)
    assert await t.create("tok", 3, None)
    assert not await t.create("tok", 3, None)
    results = await defer.gatherResults([defer.ensureDeferred(t.try_reserve("tok", 0))
                                         for _ in range(8)])
    assert sorted(results) == [False] * 5 + [True] * 3
    await t.complete("tok")
    await t.release("tok")
    rec = await t.get("tok")
    assert (rec.pending, rec.completed) == (1, 1)
    assert await t.is_valid("tok", 0)
    await t.create("old", None, 10)
    assert not await t.try_reserve("old", 11)


@pytest_twisted.ensureDeferred
async def test_sightings_of_revoked_devices_are_not_written(db: Database) -> None:
    s, ips = AccountStore(db), ClientIpStore(db)
    await s.create_user("@g:x", "h", 1)
    await s.upsert_device("@g:x", "KEEP", None, 1)
    await ips.record_batch([("@g:x", "GONE", "1.1.1.1", "ua", 5), ("@g:x", "KEEP", "2.2.2.2", "ua", 5)])
    assert await ips.get_for_user("@g:x") == [("KEEP", "2.2.2.2", "ua", 5)]
