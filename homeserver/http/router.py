"""Path routing: templates like /_matrix/client/v3/devices/{deviceId} compiled to regexes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from homeserver.http.errors import invalid_param, unrecognized

Handler = Callable[..., Awaitable[tuple[int, Any]]]

# How a route wants the caller authenticated.
AUTH_NONE = "none"
AUTH_REQUIRED = "required"
AUTH_OPTIONAL = "optional"
# Server-server requests: an X-Matrix signature from the origin server (req.origin).
AUTH_FEDERATION = "federation"

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
    """'{name}' matches one path segment; '{name*}' matches the rest of the path, maybe empty."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>.*)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


def _decode_param(name: str, value: str) -> str:
    """Percent-decode one path parameter; bytes that are not UTF-8 are the client's error."""
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise invalid_param(f"Path parameter '{name}' is not valid UTF-8") from None


# An entry: (registration order, compiled template, route). The order decides between
# templates that match the same path, whichever index they were found through.
_Entry = tuple[int, re.Pattern, Route]


class Router:
    """Maps (method, path) to a route; unknown paths are 404 and wrong methods 405 M_UNRECOGNIZED."""

    def __init__(self) -> None:
        self._routes: list[_Entry] = []
        # Routes whose first three segments are literal, by those segments ...
        self._prefix_index: dict[str, list[_Entry]] = {}
        # ... and routes with a parameter among them, which any path may match.
        self._wildcard: list[_Entry] = []
        # (method, path) -> the route it matched, for routes without parameters: as many
        # entries as such routes, and the busiest paths (/sync) found without any regex.
        self._literal: dict[tuple[str, str], Route] = {}

    def add(self, method: str, template: str, handler: Handler, **opts: Any) -> None:
        route = Route(method.upper(), template, handler, **opts)
        self._literal.clear()
        entry = (len(self._routes), compile_template(template), route)
        self._routes.append(entry)
        prefix = self._prefix(template)
        if "{" in prefix:
            self._wildcard.append(entry)
        else:
            self._prefix_index.setdefault(prefix, []).append(entry)

    def client(self, method: str, suffix: str, handler: Handler, *,
               versions: tuple[str, ...] = CLIENT_VERSIONS, **opts: Any) -> None:
        """Register a client-server route under each of the given API versions."""
        for v in versions:
            self.add(method, f"/_matrix/client/{v}{suffix}", handler, **opts)

    @staticmethod
    def _prefix(path: str) -> str:
        # The first three segments ("/_matrix/client/v3") narrow the search cheaply.
        return "/".join(path.split("/", 4)[:4])

    def _candidates(self, path: str) -> list[_Entry]:
        indexed = self._prefix_index.get(self._prefix(path), [])
        if not self._wildcard:
            return indexed
        return sorted(indexed + self._wildcard, key=lambda e: e[0])

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` on ``path`` and its percent-decoded parameters.

        HEAD is served by the GET route. A path that some route matches with another method
        is 405 with an ``Allow`` header; a path no route matches is 404.
        """
        literal = self._literal.get((method, path))
        if literal is not None:
            return literal, {}
        allowed: list[str] = []
        for _, pattern, route in self._candidates(path):
            m = pattern.match(path)
            if not m:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                if "{" not in route.template:
                    self._literal[(method, path)] = route
                params = {k: _decode_param(k, v) for k, v in m.groupdict().items()}
                return route, params
            allowed.append(route.method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            err = unrecognized(405, f"Method {method} not allowed on this endpoint")
            err.headers["Allow"] = ", ".join(sorted({*allowed, "OPTIONS"}))
            raise err
        raise unrecognized(404, "Unrecognized request")

    def known_path(self, path: str) -> bool:
        return any(p.match(path) for _, p, _ in self._candidates(path))
