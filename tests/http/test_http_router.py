"""Router: path templates, parameters and their percent-decoding, 404 versus 405."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_NONE, AUTH_REQUIRED, Router, compile_template


def handler(name: str) -> Any:
    async def h(req: Any, **params: str) -> tuple[int, Any]:
        return 200, {"handler": name, **params}
    h.__name__ = name
    return h


def routed(router: Router, method: str, path: str) -> tuple[str, dict[str, str]]:
    route, params = router.match(method, path)
    return route.handler.__name__, params


def error(router: Router, method: str, path: str) -> MatrixError:
    with pytest.raises(MatrixError) as exc:
        router.match(method, path)
    return exc.value


@pytest.fixture
def router() -> Router:
    r = Router()
    r.client("GET", "/account/whoami", handler("whoami"))
    r.client("GET", "/devices/{deviceId}", handler("get_device"))
    r.client("PUT", "/devices/{deviceId}", handler("put_device"))
    r.client("DELETE", "/devices/{deviceId}", handler("delete_device"))
    r.client("GET", "/profile/{userId}/{keyName}", handler("profile_field"))
    r.client("POST", "/login", handler("login"), auth=AUTH_NONE)
    r.add("GET", "/_matrix/client/versions", handler("versions"), auth=AUTH_NONE)
    r.add("GET", "/_matrix/media/v3/download/{serverName}/{mediaId}", handler("download"))
    r.add("GET", "/_matrix/static/{path*}", handler("static"))
    r.add("GET", "/a.b", handler("dotted"))
    return r


@pytest.mark.parametrize("method,path,name,params", [
    ("GET", "/_matrix/client/v3/account/whoami", "whoami", {}),
    ("GET", "/_matrix/client/r0/account/whoami", "whoami", {}),
    ("GET", "/_matrix/client/versions", "versions", {}),
    ("GET", "/_matrix/client/v3/devices/ABC", "get_device", {"deviceId": "ABC"}),
    ("PUT", "/_matrix/client/v3/devices/ABC", "put_device", {"deviceId": "ABC"}),
    ("DELETE", "/_matrix/client/v3/devices/ABC", "delete_device", {"deviceId": "ABC"}),
    ("GET", "/_matrix/client/v3/profile/@a:b.c/displayname", "profile_field",
     {"userId": "@a:b.c", "keyName": "displayname"}),
    ("GET", "/_matrix/media/v3/download/example.org/xyz", "download",
     {"serverName": "example.org", "mediaId": "xyz"}),
    ("GET", "/_matrix/static/css/site.css", "static", {"path": "css/site.css"}),
    ("GET", "/a.b", "dotted", {}),
])
def test_templates_match_and_extract_params(router: Router, method: str, path: str, name: str,
                                            params: dict[str, str]) -> None:
    assert routed(router, method, path) == (name, params)


@pytest.mark.parametrize("path", [
    "/_matrix/client/v3/account/whoami/",          # trailing slash
    "/_matrix/client/v3/account/whoami/extra",     # longer than the template
    "/_matrix/client/v3/account",                  # shorter than the template
    "/_matrix/client/v3/account/whoamix",          # no prefix matching
    "/x/_matrix/client/v3/account/whoami",         # anchored at the start
    "/_matrix/client/v3/devices/",                 # an empty parameter
    "/_matrix/client/v3/devices/A/B",              # a parameter is one segment
    "/_matrix/client/v4/account/whoami",           # an unregistered version
    "/aXb",                                        # '.' in a template is literal
    "/",
    "",
])
def test_unknown_paths_are_404_unrecognized(router: Router, path: str) -> None:
    err = error(router, "GET", path)
    assert (err.status, err.errcode) == (404, "M_UNRECOGNIZED")


@pytest.mark.parametrize("method,path,allow", [
    ("POST", "/_matrix/client/v3/account/whoami", "GET, HEAD, OPTIONS"),
    ("GET", "/_matrix/client/v3/login", "OPTIONS, POST"),
    ("HEAD", "/_matrix/client/v3/login", "OPTIONS, POST"),
    ("POST", "/_matrix/client/v3/devices/ABC", "DELETE, GET, HEAD, OPTIONS, PUT"),
    ("PATCH", "/_matrix/client/versions", "GET, HEAD, OPTIONS"),
])
def test_known_path_with_wrong_method_is_405_with_allow(router: Router, method: str, path: str,
                                                        allow: str) -> None:
    err = error(router, method, path)
    assert (err.status, err.errcode) == (405, "M_UNRECOGNIZED")
    assert err.headers["Allow"] == allow


def test_head_is_served_by_the_get_route(router: Router) -> None:
    assert routed(router, "HEAD", "/_matrix/client/v3/devices/X") == ("get_device", {"deviceId": "X"})


@pytest.mark.parametrize("raw,decoded", [
    ("%40alice%3Aexample.org", "@alice:example.org"),
    ("%40Alice%3aexample.org", "@Alice:example.org"),    # lower-case hex digits
    ("a%2Fb", "a/b"),                                    # an encoded slash stays in one segment
    ("%E2%82%AC", "\u20ac"),                             # UTF-8
    ("a+b", "a+b"),                                      # '+' is not a space in a path
    ("a%20b", "a b"),
    ("%25", "%"),                                        # decoded exactly once
    ("%2540", "%40"),
    ("%zz", "%zz"),                                      # not an escape: left alone
])
def test_params_are_percent_decoded_once(router: Router, raw: str, decoded: str) -> None:
    _, params = routed(router, "GET", f"/_matrix/client/v3/devices/{raw}")
    assert params == {"deviceId": decoded}


@pytest.mark.parametrize("raw", ["%FF", "%C3", "%ED%A0%80", "%C0%AF", "ok%80"])
def test_params_that_are_not_utf8_are_invalid_param(router: Router, raw: str) -> None:
    err = error(router, "GET", f"/_matrix/client/v3/devices/{raw}")
    assert (err.status, err.errcode) == (400, "M_INVALID_PARAM")
    assert "deviceId" in err.message


def test_client_routes_register_each_version_and_options() -> None:
    r = Router()
    r.client("post", "/refresh", handler("refresh"), auth=AUTH_NONE, versions=("v3", "v1"))
    for v in ("v3", "v1"):
        route, _ = r.match("POST", f"/_matrix/client/{v}/refresh")
        assert (route.method, route.auth) == ("POST", AUTH_NONE)
    assert error(r, "POST", "/_matrix/client/r0/refresh").status == 404
    r.client("GET", "/x", handler("x"))
    assert r.match("GET", "/_matrix/client/r0/x")[0].auth == AUTH_REQUIRED


def test_first_registered_template_wins() -> None:
    r = Router()
    r.client("GET", "/rooms/{roomId}/state", handler("state"))
    r.client("GET", "/rooms/{roomId}/{what}", handler("generic"))
    assert routed(r, "GET", "/_matrix/client/v3/rooms/!r:x/state")[0] == "state"
    assert routed(r, "GET", "/_matrix/client/v3/rooms/!r:x/members")[0] == "generic"


def test_parameter_in_the_first_segments_is_found_beside_literal_routes() -> None:
    # A template with a parameter among its first three segments must be found even when
    # another route is indexed under the concrete prefix the request has.
    r = Router()
    r.add("GET", "/_matrix/client/v1/other", handler("other"))
    r.add("GET", "/_matrix/client/{version}/thing", handler("thing"))
    r.add("GET", "/_matrix/client/v1/thing2", handler("thing2"))
    assert routed(r, "GET", "/_matrix/client/v1/thing") == ("thing", {"version": "v1"})
    assert routed(r, "GET", "/_matrix/client/v1/thing2") == ("thing2", {})
    assert routed(r, "GET", "/_matrix/client/v1/other") == ("other", {})
    assert r.known_path("/_matrix/client/v9/thing")
    assert not r.known_path("/_matrix/client/v9/nothing")


@pytest.mark.parametrize("template,path,ok", [
    ("/a/{x}", "/a/b", True),
    ("/a/{x}", "/a/b/c", False),
    ("/a/{x*}", "/a/b/c", True),
    ("/a/{x*}", "/a/", True),  # e.g. an empty state key: /state/{eventType}/
    ("/a(b)/{x}", "/a(b)/1", True),
    ("/a(b)/{x}", "/ab/1", False),
    ("/a/{x}/c", "/a/%2F/c", True),
])
def test_compile_template(template: str, path: str, ok: bool) -> None:
    assert bool(compile_template(template).match(path)) is ok
