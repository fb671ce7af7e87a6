"""crypto/key_checks.py with real Olm device keys and ed25519 cross-signing keys."""

from __future__ import annotations

import copy

import pytest

from crypto.key_checks import (InvalidSignature, KeyCheckError, check_cross_signing_key,
                               check_device_keys, check_signed_key_object, device_ed25519_key,
                               same_signed_content, verify_signature)
from tests.e2ee.test_keys_helpers import CrossSigning, Device, SigningKey

USER = "@alice:test.local"


def test_olm_device_keys_verify_and_return_the_ed25519_key() -> None:
    dev = Device(USER, "DEV1")
    keys = dev.device_keys()
    assert check_device_keys(keys, USER, "DEV1") == dev.ed25519
    assert device_ed25519_key(keys) == dev.ed25519


@pytest.mark.parametrize("mutate", [
    lambda k: k["keys"].__setitem__("curve25519:DEV1", Device(USER, "X").account.identity_keys["curve25519"]),
    lambda k: k.__setitem__("algorithms", ["m.megolm.v1.aes-sha2"]),
    lambda k: k.__setitem__("extra", 1),
])
def test_any_change_to_signed_device_keys_breaks_the_signature(mutate) -> None:  # type: ignore[no-untyped-def]
    keys = Device(USER, "DEV1").device_keys()
    mutate(keys)
    with pytest.raises(InvalidSignature):
        check_device_keys(keys, USER, "DEV1")


def test_unsigned_data_is_not_covered_by_the_signature() -> None:
    keys = Device(USER, "DEV1").device_keys()
    keys["unsigned"] = {"device_display_name": "phone"}
    check_device_keys(keys, USER, "DEV1")


def test_device_keys_signed_by_another_device_are_refused() -> None:
    keys = Device(USER, "DEV1").device_keys()
    other = Device(USER, "DEV1")
    keys["signatures"] = other.sign({k: v for k, v in keys.items() if k != "signatures"})["signatures"]
    with pytest.raises(InvalidSignature):
        check_device_keys(keys, USER, "DEV1")


@pytest.mark.parametrize("mutate,message", [
    (lambda k: k.__setitem__("user_id", "@bob:test.local"), "user_id"),
    (lambda k: k.__setitem__("device_id", "OTHER"), "device_id"),
    (lambda k: k.__setitem__("algorithms", "m.megolm.v1.aes-sha2"), "algorithms"),
    (lambda k: k.__setitem__("keys", {}), "keys"),
    (lambda k: k["keys"].__setitem__("ed25519:OTHER", "abc"), "ed25519:OTHER"),
    (lambda k: k["keys"].__setitem__("curve25519:DEV1", "not base64!"), "base64"),
    (lambda k: k["keys"].__setitem__("curve25519:DEV1", "AAAA"), "32-byte"),
    (lambda k: k["keys"].pop("ed25519:DEV1"), "ed25519:DEV1"),
    (lambda k: k.pop("signatures"), "signatures"),
    (lambda k: k.__setitem__("signatures", {USER: "sig"}), "signatures"),
])
def test_malformed_device_keys(mutate, message) -> None:  # type: ignore[no-untyped-def]
    keys = Device(USER, "DEV1").device_keys()
    mutate(keys)
    with pytest.raises(KeyCheckError, match=message):
        check_device_keys(keys, USER, "DEV1")


def test_device_keys_must_be_an_object() -> None:
    with pytest.raises(KeyCheckError):
        check_device_keys(["not", "an", "object"], USER, "DEV1")


def test_one_time_and_fallback_keys_signed_by_the_device() -> None:
    dev = Device(USER, "DEV1")
    for name, value in {**dev.one_time_keys(3), **dev.fallback_key()}.items():
        check_signed_key_object(name, value, USER, "DEV1", dev.ed25519)


def test_one_time_key_with_a_bad_signature_or_shape() -> None:
    dev, other = Device(USER, "DEV1"), Device(USER, "DEV1")
    name, value = next(iter(dev.one_time_keys(1).items()))
    with pytest.raises(InvalidSignature):
        check_signed_key_object(name, value, USER, "DEV1", other.ed25519)
    tampered = copy.deepcopy(value)
    tampered["key"] = other.account.identity_keys["curve25519"]
    with pytest.raises(InvalidSignature):
        check_signed_key_object(name, tampered, USER, "DEV1", dev.ed25519)
    with pytest.raises(KeyCheckError, match="32-byte"):
        check_signed_key_object(name, {**value, "key": "AAAA"}, USER, "DEV1", dev.ed25519)
    with pytest.raises(KeyCheckError, match="object"):
        check_signed_key_object(name, "a string", USER, "DEV1", dev.ed25519)
    with pytest.raises(KeyCheckError, match="fallback"):
        check_signed_key_object(name, {**value, "fallback": "yes"}, USER, "DEV1", dev.ed25519)
    unsigned = {"key": value["key"]}
    with pytest.raises(KeyCheckError):
        check_signed_key_object(name, unsigned, USER, "DEV1", dev.ed25519)


def test_cross_signing_keys() -> None:
    cs = CrossSigning(USER)
    assert check_cross_signing_key(cs.master_key(), USER, "master") == cs.master.key_id
    ssk = cs.self_signing_key()
    assert check_cross_signing_key(ssk, USER, "self_signing") == cs.self_signing.key_id
    verify_signature(ssk, USER, cs.master.key_id, cs.master.public)
    with pytest.raises(InvalidSignature):
        verify_signature(ssk, USER, cs.master.key_id, SigningKey().public)
    with pytest.raises(InvalidSignature, match="signature"):
        verify_signature(cs.master_key(), USER, cs.master.key_id, cs.master.public)


@pytest.mark.parametrize("mutate,message", [
    (lambda k: k.__setitem__("user_id", "@bob:test.local"), "user_id"),
    (lambda k: k.__setitem__("usage", ["self_signing"]), "usage"),
    (lambda k: k.__setitem__("usage", "master"), "usage"),
    (lambda k: k.__setitem__("keys", {}), "exactly one"),
    (lambda k: k["keys"].__setitem__("ed25519:" + SigningKey().public, SigningKey().public), "exactly one"),
    (lambda k: k.__setitem__("keys", {"curve25519:abc": "abc"}), "ed25519"),
    (lambda k: k.__setitem__("keys", {"ed25519:" + SigningKey().public: SigningKey().public}), "public key"),
    (lambda k: k.__setitem__("keys", {"ed25519:AAAA": "AAAA"}), "32-byte"),
    (lambda k: k.__setitem__("signatures", []), "signatures"),
])
def test_malformed_cross_signing_keys(mutate, message) -> None:  # type: ignore[no-untyped-def]
    key = CrossSigning(USER).master_key()
    mutate(key)
    with pytest.raises(KeyCheckError, match=message):
        check_cross_signing_key(key, USER, "master")


def test_same_signed_content_ignores_signatures_and_unsigned() -> None:
    dev = Device(USER, "DEV1")
    keys = dev.device_keys()
    cs = CrossSigning(USER)
    signed = cs.sign_device(keys)
    signed["unsigned"] = {"device_display_name": "x"}
    assert same_signed_content(keys, signed)
    signed["algorithms"] = []
    assert not same_signed_content(keys, signed)
