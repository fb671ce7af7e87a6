"""Tests for crypto.event_signing, including the spec's event signing test vectors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crypto.canonical_json import CanonicalJsonError
from crypto.event_signing import hash_and_sign_event, sign_event, verify_event_signature
from crypto.hashes import check_content_hash
from crypto.keys import SigningKey, VerifyKey, generate_signing_key, get_verify_key
from crypto.redaction import redact_event
from crypto.signing import SignatureError

# content/appendices.md "Event Signing" test vectors.
MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_EVENT_SIGNED: dict[str, Any] = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT_SIGNED: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}

# The vectors keep "origin" in the signed (redacted) form, so they hold for v1..v10.
PRE_V11 = [str(n) for n in range(1, 11)]
ALL = [str(n) for n in range(1, 13)]


@pytest.mark.parametrize("version", PRE_V11)
def test_spec_vector_minimal_event(version: str, spec_signing_key: SigningKey) -> None:
    event = copy.deepcopy(MINIMAL_EVENT)
    result = hash_and_sign_event(event, "domain", spec_signing_key, version)
    assert result is event
    assert event == MINIMAL_EVENT_SIGNED


@pytest.mark.parametrize("version", PRE_V11)
def test_spec_vector_redactable_event(version: str, spec_signing_key: SigningKey) -> None:
    event = copy.deepcopy(REDACTABLE_EVENT)
    hash_and_sign_event(event, "domain", spec_signing_key, version)
    assert event == REDACTABLE_EVENT_SIGNED


@pytest.mark.parametrize("version", PRE_V11)
def test_spec_vectors_verify(version: str, spec_verify_key: VerifyKey) -> None:
    verify_event_signature(MINIMAL_EVENT_SIGNED, "domain", spec_verify_key, version)
    verify_event_signature(REDACTABLE_EVENT_SIGNED, "domain", spec_verify_key, version)


@pytest.mark.parametrize("version", ["11", "12"])
def test_v11_signature_differs_because_origin_is_redacted(
    version: str, spec_signing_key: SigningKey, spec_verify_key: VerifyKey
) -> None:
    event = copy.deepcopy(MINIMAL_EVENT)
    hash_and_sign_event(event, "domain", spec_signing_key, version)
    assert event["hashes"] == MINIMAL_EVENT_SIGNED["hashes"]
    assert event["signatures"] != MINIMAL_EVENT_SIGNED["signatures"]
    verify_event_signature(event, "domain", spec_verify_key, version)
    # Because origin is not covered by the v11 signature, changing it keeps it valid.
    event["origin"] = "elsewhere"
    verify_event_signature(event, "domain", spec_verify_key, version)
    with pytest.raises(SignatureError):
        verify_event_signature(MINIMAL_EVENT_SIGNED, "domain", spec_verify_key, version)


def _member_event() -> dict[str, Any]:
    return {
        "type": "m.room.member",
        "state_key": "@alice:example.org",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "origin_server_ts": 1234,
        "depth": 4,
        "prev_events": ["$prev"],
        "auth_events": ["$create", "$pl"],
        "content": {"membership": "join", "displayname": "Alice"},
        "unsigned": {"age": 1},
    }


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key("a_test")


@pytest.mark.parametrize("version", ALL)
def test_round_trip_and_redacted_copy_verifies(version: str, key: SigningKey) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, version)
    assert check_content_hash(event)
    verify_event_signature(event, "example.org", get_verify_key(key), version)
    # A redacted copy must verify too (spec: "whether we have been sent the full event or a redacted copy").
    verify_event_signature(redact_event(event, version), "example.org", get_verify_key(key), version)


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    "field,value",
    [("sender", "@mallory:example.org"), ("depth", 5), ("type", "m.room.topic"), ("state_key", "@bob:example.org")],
)
def test_tampering_with_protected_keys_breaks_signature(
    version: str, field: str, value: Any, key: SigningKey
) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, version)
    event[field] = value
    with pytest.raises(SignatureError):
        verify_event_signature(event, "example.org", get_verify_key(key), version)


@pytest.mark.parametrize("version", ALL)
def test_tampering_with_protected_content_breaks_signature(version: str, key: SigningKey) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, version)
    event["content"]["membership"] = "leave"
    with pytest.raises(SignatureError):
        verify_event_signature(event, "example.org", get_verify_key(key), version)


@pytest.mark.parametrize("version", ALL)
def test_tampering_with_redactable_content_breaks_only_the_hash(version: str, key: SigningKey) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, version)
    event["content"]["displayname"] = "Mallory"
    verify_event_signature(event, "example.org", get_verify_key(key), version)
    assert not check_content_hash(event)


@pytest.mark.parametrize("version", ALL)
def test_tampering_with_hash_breaks_signature(version: str, key: SigningKey) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, version)
    event["hashes"]["sha256"] = "A" * 43
    with pytest.raises(SignatureError):
        verify_event_signature(event, "example.org", get_verify_key(key), version)


def test_wrong_server_or_key_fails(key: SigningKey) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, "10")
    with pytest.raises(SignatureError):
        verify_event_signature(event, "other.org", get_verify_key(key), "10")
    with pytest.raises(SignatureError):
        verify_event_signature(event, "example.org", get_verify_key(generate_signing_key("a_test")), "10")


def test_unsigned_event_fails(key: SigningKey) -> None:
    with pytest.raises(SignatureError):
        verify_event_signature(_member_event(), "example.org", get_verify_key(key), "10")


def test_bad_base64_signature_fails(key: SigningKey) -> None:
    event = hash_and_sign_event(_member_event(), "example.org", key, "10")
    event["signatures"]["example.org"]["ed25519:a_test"] = "%%%"
    with pytest.raises(SignatureError):
        verify_event_signature(event, "example.org", get_verify_key(key), "10")


def test_co_signing_keeps_existing_signatures(key: SigningKey) -> None:
    other = generate_signing_key("a_othr")
    event = hash_and_sign_event(_member_event(), "example.org", key, "10")
    original_hash = dict(event["hashes"])
    sign_event(event, "resident.org", other, "10")
    assert set(event["signatures"]) == {"example.org", "resident.org"}
    assert event["hashes"] == original_hash
    verify_event_signature(event, "example.org", get_verify_key(key), "10")
    verify_event_signature(event, "resident.org", get_verify_key(other), "10")


def test_signature_covers_join_authorised_via_users_server_from_v9(key: SigningKey) -> None:
    for version, covered in (("8", False), ("9", True)):
        event = _member_event()
        event["content"]["join_authorised_via_users_server"] = "@admin:resident.org"
        hash_and_sign_event(event, "example.org", key, version)
        event["content"]["join_authorised_via_users_server"] = "@mallory:resident.org"
        if covered:
            with pytest.raises(SignatureError):
                verify_event_signature(event, "example.org", get_verify_key(key), version)
        else:
            verify_event_signature(event, "example.org", get_verify_key(key), version)


def test_strict_canonical_json_per_room_version(key: SigningKey) -> None:
    event = _member_event()
    event["content"]["level"] = 50.5
    signed = hash_and_sign_event(copy.deepcopy(event), "example.org", key, "5")
    verify_event_signature(signed, "example.org", get_verify_key(key), "5")
    with pytest.raises(CanonicalJsonError):
        hash_and_sign_event(copy.deepcopy(event), "example.org", key, "6")
