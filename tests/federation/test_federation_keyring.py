"""The keyring with a fake network: direct fetches, notaries, validity rules, caching, our own
keys, and signature checks on JSON and on PDUs of several room versions."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from crypto.event_signing import hash_and_sign_event
from crypto.keys import encode_verify_key, generate_signing_key, get_verify_key, key_id_of
from crypto.redaction import redact_event
from crypto.signing import sign_json, verify_json
from federation.keyring import (KeyNotFound, KeyringError, SignatureVerifyError,
                                parse_key_response, required_signers)
from homeserver.rooms.events import Event
from tests.federation.keyring_fakes import DAY, HOUR, NOW, FakeClock, Network, make_keyring

ORIGIN = "remote.test"


@pytest.fixture
def net() -> Network:
    network = Network(FakeClock())
    network.add(ORIGIN)
    return network


async def expect_not_found(coro: Any) -> KeyNotFound:
    with pytest.raises(KeyNotFound) as exc:
        await coro
    return exc.value


# --- direct fetches ------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_direct_fetch_then_cached(net: Network) -> None:
    remote = net.servers[ORIGIN]
    keyring = make_keyring(net)
    vk = await keyring.get_verify_key(ORIGIN, remote.key_id, NOW)
    assert encode_verify_key(vk) == encode_verify_key(get_verify_key(remote.key))
    assert net.calls == [("GET", ORIGIN, "/_matrix/key/v2/server")]
    # A second lookup, and one for an earlier time, come from memory.
    await keyring.get_verify_key(ORIGIN, remote.key_id, NOW + HOUR)
    await keyring.get_verify_key(ORIGIN, remote.key_id, 0)
    assert len(net.calls) == 1


@pytest_twisted.ensureDeferred
async def test_forged_self_signature_is_rejected(net: Network) -> None:
    remote = net.servers[ORIGIN]
    forger = generate_signing_key(remote.key.version)  # same key id, other key
    net.direct_answers[ORIGIN] = lambda: remote.key_response(net.clock.now, signers=[forger])
    await expect_not_found(make_keyring(net).get_verify_key(ORIGIN, remote.key_id, NOW))


@pytest_twisted.ensureDeferred
async def test_every_verify_key_must_sign(net: Network) -> None:
    remote = net.servers[ORIGIN]
    second = generate_signing_key()

    def answer() -> dict[str, Any]:
        body = remote.key_response(net.clock.now, signers=[])
        body["verify_keys"][key_id_of(second)] = {"key": encode_verify_key(get_verify_key(second))}
        return sign_json(body, ORIGIN, remote.key)  # not signed by the second key
    net.direct_answers[ORIGIN] = answer
    await expect_not_found(make_keyring(net).get_verify_key(ORIGIN, remote.key_id, NOW))


@pytest_twisted.ensureDeferred
async def test_server_name_mismatch_is_rejected(net: Network) -> None:
    evil = net.add("evil.test")
    # evil.test answers for remote.test with its own response, signed under both names, so
    # only the server_name inside tells it apart.
    net.direct_answers[ORIGIN] = lambda: sign_json(evil.key_response(net.clock.now), ORIGIN,
                                                   evil.key)
    await expect_not_found(make_keyring(net).get_verify_key(ORIGIN, evil.key_id, NOW))


def test_parse_key_response_rejects_bad_shapes(net: Network) -> None:
    remote = net.servers[ORIGIN]
    good = remote.key_response(NOW)
    assert [k.row.key_id for k in parse_key_response(good, ORIGIN, NOW, ORIGIN)] == [remote.key_id]
    for bad in ([], {**good, "valid_until_ts": "soon"}, {**good, "verify_keys": []},
                {**good, "verify_keys": {}}, {**good, "server_name": "other.test"},
                {k: v for k, v in good.items() if k != "signatures"}):
        with pytest.raises(KeyringError):
            parse_key_response(bad, ORIGIN, NOW, ORIGIN)


@pytest_twisted.ensureDeferred
async def test_valid_until_ts_is_honoured(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.valid_for = HOUR
    keyring = make_keyring(net)
    await keyring.get_verify_key(ORIGIN, remote.key_id, NOW + HOUR)  # exactly the bound: ok
    # Later than valid_until_ts: a refetch is tried; the server still says one hour from its
    # fetch time, so after a minute the key is valid until NOW + 1 min + 1 h, not later.
    net.clock.now += 60_000
    await keyring.get_verify_key(ORIGIN, remote.key_id, NOW + HOUR + 1)
    assert len(net.calls) == 2
    err = await expect_not_found(keyring.get_verify_key(ORIGIN, remote.key_id, NOW + 2 * HOUR))
    assert "valid until" in str(err)


@pytest_twisted.ensureDeferred
async def test_valid_until_ts_counts_for_at_most_a_week(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.valid_for = 365 * DAY
    keyring = make_keyring(net)
    await keyring.get_verify_key(ORIGIN, remote.key_id, NOW + 7 * DAY)
    net.direct_answers[ORIGIN] = lambda: (_ for _ in ()).throw(ConnectionError("down"))
    await expect_not_found(keyring.get_verify_key(ORIGIN, remote.key_id, NOW + 7 * DAY + 1))


@pytest_twisted.ensureDeferred
async def test_old_verify_keys_usable_until_expired_ts(net: Network) -> None:
    remote = net.servers[ORIGIN]
    old_key = generate_signing_key()
    remote.old[key_id_of(old_key)] = (old_key, NOW - DAY)
    keyring = make_keyring(net)
    vk = await keyring.get_verify_key(ORIGIN, key_id_of(old_key), NOW - DAY)
    assert encode_verify_key(vk) == encode_verify_key(get_verify_key(old_key))
    await expect_not_found(keyring.get_verify_key(ORIGIN, key_id_of(old_key), NOW - DAY + 1))
    # Where validity does not count (rooms v1-v4 pass 0), the old key still verifies.
    await keyring.get_verify_key(ORIGIN, key_id_of(old_key), 0)


@pytest_twisted.ensureDeferred
async def test_unknown_key_id_and_bad_input(net: Network) -> None:
    keyring = make_keyring(net)
    await expect_not_found(keyring.get_verify_key(ORIGIN, "ed25519:nope", NOW))
    await expect_not_found(keyring.get_verify_key(ORIGIN, "not-a-key-id", NOW))
    await expect_not_found(keyring.get_verify_key(ORIGIN, "curve25519:abc", NOW))
    await expect_not_found(keyring.get_verify_key("bad name/../", "ed25519:abc", NOW))


# --- fetch discipline ----------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_failed_server_is_not_refetched_within_a_minute(net: Network) -> None:
    net.servers[ORIGIN].available = False
    keyring = make_keyring(net)
    kid = net.servers[ORIGIN].key_id
    await expect_not_found(keyring.get_verify_key(ORIGIN, kid, NOW))
    await expect_not_found(keyring.get_verify_key(ORIGIN, kid, NOW))
    await expect_not_found(keyring.get_verify_key(ORIGIN, "ed25519:other", NOW))
    assert len(net.calls) == 1
    net.servers[ORIGIN].available = True
    net.clock.now += 60_000
    await keyring.get_verify_key(ORIGIN, kid, NOW)
    assert len(net.calls) == 2


@pytest_twisted.ensureDeferred
async def test_concurrent_lookups_share_one_fetch(net: Network) -> None:
    keyring = make_keyring(net)
    kid = net.servers[ORIGIN].key_id
    gate: defer.Deferred = defer.Deferred()
    net.gate = gate
    lookups = [defer.ensureDeferred(keyring.get_verify_key(ORIGIN, kid, NOW)) for _ in range(5)]
    assert len(net.calls) == 1 and not any(d.called for d in lookups)
    net.gate = None
    gate.callback(None)
    keys = await defer.gatherResults(lookups)
    assert len({encode_verify_key(k) for k in keys}) == 1
    assert len(net.calls) == 1


# --- notaries ------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_notary_fallback_with_configured_key(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.available = False
    notary = net.add_notary("notary.test")
    second = net.add_notary("second.test")
    keyring = make_keyring(net, trusted=(notary.trusted(), second.trusted()))
    vk = await keyring.get_verify_key(ORIGIN, remote.key_id, NOW)
    assert encode_verify_key(vk) == encode_verify_key(get_verify_key(remote.key))
    # The first notary's answer was enough: the second is not asked.
    assert [c[1] for c in net.calls] == [ORIGIN, "notary.test"]
    assert notary.requests == [{"server_keys": {ORIGIN: {
        remote.key_id: {"minimum_valid_until_ts": NOW}}}}]


def without_old_keys(net: Network, remote: Any) -> dict[str, Any]:
    """The origin's response with its old keys forgotten."""
    saved, remote.old = remote.old, {}
    try:
        return remote.key_response(net.clock.now)
    finally:
        remote.old = saved


@pytest_twisted.ensureDeferred
async def test_notary_asked_when_origin_lacks_the_key(net: Network) -> None:
    """The origin answers but no longer lists an old key; a notary still remembers it."""
    remote = net.servers[ORIGIN]
    notary = net.add_notary("notary.test")
    old_key = generate_signing_key()
    remote.old[key_id_of(old_key)] = (old_key, NOW)
    net.direct_answers[ORIGIN] = lambda: without_old_keys(net, remote)
    keyring = make_keyring(net, trusted=(notary.trusted(),))
    vk = await keyring.get_verify_key(ORIGIN, key_id_of(old_key), NOW - HOUR)
    assert encode_verify_key(vk) == encode_verify_key(get_verify_key(old_key))
    assert [c[1] for c in net.calls] == [ORIGIN, "notary.test"]


@pytest_twisted.ensureDeferred
async def test_notary_signature_must_be_valid(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.available = False
    notary = net.add_notary("notary.test")
    trusted = notary.trusted()
    # The keyring trusts the notary's key, but the answer comes signed by another one.
    notary.key = generate_signing_key(notary.key.version)
    await expect_not_found(make_keyring(net, trusted=(trusted,)).get_verify_key(
        ORIGIN, remote.key_id, NOW))
    assert [c[1] for c in net.calls] == [ORIGIN, "notary.test"]


@pytest_twisted.ensureDeferred
async def test_notary_cannot_forge_the_origin_self_signature(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.available = False
    notary = net.add_notary("notary.test")
    fake = generate_signing_key(remote.key.version)

    def swap_key(entry: dict[str, Any]) -> dict[str, Any]:
        # The notary swaps in a key of its choosing; the origin's self-signature no longer
        # matches the key listed, so the entry is refused although the notary signed it.
        entry = copy.deepcopy(entry)
        entry["verify_keys"][remote.key_id] = {"key": encode_verify_key(get_verify_key(fake))}
        return entry
    notary.tamper = swap_key
    await expect_not_found(make_keyring(net, trusted=(notary.trusted(),)).get_verify_key(
        ORIGIN, remote.key_id, NOW))


@pytest_twisted.ensureDeferred
async def test_notary_keys_fetched_from_the_notary_when_not_configured(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.available = False
    notary = net.add_notary("notary.test")
    keyring = make_keyring(net, trusted=(notary.trusted(with_keys=False),))
    await keyring.get_verify_key(ORIGIN, remote.key_id, NOW)
    assert [c[1:] for c in net.calls] == [
        (ORIGIN, "/_matrix/key/v2/server"), ("notary.test", "/_matrix/key/v2/query"),
        ("notary.test", "/_matrix/key/v2/server")]


# --- our own keys --------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_own_keys_answered_locally(net: Network) -> None:
    signing_key = generate_signing_key()
    old = generate_signing_key()
    old_id = key_id_of(old)
    keyring = make_keyring(net, signing_key=signing_key, old_signing_keys={
        old_id: (encode_verify_key(get_verify_key(old)), NOW - DAY)})
    vk = await keyring.get_verify_key("local.test", key_id_of(signing_key), NOW + DAY)
    assert encode_verify_key(vk) == encode_verify_key(get_verify_key(signing_key))
    await keyring.get_verify_key("local.test", old_id, NOW - DAY)
    await expect_not_found(keyring.get_verify_key("local.test", old_id, NOW))
    await expect_not_found(keyring.get_verify_key("local.test", "ed25519:unknown", NOW))
    assert net.calls == []


def test_own_key_response(net: Network) -> None:
    signing_key = generate_signing_key()
    old = generate_signing_key()
    old_b64 = encode_verify_key(get_verify_key(old))
    keyring = make_keyring(net, signing_key=signing_key,
                           old_signing_keys={key_id_of(old): (old_b64, NOW - DAY)})
    body = keyring.own_key_response()
    assert body["server_name"] == "local.test"
    assert body["valid_until_ts"] == NOW + DAY
    assert body["old_verify_keys"] == {key_id_of(old): {"key": old_b64, "expired_ts": NOW - DAY}}
    verify_json(body, "local.test", get_verify_key(signing_key))
    keys = parse_key_response(body, "local.test", NOW, "local.test")
    assert {k.row.key_id for k in keys} == {key_id_of(signing_key), key_id_of(old)}
    # Re-made once half the validity has passed, so it never goes out nearly expired.
    net.clock.now += DAY // 2 + 1
    assert keyring.own_key_response()["valid_until_ts"] == net.clock.now + DAY


# --- signatures on JSON and events ---------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_verify_json_for_server(net: Network) -> None:
    remote = net.servers[ORIGIN]
    keyring = make_keyring(net)
    obj = sign_json({"hello": "world"}, ORIGIN, remote.key)
    await keyring.verify_json_for_server(ORIGIN, obj, NOW)
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_json_for_server(ORIGIN, {**obj, "hello": "moon"}, NOW)
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_json_for_server("other.test", obj, NOW)
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_json_for_server(ORIGIN, {"hello": "world"}, NOW)
    # A bogus extra signature does not spoil a good one.
    extra = copy.deepcopy(obj)
    extra["signatures"][ORIGIN]["ed25519:zzz"] = "AAAA"
    await keyring.verify_json_for_server(ORIGIN, extra, NOW)
    assert issubclass(SignatureVerifyError, ValueError)


def make_pdu(room_version: str, sender: str, **extra: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message", "sender": sender, "room_id": "!room:remote.test",
        "content": {"body": "hi", "msgtype": "m.text"}, "depth": 5,
        "origin_server_ts": NOW, "prev_events": [], "auth_events": [], "origin": ORIGIN,
    }
    pdu.update(extra)
    return pdu


def signed_event(net: Network, room_version: str, pdu: dict[str, Any],
                 signers: list[str]) -> Event:
    for server in signers:
        hash_and_sign_event(pdu, server, net.servers[server].key, room_version)
    return Event.from_pdu(pdu, room_version)


@pytest_twisted.ensureDeferred
async def test_event_signed_by_sender_server(net: Network) -> None:
    keyring = make_keyring(net)
    event = signed_event(net, "10", make_pdu("10", "@alice:remote.test"), [ORIGIN])
    assert required_signers(event) == [ORIGIN]
    await keyring.verify_event_signatures(event)
    # A redacted copy carries the same valid signature.
    redacted = Event.from_pdu(redact_event(event.pdu, event.room_version), "10")
    await keyring.verify_event_signatures(redacted)
    # Changing a field the signature covers breaks it (the content is covered via the hash).
    tampered = dict(event.pdu, origin_server_ts=NOW + 1)
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event_signatures(Event.from_pdu(tampered, "10"))
    other = net.add("other.test")
    forged = signed_event(net, "10", make_pdu("10", "@mallory:remote.test"), [other.name])
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event_signatures(forged)


@pytest_twisted.ensureDeferred
async def test_v1_event_needs_the_event_id_server_too(net: Network) -> None:
    net.add("ids.test")
    keyring = make_keyring(net)
    pdu = make_pdu("1", "@alice:remote.test", event_id="$abc:ids.test", prev_events=[],
                   auth_events=[])
    only_sender = signed_event(net, "1", copy.deepcopy(pdu), [ORIGIN])
    assert required_signers(only_sender) == ["ids.test", ORIGIN]
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event_signatures(only_sender)
    both = signed_event(net, "1", copy.deepcopy(pdu), [ORIGIN, "ids.test"])
    await keyring.verify_event_signatures(both)


@pytest_twisted.ensureDeferred
async def test_restricted_join_needs_the_authorising_server(net: Network) -> None:
    net.add("resident.test")
    keyring = make_keyring(net)
    pdu = make_pdu("10", "@bob:remote.test", type="m.room.member", state_key="@bob:remote.test",
                   content={"membership": "join",
                            "join_authorised_via_users_server": "@admin:resident.test"})
    only_sender = signed_event(net, "10", copy.deepcopy(pdu), [ORIGIN])
    assert required_signers(only_sender) == [ORIGIN, "resident.test"]
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event_signatures(only_sender)
    await keyring.verify_event_signatures(
        signed_event(net, "10", copy.deepcopy(pdu), [ORIGIN, "resident.test"]))
    # Before restricted rooms (v7) the field means nothing.
    assert required_signers(signed_event(net, "7", copy.deepcopy(pdu), [ORIGIN])) == [ORIGIN]


def test_third_party_invite_is_exempt_from_the_sender_signature(net: Network) -> None:
    pdu = make_pdu("10", "@alice:remote.test", type="m.room.member",
                   state_key="@carol:elsewhere.test",
                   content={"membership": "invite", "third_party_invite": {"signed": {}}})
    assert required_signers(signed_event(net, "10", pdu, [ORIGIN])) == []


@pytest_twisted.ensureDeferred
async def test_key_validity_counts_from_room_version_5(net: Network) -> None:
    remote = net.servers[ORIGIN]
    remote.valid_for = HOUR
    keyring = make_keyring(net)
    late = NOW + 2 * HOUR  # the event claims a time after the key's valid_until_ts
    v4 = signed_event(net, "4", make_pdu("4", "@a:remote.test", origin_server_ts=late), [ORIGIN])
    await keyring.verify_event_signatures(v4)
    v5 = signed_event(net, "5", make_pdu("5", "@a:remote.test", origin_server_ts=late), [ORIGIN])
    with pytest.raises(SignatureVerifyError):
        await keyring.verify_event_signatures(v5)
    ok = signed_event(net, "5", make_pdu("5", "@a:remote.test"), [ORIGIN])
    await keyring.verify_event_signatures(ok)


# --- serving as a notary -------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_notary_lookup_signs_and_caches(net: Network) -> None:
    remote = net.servers[ORIGIN]
    signing_key = generate_signing_key()
    keyring = make_keyring(net, signing_key=signing_key)
    [resp] = await keyring.notary_lookup(ORIGIN, [], NOW)
    verify_json(resp, ORIGIN, get_verify_key(remote.key))
    verify_json(resp, "local.test", get_verify_key(signing_key))
    assert len(net.calls) == 1
    await keyring.notary_lookup(ORIGIN, [remote.key_id], NOW + HOUR)  # cached: fresh enough
    assert len(net.calls) == 1
    # Past half its lifetime it is refetched; an unreachable server leaves the cached answer.
    net.clock.now += DAY // 2 + 60_000
    remote.available = False
    [again] = await keyring.notary_lookup(ORIGIN, [], NOW)
    assert len(net.calls) == 2
    assert again["valid_until_ts"] == resp["valid_until_ts"]
    assert await keyring.notary_lookup("unknown.test", [], NOW) == []
    [own] = await keyring.notary_lookup("local.test", [], NOW)
    verify_json(own, "local.test", get_verify_key(signing_key))
