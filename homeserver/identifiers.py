"""Grammar checks for Matrix identifiers (spec appendix "Identifier Grammar")."""

from __future__ import annotations

import re

from homeserver.http.errors import MatrixError

# A server name: DNS name, IPv4 or [IPv6], with an optional port.
_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::\d{1,5})?"
# Historical user ids allow any printable ASCII but ':' in the localpart.
_USER_ID = re.compile(r"^@[\x21-\x39\x3b-\x7e]+:" + _SERVER_NAME + r"$")


def is_valid_user_id(user_id: str) -> bool:
    return len(user_id.encode("utf-8")) <= 255 and bool(_USER_ID.match(user_id))


def check_user_id(user_id: str) -> None:
    """400 M_INVALID_PARAM unless ``user_id`` is a well-formed user id."""
    if not is_valid_user_id(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id: {user_id!r}")
