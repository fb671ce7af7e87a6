"""Server ACLs (spec: m.room.server_acl): which servers may take part in a room."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping


def _glob(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern) + r"\Z", re.IGNORECASE | re.DOTALL)


def _host(server_name: str) -> str:
    """The server name without its port (the ACL matches hostnames)."""
    if server_name.startswith("["):
        return server_name.split("]", 1)[0] + "]"
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def server_allowed(server_name: str, content: Mapping[str, Any]) -> bool:
    """Whether the ACL event content lets ``server_name`` in: IP literals only when
    allow_ip_literals is not false, then deny before allow (globs with * and ?)."""
    host = _host(server_name)
    if content.get("allow_ip_literals", True) is False and _is_ip_literal(host):
        return False
    deny = content.get("deny", [])
    allow = content.get("allow", [])
    for pattern in deny if isinstance(deny, list) else []:
        if isinstance(pattern, str) and _glob(pattern).match(host):
            return False
    for pattern in allow if isinstance(allow, list) else []:
        if isinstance(pattern, str) and _glob(pattern).match(host):
            return True
    return False
