"""Tests for crypto.hashes: content hashes, reference hashes, event IDs and v12 room IDs."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import pytest

from crypto.canonical_json import CanonicalJsonError
from crypto.hashes import (
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    room_id_from_create_event,
)
from crypto.redaction import redact_event

# content/appendices.md "Event Signing" test vectors (inputs and expected hashes).
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
MINIMAL_EVENT_HASH = "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
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
REDACTABLE_EVENT_HASH = "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_content_hash_spec_vector_minimal_event() -> None:
    assert compute_content_hash(MINIMAL_EVENT) == MINIMAL_EVENT_HASH


def test_content_hash_spec_vector_redactable_event() -> None:
    assert compute_content_hash(REDACTABLE_EVENT) == REDACTABLE_EVENT_HASH


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    event = copy.deepcopy(MINIMAL_EVENT)
    event["unsigned"] = {"age_ts": 1, "anything": [1, 2]}
    event["signatures"] = {"other": {"ed25519:x": "y"}}
    event["hashes"] = {"sha256": "whatever"}
    assert compute_content_hash(event) == MINIMAL_EVENT_HASH


def test_content_hash_covers_redactable_content() -> None:
    event = copy.deepcopy(REDACTABLE_EVENT)
    event["content"]["body"] = "Here is the message content!"
    assert compute_content_hash(event) != REDACTABLE_EVENT_HASH


def test_content_hash_does_not_mutate_input() -> None:
    event = copy.deepcopy(MINIMAL_EVENT)
    compute_content_hash(event)
    assert event == MINIMAL_EVENT


def test_content_hash_strictness() -> None:
    event = copy.deepcopy(MINIMAL_EVENT)
    event["content"] = {"level": 50.5}
    with pytest.raises(CanonicalJsonError):
        compute_content_hash(event)
    assert compute_content_hash(event, strict=False) != MINIMAL_EVENT_HASH


def _hashed(event: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["hashes"] = {"sha256": compute_content_hash(event)}
    return event


def test_check_content_hash_accepts_correct_hash() -> None:
    assert check_content_hash(_hashed(REDACTABLE_EVENT))


def test_check_content_hash_accepts_padded_hash() -> None:
    event = _hashed(REDACTABLE_EVENT)
    event["hashes"]["sha256"] += "="
    assert check_content_hash(event)


def test_check_content_hash_detects_content_tampering() -> None:
    event = _hashed(REDACTABLE_EVENT)
    event["content"]["body"] = "tampered"
    assert not check_content_hash(event)


def test_check_content_hash_detects_top_level_tampering() -> None:
    event = _hashed(REDACTABLE_EVENT)
    event["origin_server_ts"] += 1
    assert not check_content_hash(event)


def test_check_content_hash_detects_removed_key() -> None:
    event = _hashed(REDACTABLE_EVENT)
    del event["content"]["body"]
    assert not check_content_hash(event)


def test_check_content_hash_ignores_unsigned_changes() -> None:
    event = _hashed(REDACTABLE_EVENT)
    event["unsigned"] = {"age": 12345}
    assert check_content_hash(event)


@pytest.mark.parametrize("hashes", [None, {}, {"sha256": 5}, {"sha256": "!!bad!!"}, "x", {"sha1": MINIMAL_EVENT_HASH}])
def test_check_content_hash_rejects_missing_or_malformed(hashes: Any) -> None:
    event = copy.deepcopy(MINIMAL_EVENT)
    if hashes is None:
        del event["hashes"]
    else:
        event["hashes"] = hashes
    assert not check_content_hash(event)


def _v4_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!r:example.org",
        "sender": "@u:example.org",
        "origin": "example.org",
        "origin_server_ts": 1000,
        "depth": 2,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "content": {"body": "hello"},
        "hashes": {"sha256": "AAAA"},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
        "unsigned": {"age_ts": 1000},
    }
    event.update(overrides)
    return event


def test_reference_hash_known_answer_v10() -> None:
    # Hand-written canonical JSON of the redacted event, without signatures/unsigned.
    expected_json = (
        b'{"auth_events":["$a"],"content":{},"depth":2,"hashes":{"sha256":"AAAA"},'
        b'"origin":"example.org","origin_server_ts":1000,"prev_events":["$p"],'
        b'"room_id":"!r:example.org","sender":"@u:example.org","type":"m.room.message"}'
    )
    digest = hashlib.sha256(expected_json).digest()
    assert compute_reference_hash(_v4_event(), "10") == digest
    assert compute_event_id(_v4_event(), "10") == "$" + _b64url(digest)


def test_reference_hash_known_answer_v11_drops_origin() -> None:
    expected_json = (
        b'{"auth_events":["$a"],"content":{},"depth":2,"hashes":{"sha256":"AAAA"},'
        b'"origin_server_ts":1000,"prev_events":["$p"],'
        b'"room_id":"!r:example.org","sender":"@u:example.org","type":"m.room.message"}'
    )
    assert compute_reference_hash(_v4_event(), "11") == hashlib.sha256(expected_json).digest()


def test_reference_hash_ignores_signatures_unsigned_and_redactable_content() -> None:
    base = compute_reference_hash(_v4_event(), "10")
    assert compute_reference_hash(_v4_event(signatures={}, unsigned={"x": 1}), "10") == base
    assert compute_reference_hash(_v4_event(content={"body": "other"}), "10") == base
    assert compute_reference_hash(_v4_event(age_ts=99), "10") == base


def test_reference_hash_covers_protected_keys() -> None:
    base = compute_reference_hash(_v4_event(), "10")
    assert compute_reference_hash(_v4_event(depth=3), "10") != base
    assert compute_reference_hash(_v4_event(hashes={"sha256": "BBBB"}), "10") != base
    assert compute_reference_hash(_v4_event(sender="@v:example.org"), "10") != base


@pytest.mark.parametrize("version", [str(n) for n in range(3, 13)])
def test_event_id_unchanged_by_redaction(version: str) -> None:
    event = _v4_event()
    assert compute_event_id(event, version) == compute_event_id(redact_event(event, version), version)


@pytest.mark.parametrize("version", ["1", "2"])
def test_event_id_not_computed_for_v1_v2(version: str) -> None:
    with pytest.raises(ValueError):
        compute_event_id(_v4_event(), version)


def _event_with_special_chars() -> tuple[dict[str, Any], bytes]:
    """Find an event whose reference hash's standard base64 contains '+' or '/'."""
    for depth in range(1, 1000):
        event = _v4_event(depth=depth)
        digest = compute_reference_hash(event, "3")
        if "+" in _b64(digest) or "/" in _b64(digest):
            return event, digest
    raise AssertionError("no suitable event found")


def test_v3_event_id_uses_standard_base64() -> None:
    event, digest = _event_with_special_chars()
    event_id = compute_event_id(event, "3")
    assert event_id == "$" + _b64(digest)
    assert len(event_id) == 44 and "=" not in event_id
    assert "+" in event_id or "/" in event_id


@pytest.mark.parametrize("version", [str(n) for n in range(4, 13)])
def test_v4_plus_event_id_uses_urlsafe_base64(version: str) -> None:
    event, _ = _event_with_special_chars()
    event_id = compute_event_id(event, version)
    digest = compute_reference_hash(event, version)
    assert event_id == "$" + _b64url(digest)
    assert len(event_id) == 44
    assert "+" not in event_id and "/" not in event_id and "=" not in event_id


def test_v3_and_v4_ids_encode_the_same_hash() -> None:
    event, _ = _event_with_special_chars()
    v3 = compute_event_id(event, "3")[1:]
    v4 = compute_event_id(event, "4")[1:]
    assert v3 != v4
    assert v3.replace("+", "-").replace("/", "_") == v4


def test_reference_hash_lenient_for_old_rooms() -> None:
    event = _v4_event(depth=2**60)
    assert len(compute_reference_hash(event, "5")) == 32
    with pytest.raises(CanonicalJsonError):
        compute_reference_hash(event, "6")


def _create_event(**content: Any) -> dict[str, Any]:
    return {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:example.org",
        "origin_server_ts": 1000,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "content": {"room_version": "12", **content},
        "hashes": {"sha256": "AAAA"},
        "signatures": {},
    }


def test_v12_room_id_is_create_event_reference_hash() -> None:
    create = _create_event()
    expected_json = (
        b'{"auth_events":[],"content":{"room_version":"12"},"depth":1,'
        b'"hashes":{"sha256":"AAAA"},"origin_server_ts":1000,"prev_events":[],'
        b'"sender":"@alice:example.org","state_key":"","type":"m.room.create"}'
    )
    room_id = room_id_from_create_event(create)
    assert room_id == "!" + _b64url(hashlib.sha256(expected_json).digest())
    assert room_id == "!" + compute_event_id(create, "12")[1:]
    assert room_id_from_create_event(create, "12") == room_id


def test_v12_room_id_depends_on_additional_creators() -> None:
    plain = room_id_from_create_event(_create_event())
    extra = room_id_from_create_event(_create_event(additional_creators=["@bob:example.org"]))
    assert plain != extra


def test_room_id_from_create_event_rejections() -> None:
    with pytest.raises(ValueError):
        room_id_from_create_event(_create_event(), "11")
    with pytest.raises(ValueError):
        room_id_from_create_event({**_create_event(), "room_id": "!x:example.org"})
    with pytest.raises(ValueError):
        room_id_from_create_event({**_create_event(), "type": "m.room.member"})
