"""Strict JSON bodies: UTF-8, no BOM, no NaN/Infinity, a depth limit, no lone surrogates;
typed accessors with the spec's errcodes."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.http.errors import MatrixError
from homeserver.http.jsonbody import JsonObject, parse_json


def errcode_of(fn: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(MatrixError) as exc:
        fn(*args, **kwargs)
    return exc.value.status, exc.value.errcode


def nest(depth: int, kind: str = "list") -> bytes:
    """``depth`` containers, one inside the other, around a number."""
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    # alternating, starting with an object
    out, close = b"", b""
    for i in range(depth):
        out, close = (out + b'{"a":', b"}" + close) if i % 2 == 0 else (out + b"[", b"]" + close)
    return out + b"1" + close


@pytest.mark.parametrize("raw,value", [
    (b'{}', {}),
    (b' \n{"a": [1, 2.5, -3e2, true, false, null, "x"]}\t', {"a": [1, 2.5, -300.0, True, False, None, "x"]}),
    ('{"n": "Zo\u00eb \u20ac \U0001f600"}'.encode("utf-8"), {"n": "Zo\u00eb \u20ac \U0001f600"}),
    (b'{"e": "\\u00e9\\ud83d\\ude00"}', {"e": "\u00e9\U0001f600"}),     # a surrogate pair is fine
    (b'[1]', [1]),
    (b'"s"', "s"),
    (b'1e308', 1e308),
    (b'{"a": 1, "a": 2}', {"a": 2}),
    (b'12345678901234567890', 12345678901234567890),
])
def test_valid_json_parses(raw: bytes, value: Any) -> None:
    assert parse_json(raw) == value


@pytest.mark.parametrize("raw", [
    pytest.param(b"", id="empty"),
    pytest.param(b"   ", id="blank"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"{} x", id="trailing-garbage"),
    pytest.param(b"{'a': 1}", id="single-quotes"),
    pytest.param(b'{"a": 1,}', id="trailing-comma"),
    pytest.param(b'{"a": 01}', id="leading-zero"),
    pytest.param(b'{"a": "\x01"}', id="raw-control-char"),
    pytest.param(b"\xff{}", id="invalid-utf8"),
    pytest.param(b'{"a": "\xc3"}', id="truncated-utf8"),
    pytest.param(b'{"a": "\xc0\xaf"}', id="overlong-utf8"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param('{"a": 1}'.encode("utf-16"), id="utf16"),
    pytest.param(b"\xef\xbb\xbf{}", id="bom"),
    pytest.param(b'{"a": NaN}', id="nan"),
    pytest.param(b'{"a": Infinity}', id="infinity"),
    pytest.param(b'{"a": -Infinity}', id="minus-infinity"),
    pytest.param(b'{"a": 1e400}', id="overflow-to-infinity"),
    pytest.param(b'{"a": -1e400}', id="overflow-to-minus-infinity"),
    pytest.param(b'{"a": ' + b"1" * 5000 + b"}", id="int-too-many-digits"),
    pytest.param(b'{"a": "\\ud800"}', id="lone-high-surrogate"),
    pytest.param(b'{"a": "\\udc00x"}', id="lone-low-surrogate"),
    pytest.param(b'{"a": "\\ude00\\ud83d"}', id="reversed-pair"),
    pytest.param(b'{"\\ud800": 1}', id="lone-surrogate-in-key"),
    pytest.param(b'{"a": [{"b": ["\\udfff"]}]}', id="lone-surrogate-nested"),
    pytest.param(b'{"a": "\\u12"}', id="short-escape"),
])
def test_invalid_json_is_m_not_json(raw: bytes) -> None:
    assert errcode_of(parse_json, raw) == (400, "M_NOT_JSON")


@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
@pytest.mark.parametrize("limit", [2, 10, 100])
def test_depth_limit_is_exact(kind: str, limit: int) -> None:
    assert parse_json(nest(limit, kind), max_depth=limit) is not None
    assert errcode_of(parse_json, nest(limit + 1, kind), max_depth=limit) == (400, "M_NOT_JSON")


def test_depth_counts_containers_not_scalars() -> None:
    assert parse_json(b'{"a": "deep", "b": 1, "c": null}', max_depth=1) == {"a": "deep", "b": 1,
                                                                         "c": None}
    assert errcode_of(parse_json, b'{"a": {}}', max_depth=1) == (400, "M_NOT_JSON")
    assert errcode_of(parse_json, b'{"a": []}', max_depth=1) == (400, "M_NOT_JSON")
    # Wide is not deep.
    assert len(parse_json(b"[" + b",".join([b"[1]"] * 10000) + b"]", max_depth=2)) == 10000


@pytest.mark.parametrize("depth", [1000, 100_000, 1_000_000])
def test_absurd_nesting_is_m_not_json_not_a_crash(depth: int) -> None:
    assert errcode_of(parse_json, nest(depth)) == (400, "M_NOT_JSON")
    assert errcode_of(parse_json, b"[" * depth) == (400, "M_NOT_JSON")


@pytest.mark.parametrize("data", [[], [1], "s", 1, 1.5, True, None])
def test_json_object_requires_an_object(data: Any) -> None:
    assert errcode_of(JsonObject, data) == (400, "M_BAD_JSON")


BODY = JsonObject({"s": "text", "e": "", "b": False, "i": 0, "big": 2**60, "f": 1.0, "d": {},
                   "l": [], "sl": ["a", "b"], "ml": ["a", 1], "n": None, "u": "\u20ac\u20ac"})


@pytest.mark.parametrize("method,key,kwargs,result", [
    ("str", "s", {}, "text"),
    ("str", "e", {}, ""),
    ("str", "u", {"max_length": 2}, "\u20ac\u20ac"),   # characters, not bytes
    ("str", "s", {"max_length": 4}, "text"),
    ("str", "absent", {}, None),
    ("str", "absent", {"default": "dflt"}, "dflt"),
    ("str", "n", {"default": "dflt"}, "dflt"),         # null counts as absent when optional
    ("bool", "b", {"required": True}, False),
    ("int", "i", {"required": True}, 0),
    ("int", "big", {}, 2**60),
    ("dict", "d", {}, {}),
    ("list", "l", {}, []),
    ("list", "sl", {}, ["a", "b"]),
    ("str_list", "sl", {"required": True}, ["a", "b"]),
    ("str_list", "l", {}, []),
    ("str_list", "absent", {"default": []}, []),
])
def test_accessors_return_values(method: str, key: str, kwargs: dict, result: Any) -> None:
    assert getattr(BODY, method)(key, **kwargs) == result


@pytest.mark.parametrize("method,key,kwargs,errcode", [
    ("str", "absent", {"required": True}, "M_MISSING_PARAM"),
    ("bool", "absent", {"required": True}, "M_MISSING_PARAM"),
    ("int", "absent", {"required": True}, "M_MISSING_PARAM"),
    ("dict", "absent", {"required": True}, "M_MISSING_PARAM"),
    ("list", "absent", {"required": True}, "M_MISSING_PARAM"),
    ("str_list", "absent", {"required": True}, "M_MISSING_PARAM"),
    ("str", "i", {}, "M_INVALID_PARAM"),
    ("str", "d", {}, "M_INVALID_PARAM"),
    ("str", "n", {"required": True}, "M_INVALID_PARAM"),   # present, but null is not a string
    ("str", "s", {"max_length": 3}, "M_INVALID_PARAM"),
    ("bool", "i", {}, "M_INVALID_PARAM"),                   # 0 is not false
    ("bool", "s", {}, "M_INVALID_PARAM"),
    ("int", "b", {}, "M_INVALID_PARAM"),                    # false is not 0
    ("int", "f", {}, "M_INVALID_PARAM"),                    # 1.0 is not an integer
    ("int", "s", {}, "M_INVALID_PARAM"),
    ("dict", "l", {}, "M_INVALID_PARAM"),
    ("list", "d", {}, "M_INVALID_PARAM"),
    ("list", "s", {}, "M_INVALID_PARAM"),
    ("str_list", "ml", {}, "M_INVALID_PARAM"),
    ("str_list", "s", {}, "M_INVALID_PARAM"),
])
def test_accessors_raise_spec_errcodes(method: str, key: str, kwargs: dict, errcode: str) -> None:
    with pytest.raises(MatrixError) as exc:
        getattr(BODY, method)(key, **kwargs)
    assert (exc.value.status, exc.value.errcode) == (400, errcode)
    assert key in exc.value.message   # the client learns which field is wrong


def test_contains() -> None:
    assert "s" in BODY and "n" in BODY and "absent" not in BODY
