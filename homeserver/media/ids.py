"""mxc:// ids: generating media ids and checking the two halves of a content URI."""

from __future__ import annotations

import re
import secrets
import string

from homeserver.http.errors import MatrixError

# Spec, "Matrix Content (mxc://) URIs": media ids use only A-Z, a-z, 0-9, '_' and '-'.
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SERVER_NAME = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::\d{1,5})?")
_ALPHABET = string.ascii_letters + string.digits
MEDIA_ID_LENGTH = 24  # about 143 random bits


def new_media_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(MEDIA_ID_LENGTH))


def check_media_path(server_name: str, media_id: str) -> None:
    """400 M_INVALID_PARAM unless both halves of an mxc:// URI are well-formed."""
    if not _SERVER_NAME.fullmatch(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")
    if not _MEDIA_ID.fullmatch(media_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid media id")


def mxc_uri(server_name: str, media_id: str) -> str:
    return f"mxc://{server_name}/{media_id}"
