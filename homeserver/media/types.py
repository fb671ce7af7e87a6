"""Content types: which uploads are safe to show inline, and cleaning what clients send."""

from __future__ import annotations

import re

from homeserver.http.errors import MatrixError

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Spec, "Serving inline content": the types a server may serve with Content-Disposition: inline.
# Everything else (HTML, SVG, XML, JavaScript, PDF, ...) could run script or be mistaken for a
# page of this origin, so it is served as an attachment.
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
    "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})

# RFC 9110 media type: token "/" token, then parameters; printable ASCII only.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(_TOKEN + "/" + _TOKEN + r"(\s*;[\x20-\x7e]*)?")
MAX_CONTENT_TYPE = 255
MAX_FILENAME_BYTES = 1024


def base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_inline(content_type: str | None) -> bool:
    return base_type(content_type) in INLINE_TYPES


def clean_content_type(value: str | None) -> str:
    """The type given at upload, if it is a well-formed media type; else octet-stream."""
    if value is None:
        return DEFAULT_CONTENT_TYPE
    value = value.strip()
    if len(value) > MAX_CONTENT_TYPE or not _MEDIA_TYPE.fullmatch(value):
        return DEFAULT_CONTENT_TYPE
    return value


def check_filename(value: str | None) -> str | None:
    """An upload's file name: any text, but not empty-with-meaning or absurdly long."""
    if value is None or value == "":
        return None
    if len(value.encode("utf-8")) > MAX_FILENAME_BYTES or "\x00" in value:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid file name")
    return value
