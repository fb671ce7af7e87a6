"""Tests for crypto.signing, including the spec's JSON signing test vectors."""

from __future__ import annotations

import copy

import pytest

from crypto.base64 import encode_base64
from crypto.keys import SigningKey, VerifyKey, generate_signing_key, get_verify_key
from crypto.signing import SignatureError, sign_json, signable_bytes, verify_json

SPEC_SERVER_NAME = "domain"
SPEC_KEY_ID = "ed25519:1"

# content/appendices.md "JSON Signing" test vectors.
EMPTY_SIGNATURE = (
    "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
)
DATA_SIGNATURE = (
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
)


def test_spec_vector_empty_object(spec_signing_key: SigningKey) -> None:
    signed = sign_json({}, SPEC_SERVER_NAME, spec_signing_key)
    assert signed == {"signatures": {"domain": {"ed25519:1": EMPTY_SIGNATURE}}}


def test_spec_vector_data_object(spec_signing_key: SigningKey) -> None:
    signed = sign_json({"one": 1, "two": "Two"}, SPEC_SERVER_NAME, spec_signing_key)
    assert signed == {
        "one": 1,
        "two": "Two",
        "signatures": {"domain": {"ed25519:1": DATA_SIGNATURE}},
    }


def test_spec_vectors_verify(spec_verify_key: VerifyKey) -> None:
    verify_json({"signatures": {"domain": {SPEC_KEY_ID: EMPTY_SIGNATURE}}}, "domain", spec_verify_key)
    verify_json(
        {"one": 1, "two": "Two", "signatures": {"domain": {SPEC_KEY_ID: DATA_SIGNATURE}}},
        "domain",
        spec_verify_key,
    )


def test_sign_json_mutates_and_returns_same_object(spec_signing_key: SigningKey) -> None:
    obj: dict = {"a": 1}
    assert sign_json(obj, "domain", spec_signing_key) is obj
    assert "domain" in obj["signatures"]


def test_unsigned_is_not_signed_and_is_preserved(
    spec_signing_key: SigningKey, spec_verify_key: VerifyKey
) -> None:
    obj = {"one": 1, "two": "Two", "unsigned": {"age_ts": 5}}
    sign_json(obj, "domain", spec_signing_key)
    assert obj["signatures"]["domain"]["ed25519:1"] == DATA_SIGNATURE
    assert obj["unsigned"] == {"age_ts": 5}
    obj["unsigned"] = {"age_ts": 999, "other": True}
    verify_json(obj, "domain", spec_verify_key)


def test_existing_signatures_are_kept_and_not_signed(spec_signing_key: SigningKey) -> None:
    obj = {"one": 1, "two": "Two", "signatures": {"other.example": {"ed25519:x": "abc"}}}
    sign_json(obj, "domain", spec_signing_key)
    assert obj["signatures"]["other.example"] == {"ed25519:x": "abc"}
    assert obj["signatures"]["domain"]["ed25519:1"] == DATA_SIGNATURE


def test_signable_bytes_strip_signatures_and_unsigned() -> None:
    assert signable_bytes({"b": 1, "signatures": {}, "unsigned": {}, "a": 2}) == b'{"a":2,"b":1}'


def _signed(key: SigningKey) -> dict:
    return sign_json({"content": {"body": "hi"}, "n": 1}, "example.org", key)


def test_round_trip_with_generated_key() -> None:
    key = generate_signing_key("a_test")
    verify_json(_signed(key), "example.org", get_verify_key(key))


def test_tampered_object_fails() -> None:
    key = generate_signing_key("a_test")
    obj = _signed(key)
    obj["content"]["body"] = "bye"
    with pytest.raises(SignatureError):
        verify_json(obj, "example.org", get_verify_key(key))


def test_added_key_fails() -> None:
    key = generate_signing_key("a_test")
    obj = _signed(key)
    obj["extra"] = True
    with pytest.raises(SignatureError):
        verify_json(obj, "example.org", get_verify_key(key))


def test_tampered_signature_fails() -> None:
    key = generate_signing_key("a_test")
    obj = _signed(key)
    sig = bytearray(64)
    obj["signatures"]["example.org"]["ed25519:a_test"] = encode_base64(bytes(sig))
    with pytest.raises(SignatureError):
        verify_json(obj, "example.org", get_verify_key(key))


def test_wrong_key_fails() -> None:
    key = generate_signing_key("a_test")
    other = generate_signing_key("a_test")
    with pytest.raises(SignatureError):
        verify_json(_signed(key), "example.org", get_verify_key(other))


def test_missing_signatures_fails() -> None:
    key = generate_signing_key("a_test")
    with pytest.raises(SignatureError):
        verify_json({"n": 1}, "example.org", get_verify_key(key))


def test_signatures_not_an_object_fails() -> None:
    key = generate_signing_key("a_test")
    with pytest.raises(SignatureError):
        verify_json({"n": 1, "signatures": "nope"}, "example.org", get_verify_key(key))


def test_wrong_signer_fails() -> None:
    key = generate_signing_key("a_test")
    with pytest.raises(SignatureError):
        verify_json(_signed(key), "elsewhere.org", get_verify_key(key))


def test_wrong_key_id_fails() -> None:
    key = generate_signing_key("a_test")
    obj = _signed(key)
    obj["signatures"]["example.org"] = {"ed25519:other": obj["signatures"]["example.org"]["ed25519:a_test"]}
    with pytest.raises(SignatureError):
        verify_json(obj, "example.org", get_verify_key(key))


@pytest.mark.parametrize("bad", ["not*base64", "Z", 12345, None, "AAAA"])
def test_bad_signature_encoding_fails(bad: object) -> None:
    key = generate_signing_key("a_test")
    obj = _signed(key)
    obj["signatures"]["example.org"]["ed25519:a_test"] = bad
    with pytest.raises(SignatureError):
        verify_json(obj, "example.org", get_verify_key(key))


def test_padded_signature_is_accepted() -> None:
    key = generate_signing_key("a_test")
    obj = _signed(key)
    obj["signatures"]["example.org"]["ed25519:a_test"] += "=="
    verify_json(obj, "example.org", get_verify_key(key))


def test_non_canonical_object_fails_verification() -> None:
    key = generate_signing_key("a_test")
    obj = sign_json({"x": 1.5}, "example.org", key, strict=False)
    verify_json(copy.deepcopy(obj), "example.org", get_verify_key(key), strict=False)
    with pytest.raises(SignatureError):
        verify_json(obj, "example.org", get_verify_key(key))


def test_signature_error_is_value_error() -> None:
    assert issubclass(SignatureError, ValueError)
