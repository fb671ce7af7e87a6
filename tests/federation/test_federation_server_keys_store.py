"""ServerKeyStore on both engines, and a keyring's keys surviving into a new Keyring instance."""

from __future__ import annotations

import pytest_twisted

from crypto.keys import encode_verify_key, get_verify_key, key_id_of
from crypto.signing import verify_json
from storage.database import Database
from storage.server_keys import ServerKeyStore, StoredServerKey
from tests.federation.keyring_fakes import DAY, NOW, FakeClock, Network, make_keyring


def key(key_id: str, valid_until: int, *, verify_key: str = "A" * 43,
        expired: int | None = None, json_text: str = "{}") -> StoredServerKey:
    return StoredServerKey("remote.test", key_id, verify_key, valid_until, expired, NOW,
                           "remote.test", json_text)


@pytest_twisted.ensureDeferred
async def test_store_round_trip_and_no_downgrade(db: Database) -> None:
    store = ServerKeyStore(db)
    await store.store_keys([key("ed25519:a", NOW + DAY, json_text='{"n":1}'),
                            key("ed25519:old", NOW + DAY, expired=NOW - DAY)])
    rows = {r.key_id: r for r in await store.get_keys("remote.test")}
    assert rows["ed25519:a"] == key("ed25519:a", NOW + DAY, json_text='{"n":1}')
    assert rows["ed25519:old"].expired_ts == NOW - DAY
    assert await store.get_keys("other.test") == []
    # A staler response (e.g. from a notary's cache) does not replace a fresher one ...
    await store.store_keys([key("ed25519:a", NOW, verify_key="B" * 43, json_text='{"n":0}')])
    [a] = [r for r in await store.get_keys("remote.test") if r.key_id == "ed25519:a"]
    assert a.verify_key == "A" * 43 and a.key_json == '{"n":1}'
    # ... a newer one does, and may move the key to the old keys.
    await store.store_keys([key("ed25519:a", NOW + 2 * DAY, expired=NOW + DAY,
                                json_text='{"n":2}')])
    [a] = [r for r in await store.get_keys("remote.test") if r.key_id == "ed25519:a"]
    assert (a.valid_until_ts, a.expired_ts, a.key_json) == (NOW + 2 * DAY, NOW + DAY, '{"n":2}')
    await store.store_keys([])


@pytest_twisted.ensureDeferred
async def test_keys_survive_into_a_new_keyring(db: Database) -> None:
    net = Network(FakeClock())
    remote = net.add("remote.test")
    first = make_keyring(net, ServerKeyStore(db))
    await first.get_verify_key("remote.test", remote.key_id, NOW)
    assert len(net.calls) == 1
    # A restarted server: the key comes from the database, the network is not asked.
    remote.available = False
    second = make_keyring(net, ServerKeyStore(db))
    vk = await second.get_verify_key("remote.test", remote.key_id, NOW)
    assert encode_verify_key(vk) == encode_verify_key(get_verify_key(remote.key))
    assert len(net.calls) == 1
    # The stored response is served again as a notary, with the origin's signature intact.
    [resp] = await second.notary_lookup("remote.test", [remote.key_id], NOW)
    verify_json(resp, "remote.test", get_verify_key(remote.key))
    assert key_id_of(remote.key) in resp["verify_keys"]
