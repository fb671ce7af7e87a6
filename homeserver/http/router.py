"""Path routing: templates like /_matrix/client/v3/devices/{deviceId} compiled to regexes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from homeserver.http.errors import unrecognized

Handler = Callable[..., Awaitable[tuple[int, Any]]]

# How a route wants the caller authenticated.
AUTH_NONE = "none"
AUTH_REQUIRED = "required"
AUTH_OPTIONAL = "optional"

CLIENT_VERSIONS = ("v3", "r0")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    handler: Handler
    auth: str = AUTH_REQUIRED
    allow_guest: bool = False
    # "Everything but this" rate limit per IP is checked unless a route opts out.
    ip_ratelimit: bool = True
    # Bodies larger than the JSON limit are allowed (media uploads).
    raw_body: bool = False
    # Routes that let a deactivated or expired session through (none so far)
    extra: dict = field(default_factory=dict, compare=False)


_PARAM = re.compile(r"\{(\w+)(\*?)\}")


def compile_template(template: str) -> re.Pattern:
    """'{name}' matches one path segment; '{name*}' matches the rest of the path."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


class Router:
    """Maps (method, path) to a route; unknown paths are 404 and wrong methods 405 M_UNRECOGNIZED."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern, Route]] = []
        self._prefix_index: dict[str, list[tuple[re.Pattern, Route]]] = {}

    def add(self, method: str, template: str, handler: Handler, **opts: Any) -> None:
        route = Route(method.upper(), template, handler, **opts)
        entry = (compile_template(template), route)
        self._routes.append(entry)
        self._prefix_index.setdefault(self._prefix(template), []).append(entry)

    def client(self, method: str, suffix: str, handler: Handler, *,
               versions: tuple[str, ...] = CLIENT_VERSIONS, **opts: Any) -> None:
        """Register a client-server route under each of the given API versions."""
        for v in versions:
            self.add(method, f"/_matrix/client/{v}{suffix}", handler, **opts)

    @staticmethod
    def _prefix(path: str) -> str:
        # The first three segments ("/_matrix/client/v3") narrow the search cheaply.
        return "/".join(path.split("/", 4)[:4])

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        candidates = self._prefix_index.get(self._prefix(path))
        if candidates is None:
            candidates = self._routes
        allowed = False
        for pattern, route in candidates:
            m = pattern.match(path)
            if not m:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                params = {k: unquote(v, errors="strict") for k, v in m.groupdict().items()}
                return route, params
            allowed = True
        if allowed:
            raise unrecognized(405, f"Method {method} not allowed on this endpoint")
        raise unrecognized(404, "Unrecognized request")

    def known_path(self, path: str) -> bool:
        return any(p.match(path) for p, _ in self._routes)
