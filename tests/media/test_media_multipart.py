"""The multipart/mixed answers of the federation media endpoints: what we send parses, and what
other servers may send (other boundaries, LF line ends, preambles, redirects) parses too, while
anything that is not the spec's two parts is refused."""

from __future__ import annotations

import os

import pytest

from homeserver.media.multipart import (MultipartError, boundary_of, encode_media, filename_of,
                                        new_boundary, parse_media)


@pytest.mark.parametrize("data", [b"", b"hello", b"\r\n--\r\n", os.urandom(100_000),
                                  b"ends with a line break\r\n"])
def test_round_trip(data: bytes) -> None:
    ctype, body = encode_media(data, "image/png", 'inline; filename="a.png"')
    assert ctype.startswith("multipart/mixed; boundary=")
    part = parse_media(ctype, body)
    assert part.metadata == {}
    assert part.content == data
    assert part.content_type == "image/png"
    assert part.content_disposition == 'inline; filename="a.png"'
    assert part.location is None


def test_exact_wire_form() -> None:
    ctype, body = encode_media(b"BYTES", "text/plain", "inline", boundary="b0undary")
    assert ctype == "multipart/mixed; boundary=b0undary"
    assert body == (b"--b0undary\r\nContent-Type: application/json\r\n\r\n{}\r\n"
                    b"--b0undary\r\nContent-Type: text/plain\r\nContent-Disposition: inline\r\n"
                    b"\r\nBYTES\r\n--b0undary--\r\n")


def test_location_part() -> None:
    ctype, body = encode_media(None, None, location="https://cdn.example/x?sig=1")
    part = parse_media(ctype, body)
    assert part.location == "https://cdn.example/x?sig=1" and part.content is None
    with pytest.raises(ValueError):
        encode_media(b"x", "text/plain", location="https://a/")
    with pytest.raises(ValueError):
        encode_media(None, "text/plain")


def test_boundary_never_occurs_in_the_content(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["deadbeef", "deadbeef", "cafe"])
    monkeypatch.setattr("homeserver.media.multipart.secrets.token_hex", lambda n: next(drawn))
    assert new_boundary(avoid=b"...deadbeef...") == "cafe"
    data = b"x\r\n--deadbeef\r\ny"
    again = iter(["deadbeef", "f00d"])
    monkeypatch.setattr("homeserver.media.multipart.secrets.token_hex", lambda n: next(again))
    ctype, body = encode_media(data, "text/plain")
    assert ctype.endswith("boundary=f00d")
    assert parse_media(ctype, body).content == data


def test_what_other_servers_may_send() -> None:
    # A quoted boundary, a preamble, LF line ends in the headers, extra headers and
    # whitespace after the delimiter, metadata with fields, and an epilogue.
    body = (b"preamble text\r\n--a b'c\t \r\ncontent-type: application/json; charset=utf-8\n\n"
            b'{"future": 1}\r\n--a b\'c\r\nX-Other: 1\r\nContent-Type: image/gif\r\n'
            b"Content-Disposition: attachment;\r\n filename*=utf-8''%C3%A9t%C3%A9.gif\r\n\r\n"
            b"GIF89a\r\n--a b'c--\r\nepilogue")
    part = parse_media('multipart/mixed; boundary="a b\'c"', body)
    assert part.metadata == {"future": 1}
    assert part.content == b"GIF89a"
    assert part.content_type == "image/gif"
    assert filename_of(part.content_disposition) == "été.gif"
    assert part.headers["x-other"] == "1"


@pytest.mark.parametrize("ctype", [None, "application/json", "multipart/mixed",
                                   "multipart/mixed; boundary=", "multipart/form-data; boundary=a",
                                   "multipart/mixed; boundary=" + "x" * 71])
def test_bad_content_types(ctype: str | None) -> None:
    with pytest.raises(MultipartError):
        boundary_of(ctype)


def test_boundary_parameter_forms() -> None:
    assert boundary_of("multipart/mixed; boundary=abc") == "abc"
    assert boundary_of('Multipart/Mixed; charset=x; Boundary="a:b"') == "a:b"


B = "multipart/mixed; boundary=bb"
META = b"--bb\r\nContent-Type: application/json\r\n\r\n{}\r\n"


@pytest.mark.parametrize("body", [
    b"",                                                       # nothing
    b"no delimiter at all",
    META + b"--bb--\r\n",                                      # one part
    META + b"--bb\r\n\r\nx\r\n--bb\r\n\r\ny\r\n--bb--\r\n",    # three parts
    META + b"--bb\r\nContent-Type: text/plain\r\n\r\nunterminated",
    META + b"--bbX\r\n\r\nx\r\n--bb--",                        # a longer, different boundary
    b"--bb\r\nContent-Type: text/plain\r\n\r\n{}\r\n--bb\r\n\r\nx\r\n--bb--",  # metadata type
    b"--bb\r\nContent-Type: application/json\r\n\r\n[]\r\n--bb\r\n\r\nx\r\n--bb--",  # not object
    b"--bb\r\nContent-Type: application/json\r\n\r\n{x\r\n--bb\r\n\r\nx\r\n--bb--",  # not JSON
    META + b"--bb\r\nno colon here\r\n\r\nx\r\n--bb--",        # a malformed header
])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse_media(B, body)


@pytest.mark.parametrize("header, name", [
    (None, None),
    ("inline", None),
    ('attachment; filename="a b.txt"', "a b.txt"),
    ("attachment; filename=plain.txt", "plain.txt"),
    ('attachment; filename="q\\"uote"', 'q"uote'),
    ("attachment; filename=\"fallback\"; filename*=UTF-8''%E2%82%AC.txt", "€.txt"),
    ("attachment; filename*=utf-8''%FF", None),                # not UTF-8: ignored
    ("attachment; filename=\"\"", None),
])
def test_filename_of(header: str | None, name: str | None) -> None:
    assert filename_of(header) == name
