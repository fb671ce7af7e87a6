"""Pure helpers of the media repository: content types, Content-Disposition, ids, IP checks,
URL checks and OpenGraph parsing."""

from __future__ import annotations

import pytest

from homeserver.api.client.media import content_disposition
from homeserver.config import DEFAULT_PREVIEW_IP_BLACKLIST
from homeserver.http.errors import MatrixError
from homeserver.media.fetch import FetchError, IpBlacklist, check_preview_url
from homeserver.media.ids import MEDIA_ID_LENGTH, check_media_path, new_media_id
from homeserver.media.opengraph import MAX_TAGS, MAX_VALUE, parse_html
from homeserver.media.types import check_filename, clean_content_type, is_inline


@pytest.mark.parametrize("value,expected", [
    (None, "application/octet-stream"), ("image/png", "image/png"),
    ("text/plain; charset=utf-8", "text/plain; charset=utf-8"), ("  image/png ", "image/png"),
    ("nonsense", "application/octet-stream"), ("image/png\r\nX-Evil: 1", "application/octet-stream"),
    ("text/plain; charset=\u00e9", "application/octet-stream"), ("a/" + "b" * 300, "application/octet-stream"),
])
def test_clean_content_type(value: str | None, expected: str) -> None:
    assert clean_content_type(value) == expected


@pytest.mark.parametrize("ctype,inline", [
    ("image/png", True), ("IMAGE/PNG", True), ("text/plain; charset=utf-8", True),
    ("audio/ogg", True), ("text/html", False), ("image/svg+xml", False),
    ("application/xhtml+xml", False), ("text/javascript", False), ("application/pdf", False),
    (None, False), ("", False),
])
def test_inline_types(ctype: str | None, inline: bool) -> None:
    assert is_inline(ctype) is inline


@pytest.mark.parametrize("name,header", [
    (None, "inline"), ("", "inline"), ("a.png", 'inline; filename="a.png"'),
    ("with space.txt", 'inline; filename="with space.txt"'),
    ('quo"te.txt', "inline; filename*=utf-8''quo%22te.txt"),
    ("back\\slash", "inline; filename*=utf-8''back%5Cslash"),
    ("résumé.pdf", "inline; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"),
    ("a\r\nSet-Cookie: x", "inline; filename*=utf-8''a%0D%0ASet-Cookie%3A%20x"),
])
def test_content_disposition(name: str | None, header: str) -> None:
    assert content_disposition("inline", name) == header


def test_filenames() -> None:
    assert check_filename(None) is None and check_filename("") is None
    assert check_filename("ok.txt") == "ok.txt"
    for bad in ("a\x00b", "x" * 1025):
        with pytest.raises(MatrixError) as e:
            check_filename(bad)
        assert e.value.errcode == "M_INVALID_PARAM"


def test_media_ids() -> None:
    ids = {new_media_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == MEDIA_ID_LENGTH and i.isalnum() for i in ids)
    check_media_path("example.org:8448", "abc_DEF-123")
    check_media_path("[::1]", "x")
    for server, media_id in (("example.org", "a/b"), ("example.org", "a.b"), ("ex ample", "a"),
                             ("example.org", ""), ("example.org", "a" * 256), ("", "a")):
        with pytest.raises(MatrixError) as e:
            check_media_path(server, media_id)
        assert e.value.status == 400


@pytest.mark.parametrize("ip,blocked", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("192.168.1.1", True), ("172.31.255.255", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
    ("::1", True), ("::", True), ("fe80::1%eth0", True), ("fd00::1", True),
    ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", True), ("2002:7f00:1::", True),
    ("8.8.8.8", False), ("1.1.1.1", False), ("2606:4700::1111", False),
    ("::ffff:8.8.8.8", False), ("not an ip", True),
])
def test_default_blacklist(ip: str, blocked: bool) -> None:
    assert IpBlacklist(DEFAULT_PREVIEW_IP_BLACKLIST).blocks(ip) is blocked


def test_custom_blacklist() -> None:
    bl = IpBlacklist(["10.0.0.0/8"])
    assert bl.blocks("10.9.9.9") and not bl.blocks("127.0.0.1") and not bl.blocks("::1")


@pytest.mark.parametrize("url,ok", [
    ("https://example.com/", True), ("http://example.com:8080/a?b=c", True),
    ("http://[::1]/", True), ("https://exämple.com/ü", True),
    ("ftp://example.com/", False), ("file:///etc/passwd", False), ("example.com", False),
    ("https://", False), ("javascript:alert(1)", False), ("http://exa mple.com/", False),
])
def test_check_preview_url(url: str, ok: bool) -> None:
    if ok:
        check_preview_url(url)
    else:
        with pytest.raises(FetchError):
            check_preview_url(url)


def test_opengraph() -> None:
    html = b"""<html><head><title>  The
      title </title>
      <meta name="description" content="From description">
      <meta property="og:title" content="OG title">
      <meta property="og:image" content="img/a.png">
      <meta property="og:image:width" content="640">
      <meta property="og:image:height" content="lots">
      <meta property="og:title" content="second title ignored">
      </head></html>"""
    og = parse_html(html, "text/html", "https://example.com/dir/page.html")
    assert og == {"og:title": "OG title", "og:description": "From description",
                  "og:image": "https://example.com/dir/img/a.png", "og:image:width": 640}
    og = parse_html(b"<title>Only &amp; title</title>", None, "https://example.com/")
    assert og == {"og:title": "Only & title"}
    assert parse_html(b"", None, "https://example.com/") == {}
    assert parse_html(b"\xff\xfe<<<>>> not html at all", None, "https://example.com/") == {}


def test_opengraph_charsets() -> None:
    latin1 = '<meta property="og:title" content="café">'.encode("latin-1")
    assert parse_html(latin1, "text/html; charset=ISO-8859-1", "https://x/")["og:title"] == "café"
    page = b'<meta charset="windows-1252"><meta property="og:title" content="caf\xe9">'
    assert parse_html(page, "text/html", "https://x/")["og:title"] == "café"
    page = b'<meta property="og:title" content="caf\xc3\xa9">'
    assert parse_html(page, "text/html; charset=bogus", "https://x/")["og:title"] == "café"


def test_opengraph_limits() -> None:
    tags = "".join(f'<meta property="og:k{i}" content="v">' for i in range(MAX_TAGS * 2))
    og = parse_html(tags.encode(), None, "https://x/")
    assert len(og) == MAX_TAGS
    long = f'<meta property="og:title" content="{"x" * (MAX_VALUE * 5)}">'
    assert len(parse_html(long.encode(), None, "https://x/")["og:title"]) == MAX_VALUE
