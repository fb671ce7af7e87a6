"""The multipart/mixed body of the federation media endpoints (spec, server-server API,
"Content Repository"; RFC 2046 section 5.1).

Exactly two parts: a JSON metadata object (``{}`` today), then either the media bytes with
their own Content-Type and Content-Disposition, or a ``Location`` header naming where the
bytes can be fetched. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from homeserver.media.types import DEFAULT_CONTENT_TYPE

CRLF = b"\r\n"
MAX_PART_HEADERS = 16 * 1024
# RFC 2046: 1 to 70 characters from this set (the space may not be last).
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class MultipartError(ValueError):
    """The body is not the two-part multipart/mixed answer the spec describes."""


@dataclass(frozen=True)
class MediaPart:
    """What a federation media answer carries."""
    metadata: dict[str, Any]
    content_type: str | None = None
    content_disposition: str | None = None
    content: bytes | None = None     # None when the part redirects
    location: str | None = None      # the URL to fetch the bytes from instead
    headers: dict[str, str] = field(default_factory=dict)


def new_boundary(avoid: bytes = b"") -> str:
    """A random boundary that does not occur in ``avoid``."""
    while True:
        boundary = secrets.token_hex(16)
        if boundary.encode("ascii") not in avoid:
            return boundary


def encode_media(content: bytes | None, content_type: str | None,
                 content_disposition: str | None = None, *, location: str | None = None,
                 metadata: dict[str, Any] | None = None,
                 boundary: str | None = None) -> tuple[str, bytes]:
    """(the response's Content-Type header, the body) for bytes or for a ``location``."""
    if (content is None) == (location is None):
        raise ValueError("give either content or a location")
    boundary = boundary or new_boundary(content or b"")
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"invalid boundary {boundary!r}")
    delimiter = b"--" + boundary.encode("ascii")
    meta = json.dumps(metadata or {}, separators=(",", ":")).encode("utf-8")
    second: list[bytes] = []
    if location is not None:
        second.append(b"Location: " + location.encode("ascii"))
    else:
        second.append(b"Content-Type: " + (content_type or DEFAULT_CONTENT_TYPE).encode("latin-1"))
        if content_disposition:
            second.append(b"Content-Disposition: " + content_disposition.encode("ascii"))
    body = b"".join([
        delimiter, CRLF, b"Content-Type: application/json", CRLF, CRLF, meta, CRLF,
        delimiter, CRLF, CRLF.join(second), CRLF, CRLF, content or b"", CRLF,
        delimiter, b"--", CRLF,
    ])
    return f"multipart/mixed; boundary={boundary}", body


def boundary_of(content_type: str | None) -> str:
    """The boundary parameter of a multipart/mixed Content-Type header."""
    if not content_type:
        raise MultipartError("no Content-Type")
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise MultipartError(f"Content-Type is {kind.strip()!r}, not multipart/mixed")
    for name, value in _params(params):
        if name == "boundary":
            if not _BOUNDARY.fullmatch(value):
                raise MultipartError("invalid boundary")
            return value
    raise MultipartError("multipart/mixed without a boundary")


def _params(text: str) -> list[tuple[str, str]]:
    """``; a=b; c="d e"`` as [(a, b), (c, d e)], names lower-cased."""
    out = []
    for m in re.finditer(r'\s*;?\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)',
                         text):
        value = m.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((m.group(1).lower(), value))
    return out


def _split_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = None
    for line in re.split(rb"\r?\n", block):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and name is not None:  # obsolete line folding
            headers[name] += " " + line.strip().decode("latin-1")
            continue
        key, sep, value = line.partition(b":")
        if not sep or not key.strip():
            raise MultipartError("malformed part header")
        name = key.strip().decode("latin-1").lower()
        headers[name] = value.strip().decode("latin-1")
    return headers


def _parts(boundary: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary.encode("ascii")
    # The first delimiter may start the body; every later one follows a line break.
    if body.startswith(delimiter):
        pos = 0
    else:
        pos = body.find(CRLF + delimiter)
        if pos < 0:
            raise MultipartError("no boundary in the body")
        pos += 2
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        pos += len(delimiter)
        if body[pos:pos + 2] == b"--":
            return parts  # the close delimiter; anything after it is the epilogue
        # Transport padding, then the line break that ends the delimiter line.
        eol = body.find(b"\n", pos)
        if eol < 0 or body[pos:eol].rstrip(b"\r").strip(b" \t"):
            raise MultipartError("malformed boundary line")
        start = eol + 1
        end = body.find(CRLF + delimiter, start)
        if end < 0:
            raise MultipartError("unterminated multipart body")
        part = body[start:end]
        if part.startswith(CRLF) or part.startswith(b"\n"):
            headers, content = {}, part[2 if part.startswith(CRLF) else 1:]
        else:
            m = re.search(rb"\r?\n\r?\n", part)
            if m is None or m.start() > MAX_PART_HEADERS:
                raise MultipartError("part headers do not end")
            headers, content = _split_headers(part[:m.start()]), part[m.end():]
        parts.append((headers, content))
        pos = end + 2


def parse_media(content_type: str | None, body: bytes) -> MediaPart:
    """The metadata and media of a federation media answer; MultipartError if malformed."""
    parts = _parts(boundary_of(content_type), body)
    if len(parts) != 2:
        raise MultipartError(f"expected 2 parts, found {len(parts)}")
    (meta_headers, meta_raw), (headers, content) = parts
    meta_type = meta_headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if meta_type != "application/json":
        raise MultipartError("the first part is not application/json")
    try:
        metadata = json.loads(meta_raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MultipartError("the first part is not JSON") from None
    if not isinstance(metadata, dict):
        raise MultipartError("the metadata is not a JSON object")
    location = headers.get("location")
    if location:
        return MediaPart(metadata, headers.get("content-type"),
                         headers.get("content-disposition"), None, location, headers)
    return MediaPart(metadata, headers.get("content-type"), headers.get("content-disposition"),
                     content, None, headers)


def filename_of(content_disposition: str | None) -> str | None:
    """The file name of a Content-Disposition header (``filename*`` wins, RFC 6266 4.3)."""
    if not content_disposition:
        return None
    _, _, params = content_disposition.partition(";")
    plain = extended = None
    for name, value in _params(params):
        if name == "filename*" and extended is None:
            charset, _, rest = value.partition("'")
            _, _, encoded = rest.partition("'")
            if charset.lower() in ("utf-8", "iso-8859-1") and encoded:
                try:
                    extended = unquote(encoded, encoding=charset, errors="strict")
                except (UnicodeDecodeError, LookupError):
                    pass
        elif name == "filename" and plain is None:
            plain = value
    name = extended if extended is not None else plain
    return name or None
