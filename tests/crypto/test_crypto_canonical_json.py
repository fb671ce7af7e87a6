"""Tests for crypto.canonical_json."""

from __future__ import annotations

import json

import pytest

from crypto.canonical_json import (
    MAX_SAFE_INTEGER,
    MIN_SAFE_INTEGER,
    CanonicalJsonError,
    check_canonical_json,
    encode_canonical_json,
)

# content/appendices.md "Canonical JSON" examples (input text, expected output text).
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {
        "display_name": "John Doe", "three_pids": [
        {"medium": "email", "address": "john.doe@example.org"},
        {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0}', '{"a":0}'),
]


@pytest.mark.parametrize("source,expected", SPEC_EXAMPLES)
def test_spec_examples(source: str, expected: str) -> None:
    assert encode_canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_output_is_utf8_not_escaped() -> None:
    assert encode_canonical_json({"a": "é"}) == '{"a":"é"}'.encode("utf-8")


def test_error_is_value_error_subclass() -> None:
    assert issubclass(CanonicalJsonError, ValueError)


@pytest.mark.parametrize("value", [1.5, 1.0, -0.0, 1e10, float("nan"), float("inf"), float("-inf")])
def test_rejects_floats(value: float) -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": value})


def test_rejects_nested_float() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": {"b": [1, 2, {"c": 0.5}]}})


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER, MIN_SAFE_INTEGER, 0, -1])
def test_accepts_integers_in_range(value: int) -> None:
    assert encode_canonical_json({"a": value}) == b'{"a":%d}' % value


def test_range_bounds_match_spec() -> None:
    assert MAX_SAFE_INTEGER == 2**53 - 1
    assert MIN_SAFE_INTEGER == -(2**53) + 1


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**63, -(2**64)])
def test_rejects_integers_out_of_range(value: int) -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": [value]})


def test_booleans_are_not_numbers() -> None:
    assert encode_canonical_json([True, False]) == b"[true,false]"


def test_rejects_non_string_keys() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({1: "a"})


def test_rejects_unencodable_string() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": "\ud800"})


def test_rejects_unsupported_types() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": b"bytes"})


def test_lenient_mode_allows_floats_and_big_ints() -> None:
    assert encode_canonical_json({"a": 50.57, "b": 2**60}, strict=False) == (
        b'{"a":50.57,"b":1152921504606846976}'
    )


def test_lenient_mode_still_rejects_nan() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": float("nan")}, strict=False)


def test_check_canonical_json() -> None:
    check_canonical_json({"a": [1, "x", None]})
    with pytest.raises(CanonicalJsonError):
        check_canonical_json({"a": 0.1})


def test_tuples_encode_as_arrays() -> None:
    assert encode_canonical_json({"a": (1, 2)}) == b'{"a":[1,2]}'
