"""Tests for crypto.keys."""

from __future__ import annotations

import re

import pytest

from crypto.base64 import decode_base64, encode_base64
from crypto.keys import (
    KeyFormatError,
    decode_verify_key,
    encode_signing_key_seed,
    encode_verify_key,
    format_signing_key_file,
    generate_key_version,
    generate_signing_key,
    get_verify_key,
    key_id_of,
    make_key_id,
    parse_key_id,
    parse_signing_key_file,
    signing_key_from_seed,
)

# content/appendices.md "Signing Key" test vector seed.
SPEC_SIGNING_KEY_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"


def test_generate_signing_key_has_alg_and_version() -> None:
    key = generate_signing_key("abc_1")
    assert key.alg == "ed25519"
    assert key.version == "abc_1"
    assert key_id_of(key) == "ed25519:abc_1"
    assert len(key.encode()) == 32


def test_generated_keys_are_random() -> None:
    assert generate_signing_key("1").encode() != generate_signing_key("1").encode()


def test_generated_version_is_valid_and_synapse_style() -> None:
    version = generate_key_version()
    assert re.fullmatch(r"a_[A-Za-z]{4}", version)
    assert generate_signing_key().version.startswith("a_")


def test_make_and_parse_key_id() -> None:
    assert make_key_id("a_AbCd") == "ed25519:a_AbCd"
    assert parse_key_id("ed25519:a_AbCd") == ("ed25519", "a_AbCd")


@pytest.mark.parametrize("bad", ["ed25519", "ed25519:", ":1", "ed25519:a b", "ed25519:a-b"])
def test_parse_key_id_rejects_malformed(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_key_id(bad)


@pytest.mark.parametrize("bad", ["", "has space", "dash-ed", "ü"])
def test_invalid_versions_rejected(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        make_key_id(bad)
    with pytest.raises(KeyFormatError):
        generate_signing_key(bad)


def test_signing_key_from_seed_requires_32_bytes() -> None:
    with pytest.raises(KeyFormatError):
        signing_key_from_seed(b"\x00" * 31, "1")


def test_seed_round_trip() -> None:
    seed = decode_base64(SPEC_SIGNING_KEY_SEED)
    key = signing_key_from_seed(seed, "1")
    # The spec's seed string has non-zero trailing bits ("...A1"); the canonical
    # re-encoding of the same 32 bytes ends in "...A0".
    assert encode_signing_key_seed(key) == SPEC_SIGNING_KEY_SEED[:-1] + "0"
    assert decode_base64(encode_signing_key_seed(key)) == seed


def test_verify_key_encode_decode_round_trip() -> None:
    key = generate_signing_key("k1")
    verify_key = get_verify_key(key)
    assert verify_key.version == "k1" and verify_key.alg == "ed25519"
    encoded = encode_verify_key(verify_key)
    assert "=" not in encoded and len(encoded) == 43
    decoded = decode_verify_key("ed25519:k1", encoded)
    assert decoded.encode() == verify_key.encode()
    assert key_id_of(decoded) == "ed25519:k1"
    # Padded input is tolerated.
    assert decode_verify_key("ed25519:k1", encoded + "=").encode() == verify_key.encode()


def test_decode_verify_key_rejects_bad_input() -> None:
    good = encode_verify_key(get_verify_key(generate_signing_key("1")))
    with pytest.raises(KeyFormatError):
        decode_verify_key("ed25519:1", "not base64!")
    with pytest.raises(KeyFormatError):
        decode_verify_key("ed25519:1", encode_base64(b"\x01" * 31))
    with pytest.raises(KeyFormatError):
        decode_verify_key("curve25519:1", good)
    with pytest.raises(KeyFormatError):
        decode_verify_key("nocolon", good)


def test_key_file_round_trip() -> None:
    keys = [generate_signing_key("a_one"), generate_signing_key("a_two")]
    text = format_signing_key_file(keys)
    lines = text.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"ed25519 a_one [A-Za-z0-9+/]{43}", lines[0])
    parsed = parse_signing_key_file(text)
    assert [k.version for k in parsed] == ["a_one", "a_two"]
    assert [k.encode() for k in parsed] == [k.encode() for k in keys]


def test_parse_synapse_key_file() -> None:
    text = f"ed25519 a_AbCd {SPEC_SIGNING_KEY_SEED}\n\n"
    (key,) = parse_signing_key_file(text)
    assert key.version == "a_AbCd"
    assert key.encode() == decode_base64(SPEC_SIGNING_KEY_SEED)


def test_parse_key_file_accepts_line_iterable_and_padding() -> None:
    lines = [f"ed25519 1 {SPEC_SIGNING_KEY_SEED}=\n"]
    (key,) = parse_signing_key_file(lines)
    assert key.encode() == decode_base64(SPEC_SIGNING_KEY_SEED)


@pytest.mark.parametrize(
    "line",
    [
        f"ed25519 {SPEC_SIGNING_KEY_SEED}",  # missing version
        f"ed25519 1 {SPEC_SIGNING_KEY_SEED} extra",  # too many fields
        f"rsa 1 {SPEC_SIGNING_KEY_SEED}",  # unsupported algorithm
        "ed25519 1 !!!notbase64!!!",  # bad base64
        f"ed25519 1 {encode_base64(b'x' * 16)}",  # wrong seed length
        f"ed25519 bad-version {SPEC_SIGNING_KEY_SEED}",  # bad version
    ],
)
def test_parse_key_file_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_signing_key_file(line + "\n")
