"""Tests for crypto.base64."""

from __future__ import annotations

import pytest

from crypto.base64 import (
    Base64DecodeError,
    decode_base64,
    decode_urlsafe_base64,
    encode_base64,
    encode_urlsafe_base64,
)

# content/appendices.md "Unpadded Base64" examples.
SPEC_EXAMPLES = [
    (b"", ""),
    (b"f", "Zg"),
    (b"fo", "Zm8"),
    (b"foo", "Zm9v"),
    (b"foob", "Zm9vYg"),
    (b"fooba", "Zm9vYmE"),
    (b"foobar", "Zm9vYmFy"),
]


@pytest.mark.parametrize("raw,encoded", SPEC_EXAMPLES)
def test_encode_matches_spec_examples(raw: bytes, encoded: str) -> None:
    assert encode_base64(raw) == encoded
    assert encode_urlsafe_base64(raw) == encoded


@pytest.mark.parametrize("raw,encoded", SPEC_EXAMPLES)
def test_decode_matches_spec_examples(raw: bytes, encoded: str) -> None:
    assert decode_base64(encoded) == raw
    assert decode_urlsafe_base64(encoded) == raw


@pytest.mark.parametrize("padded,raw", [("Zg==", b"f"), ("Zm8=", b"fo"), ("Zm9v", b"foo")])
def test_decoding_tolerates_padding(padded: str, raw: bytes) -> None:
    assert decode_base64(padded) == raw
    assert decode_urlsafe_base64(padded) == raw


def test_standard_and_urlsafe_alphabets_differ() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF])
    assert encode_base64(raw) == "+/+/"
    assert encode_urlsafe_base64(raw) == "-_-_"
    assert decode_base64("+/+/") == raw
    assert decode_urlsafe_base64("-_-_") == raw


def test_encode_never_pads() -> None:
    for n in range(10):
        assert "=" not in encode_base64(b"x" * n)
        assert "=" not in encode_urlsafe_base64(b"x" * n)


def test_accepts_bytes_input() -> None:
    assert decode_base64(b"Zm9v") == b"foo"


@pytest.mark.parametrize(
    "bad",
    [
        "Zm9v!",  # invalid character
        "Z",  # impossible length
        "Zm9vY",  # impossible length
        "Zg===",  # too much padding
        "Zg=a",  # padding inside the data
        "Zm 9v",  # whitespace
        "-_-_",  # URL-safe characters in standard base64
    ],
)
def test_decode_base64_rejects_bad_input(bad: str) -> None:
    with pytest.raises(Base64DecodeError):
        decode_base64(bad)


@pytest.mark.parametrize("bad", ["+/+/", "Zm9v!", "Z", "Zg=a"])
def test_decode_urlsafe_base64_rejects_bad_input(bad: str) -> None:
    with pytest.raises(Base64DecodeError):
        decode_urlsafe_base64(bad)


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_base64("!!!!")


def test_rejects_non_string_input() -> None:
    with pytest.raises(Base64DecodeError):
        decode_base64(1234)  # type: ignore[arg-type]


def test_decoding_tolerates_nonzero_trailing_bits() -> None:
    # The spec's test-vector seed "...XA1" relies on this: its last character
    # carries bits that the 32-byte value does not use.
    seed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
    assert len(decode_base64(seed)) == 32
    assert decode_base64(seed) == decode_base64(seed[:-1] + "0")
