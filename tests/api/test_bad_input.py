"""Bad input on every implemented endpoint: the spec's errcode and status, never a 500, and
nothing written.

Each case runs against a freshly registered user; a snapshot of everything a failed request
could have changed (the user's and a bystander's devices and profiles, whether the user can
still log in with the old password, whether a fresh username is still free) is compared
before and after.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import pytest
import requests

from tests.harness import SHARED_SECRET, Client, ServerProcess
from tests.spec_validation import validate_error

PASSWORD = "correct horse battery"   # what the harness registers users with
ADMIN_REGISTER = "/_synapse/admin/v1/register"


class Case(NamedTuple):
    id: str
    method: str
    path: str                  # placeholders: see Ctx.fill
    body: Any                  # JSON value, raw bytes, a callable(ctx), or None for no body
    status: int
    errcode: str | None
    token: str = "user"        # "user", "none", "bad" (unknown token) or "query" (token in query)
    query: dict[str, str] | None = None
    # The harness checks every response against the endpoint's documented schema. A UIA
    # endpoint documents 401 only as the UIA response, so a 401 for a bad access token (which
    # the spec's "Using access tokens" section defines for every endpoint) is checked against
    # the standard error schema instead.
    spec_401_is_uia: bool = False


@dataclass
class Ctx:
    server: ServerProcess
    user: Client
    other: Client
    new: str                   # a username nobody has; failed registrations must leave it free

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            for k, v in (("{me}", self.user.user_id), ("{device}", self.user.device_id),
                         ("{other}", self.other.user_id), ("{other_device}", self.other.device_id),
                         ("{new}", self.new), ("{token}", self.user.token),
                         ("{localpart}", self.user.user_id[1:].split(":")[0]),
                         ("{LOCALPART}", self.user.user_id[1:].split(":")[0].upper())):
                value = value.replace(k, v)
            return value
        if isinstance(value, dict):
            return {self.fill(k): self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if callable(value):
            return value(self)
        return value


def password_auth(user: str = "{me}", password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, **extra}


def login(user: str = "{me}", password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    return password_auth(user, password, **extra)


_DROP = object()   # a field value meaning "leave this field out"


def register(**fields: Any) -> dict[str, Any]:
    body = {"username": "{new}", "password": "pw-pw-pw-pw", "auth": {"type": "m.login.dummy"}}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not _DROP}


def admin_register(**fields: Any) -> Callable[[Ctx], dict[str, Any]]:
    """A shared-secret registration body with a fresh nonce and a MAC over the final fields
    (unless the case overrides ``mac`` or ``nonce`` itself)."""
    def build(ctx: Ctx) -> dict[str, Any]:
        nonce = ctx.user.get(ADMIN_REGISTER, token=None).json()["nonce"]
        body: dict[str, Any] = {"nonce": nonce, "username": ctx.new, "password": "pw-pw-pw-pw",
                                "admin": False}
        body.update(ctx.fill(fields))
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        parts = [body.get("nonce"), body.get("username"), body.get("password"),
                 "admin" if body.get("admin") is True else "notadmin"]
        mac.update(b"\x00".join(str(p).encode() for p in parts))
        body.setdefault("mac", mac.hexdigest())
        return {k: v for k, v in body.items() if v is not _DROP}
    return build


# --- bodies that are wrong whatever the endpoint ------------------------------------------------

OVERSIZED = b'{"a":"' + b"x" * (1024 * 1024) + b'"}'     # the default max_json_body_size is 1M

BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed", b'{"username": ', 400, "M_NOT_JSON"),
    ("garbage", b"hello", 400, "M_NOT_JSON"),
    ("trailing-garbage", b"{} {}", 400, "M_NOT_JSON"),
    ("not-utf8", b'{"a": "\xff\xfe"}', 400, "M_NOT_JSON"),
    ("bom", b"\xef\xbb\xbf{}", 400, "M_NOT_JSON"),
    ("nan", b'{"a": NaN}', 400, "M_NOT_JSON"),
    ("infinity", b'{"a": -Infinity}', 400, "M_NOT_JSON"),
    ("float-overflow", b'{"a": 1e999}', 400, "M_NOT_JSON"),
    ("lone-surrogate", b'{"a": "\\ud800"}', 400, "M_NOT_JSON"),
    ("too-deep", b'{"a":' + b"[" * 150 + b"]" * 150 + b"}", 400, "M_NOT_JSON"),
    ("array", b"[]", 400, "M_BAD_JSON"),
    ("string", b'"{}"', 400, "M_BAD_JSON"),
    ("number", b"1", 400, "M_BAD_JSON"),
    ("null", b"null", 400, "M_BAD_JSON"),
    ("oversized", OVERSIZED, 413, "M_TOO_LARGE"),
]

JSON_ENDPOINTS: list[tuple[str, str, str, str]] = [
    ("register", "POST", "register", "none"),
    ("login", "POST", "login", "none"),
    ("refresh", "POST", "refresh", "none"),
    ("password", "POST", "account/password", "user"),
    ("deactivate", "POST", "account/deactivate", "user"),
    ("put-device", "PUT", "devices/{device}", "user"),
    ("delete-device", "DELETE", "devices/{device}", "user"),
    ("delete-devices", "POST", "delete_devices", "user"),
    ("put-profile", "PUT", "profile/{me}/displayname", "user"),
    ("admin-register", "POST", ADMIN_REGISTER, "none"),
]

BAD_BODY_CASES = [Case(f"{ep}/{name}", method, path, body, status, errcode, token)
                  for ep, method, path, token in JSON_ENDPOINTS
                  for name, body, status, errcode in BAD_BODIES]


# --- access tokens, on every endpoint that needs one --------------------------------------------

AUTH_ENDPOINTS: list[tuple[str, str, str, Any]] = [
    ("capabilities", "GET", "capabilities", None),
    ("logout", "POST", "logout", {}),
    ("logout-all", "POST", "logout/all", {}),
    ("whoami", "GET", "account/whoami", None),
    ("password", "POST", "account/password", {"new_password": "new-pw-new-pw",
                                              "auth": password_auth()}),
    ("deactivate", "POST", "account/deactivate", {"auth": password_auth()}),
    ("devices", "GET", "devices", None),
    ("get-device", "GET", "devices/{device}", None),
    ("put-device", "PUT", "devices/{device}", {"display_name": "renamed"}),
    ("delete-device", "DELETE", "devices/{device}", {"auth": password_auth()}),
    ("delete-devices", "POST", "delete_devices", {"devices": ["{device}"], "auth": password_auth()}),
    ("put-profile", "PUT", "profile/{me}/displayname", {"displayname": "renamed"}),
    ("delete-profile", "DELETE", "profile/{me}/displayname", None),
    ("admin-whois", "GET", "/_synapse/admin/v1/whois/{me}", None),
    ("client-whois", "GET", "admin/whois/{me}", None),
]

TOKEN_VARIANTS = [
    ("no-token", "none", None, 401, "M_MISSING_TOKEN"),
    ("unknown-token", "bad", None, 401, "M_UNKNOWN_TOKEN"),
    ("query-token", "query", None, 401, "M_MISSING_TOKEN"),
    ("unknown-token-and-bad-json", "bad", b"{nope", 401, "M_UNKNOWN_TOKEN"),
]

UIA_PATHS = {"account/password", "account/deactivate", "devices/{device}", "delete_devices"}

AUTH_CASES = [Case(f"{ep}/{variant}", method, path, bad_body if bad_body is not None else body,
                   status, errcode, token, spec_401_is_uia=path in UIA_PATHS)
              for ep, method, path, body in AUTH_ENDPOINTS
              for variant, token, bad_body, status, errcode in TOKEN_VARIANTS]


# --- endpoint by endpoint -----------------------------------------------------------------------

LONG = "x" * 300

FIELD_CASES = [
    # Endpoints that take nothing: a stray body or an undecodable query is ignored.
    Case("versions/ignores-junk", "GET", "/_matrix/client/versions?x=%FF", b"{junk", 200, None, "none"),
    Case("login-flows/ignores-junk", "GET", "login?x=%FF", b"{junk", 200, None, "none"),
    Case("well-known-client/ignores-junk", "GET", "/.well-known/matrix/client?x=%FF", b"{junk", 200,
         None, "none"),
    Case("well-known-server/not-served", "GET", "/.well-known/matrix/server", None, 404, "M_NOT_FOUND",
         "none"),
    Case("admin-nonce/ignores-junk", "GET", ADMIN_REGISTER + "?x=%FF", b"{junk", 200, None, "none"),

    # POST /register
    Case("register/username-int", "POST", "register", register(username=5), 400, "M_INVALID_PARAM", "none"),
    Case("register/username-list", "POST", "register", register(username=["a"]), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/password-int", "POST", "register", register(password=5), 400, "M_INVALID_PARAM", "none"),
    Case("register/password-too-long", "POST", "register", register(password="p" * 513), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/password-missing", "POST", "register", register(password=_DROP), 400,
         "M_MISSING_PARAM", "none"),
    Case("register/device-id-int", "POST", "register", register(device_id=5), 400, "M_INVALID_PARAM", "none"),
    Case("register/device-id-empty", "POST", "register", register(device_id=""), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/device-id-space", "POST", "register", register(device_id="A B"), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/display-name-int", "POST", "register", register(initial_device_display_name=5),
         400, "M_INVALID_PARAM", "none"),
    Case("register/display-name-too-long", "POST", "register",
         register(initial_device_display_name=LONG), 400, "M_INVALID_PARAM", "none"),
    Case("register/inhibit-login-str", "POST", "register", register(inhibit_login="yes"), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/refresh-token-str", "POST", "register", register(refresh_token="yes"), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/auth-str", "POST", "register", register(auth="m.login.dummy"), 400,
         "M_INVALID_PARAM", "none"),
    Case("register/auth-session-int", "POST", "register",
         register(auth={"type": "m.login.dummy", "session": 5}), 400, "M_INVALID_PARAM", "none"),
    Case("register/auth-session-unknown", "POST", "register",
         register(auth={"type": "m.login.dummy", "session": "nope"}), 400, "M_UNKNOWN", "none"),
    Case("register/auth-unsupported-stage", "POST", "register",
         register(auth={"type": "m.login.password", "password": "x"}), 401, "M_UNRECOGNIZED", "none"),
    Case("register/auth-type-int", "POST", "register", register(auth={"type": 5}), 401,
         "M_UNRECOGNIZED", "none"),
    Case("register/username-chars", "POST", "register", register(username="bad name!"), 400,
         "M_INVALID_USERNAME", "none"),
    Case("register/username-empty", "POST", "register", register(username=""), 400,
         "M_INVALID_USERNAME", "none"),
    Case("register/username-underscore", "POST", "register", register(username="_{new}"), 400,
         "M_INVALID_USERNAME", "none"),
    Case("register/username-digits", "POST", "register", register(username="1234567"), 400,
         "M_INVALID_USERNAME", "none"),
    Case("register/username-colon", "POST", "register", register(username="{new}:test.local"), 400,
         "M_INVALID_USERNAME", "none"),
    Case("register/username-user-id", "POST", "register", register(username="@{new}:test.local"),
         400, "M_INVALID_USERNAME", "none"),
    Case("register/username-too-long", "POST", "register", register(username="a" * 250), 400,
         "M_INVALID_USERNAME", "none"),
    Case("register/username-non-ascii", "POST", "register", register(username="j\u00f6rg"), 400,
         "M_INVALID_USERNAME", "none"),
    # Taken names are refused before any UIA round trip (spec: "MUST ... before performing UIA").
    Case("register/username-taken", "POST", "register", {"username": "{localpart}", "password": "x"},
         400, "M_USER_IN_USE", "none"),
    Case("register/username-taken-other-case", "POST", "register",
         register(username="{LOCALPART}", auth=_DROP), 400, "M_USER_IN_USE", "none"),
    Case("register/kind-unknown", "POST", "register", register(), 400, "M_INVALID_PARAM", "none",
         {"kind": "admin"}),
    Case("register/kind-guest-disabled", "POST", "register", {}, 403, "M_GUEST_ACCESS_FORBIDDEN", "none",
         {"kind": "guest"}),
    Case("register/query-not-utf8", "POST", "register?kind=%FF", register(), 400, "M_INVALID_PARAM", "none"),

    # GET /register/available
    Case("available/missing", "GET", "register/available", None, 400, "M_MISSING_PARAM", "none"),
    Case("available/invalid", "GET", "register/available", None, 400, "M_INVALID_USERNAME", "none",
         {"username": "bad name!"}),
    Case("available/empty", "GET", "register/available", None, 400, "M_INVALID_USERNAME", "none",
         {"username": ""}),
    Case("available/taken", "GET", "register/available", None, 400, "M_USER_IN_USE", "none",
         {"username": "{localpart}"}),
    Case("available/not-utf8", "GET", "register/available?username=%FF", None, 400, "M_INVALID_PARAM",
         "none"),

    # GET /_matrix/client/v1/register/m.login.registration_token/validity
    Case("token-validity/missing", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity",
         None, 400, "M_MISSING_PARAM", "none"),
    Case("token-validity/not-utf8", "GET",
         "/_matrix/client/v1/register/m.login.registration_token/validity?token=%FF", None, 400,
         "M_INVALID_PARAM", "none"),
    Case("token-validity/unknown", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity",
         None, 200, None, "none", {"token": "no-such-token"}),

    # POST /login
    Case("login/type-missing", "POST", "login", {"identifier": {"type": "m.id.user", "user": "{me}"},
                                                 "password": PASSWORD}, 400, "M_MISSING_PARAM", "none"),
    Case("login/type-int", "POST", "login", login(type=5), 400, "M_INVALID_PARAM", "none"),
    Case("login/type-unknown", "POST", "login", login(type="m.login.magic"), 400, "M_UNKNOWN", "none"),
    Case("login/type-token", "POST", "login", {"type": "m.login.token", "token": "abc"}, 400,
         "M_UNKNOWN", "none"),
    Case("login/password-missing", "POST", "login",
         {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "{me}"}}, 400,
         "M_MISSING_PARAM", "none"),
    Case("login/password-int", "POST", "login", login(password=5), 400, "M_INVALID_PARAM", "none"),
    Case("login/identifier-missing", "POST", "login", {"type": "m.login.password", "password": PASSWORD},
         400, "M_MISSING_PARAM", "none"),
    Case("login/identifier-str", "POST", "login",
         {"type": "m.login.password", "identifier": "{me}", "password": PASSWORD}, 400,
         "M_INVALID_PARAM", "none"),
    Case("login/identifier-type-unknown", "POST", "login",
         {"type": "m.login.password", "identifier": {"type": "m.id.magic", "user": "{me}"},
          "password": PASSWORD}, 400, "M_UNKNOWN", "none"),
    Case("login/identifier-user-missing", "POST", "login",
         {"type": "m.login.password", "identifier": {"type": "m.id.user"}, "password": PASSWORD}, 400,
         "M_MISSING_PARAM", "none"),
    Case("login/identifier-user-int", "POST", "login", login(user=5), 400, "M_INVALID_PARAM", "none"),
    Case("login/unknown-user", "POST", "login", login(user="nobody-{new}"), 403, "M_FORBIDDEN", "none"),
    Case("login/unknown-full-user-id", "POST", "login", login(user="@{new}:test.local"), 403,
         "M_FORBIDDEN", "none"),
    Case("login/remote-user-id", "POST", "login", login(user="{me}x.example"), 403, "M_FORBIDDEN", "none"),
    Case("login/wrong-password", "POST", "login", login(password="wrong"), 403, "M_FORBIDDEN", "none"),
    Case("login/empty-password", "POST", "login", login(password=""), 403, "M_FORBIDDEN", "none"),
    Case("login/password-prefix", "POST", "login", login(password=PASSWORD[:-1]), 403, "M_FORBIDDEN",
         "none"),
    Case("login/legacy-user-wrong-password", "POST", "login",
         {"type": "m.login.password", "user": "{me}", "password": "wrong"}, 403, "M_FORBIDDEN", "none"),
    Case("login/device-id-int", "POST", "login", login(device_id=5), 400, "M_INVALID_PARAM", "none"),
    Case("login/device-id-empty", "POST", "login", login(device_id=""), 400, "M_INVALID_PARAM", "none"),
    Case("login/device-id-too-long", "POST", "login", login(device_id=LONG), 400, "M_INVALID_PARAM", "none"),
    Case("login/display-name-int", "POST", "login", login(initial_device_display_name=5), 400,
         "M_INVALID_PARAM", "none"),
    Case("login/display-name-too-long", "POST", "login", login(initial_device_display_name=LONG), 400,
         "M_INVALID_PARAM", "none"),
    Case("login/refresh-token-str", "POST", "login", login(refresh_token="yes"), 400, "M_INVALID_PARAM",
         "none"),

    # POST /refresh
    Case("refresh/missing", "POST", "refresh", {}, 400, "M_MISSING_PARAM", "none"),
    Case("refresh/int", "POST", "refresh", {"refresh_token": 5}, 400, "M_INVALID_PARAM", "none"),
    Case("refresh/unknown", "POST", "refresh", {"refresh_token": "hrt_nope"}, 401, "M_UNKNOWN_TOKEN",
         "none"),
    Case("refresh/access-token", "POST", "refresh", {"refresh_token": "{token}"}, 401,
         "M_UNKNOWN_TOKEN", "none"),

    # POST /account/password
    Case("password/new-password-int", "POST", "account/password",
         {"new_password": 5, "auth": password_auth()}, 400, "M_INVALID_PARAM"),
    Case("password/new-password-too-long", "POST", "account/password",
         {"new_password": "p" * 513, "auth": password_auth()}, 400, "M_INVALID_PARAM"),
    Case("password/logout-devices-str", "POST", "account/password",
         {"new_password": "new-pw-new-pw", "logout_devices": "yes", "auth": password_auth()}, 400,
         "M_INVALID_PARAM"),
    Case("password/auth-str", "POST", "account/password", {"new_password": "new-pw-new-pw", "auth": "x"},
         400, "M_INVALID_PARAM"),
    Case("password/no-auth", "POST", "account/password", {"new_password": "new-pw-new-pw"}, 401, None),
    Case("password/wrong-password", "POST", "account/password",
         {"new_password": "new-pw-new-pw", "auth": password_auth(password="wrong")}, 401, "M_FORBIDDEN"),
    Case("password/other-users-identity", "POST", "account/password",
         {"new_password": "new-pw-new-pw", "auth": password_auth(user="{other}")}, 401, "M_FORBIDDEN"),
    Case("password/unsupported-stage", "POST", "account/password",
         {"new_password": "new-pw-new-pw", "auth": {"type": "m.login.dummy"}}, 401, "M_UNRECOGNIZED"),
    Case("password/unknown-session", "POST", "account/password",
         {"new_password": "new-pw-new-pw", "auth": password_auth(session="nope")}, 400, "M_UNKNOWN"),
    Case("password/new-password-missing", "POST", "account/password", {"auth": password_auth()}, 400,
         "M_MISSING_PARAM"),

    # POST /account/deactivate
    Case("deactivate/erase-str", "POST", "account/deactivate", {"erase": "yes", "auth": password_auth()},
         400, "M_INVALID_PARAM"),
    Case("deactivate/id-server-int", "POST", "account/deactivate",
         {"id_server": 5, "auth": password_auth()}, 400, "M_INVALID_PARAM"),
    Case("deactivate/auth-list", "POST", "account/deactivate", {"auth": []}, 400, "M_INVALID_PARAM"),
    Case("deactivate/no-auth", "POST", "account/deactivate", {}, 401, None),
    Case("deactivate/empty-body", "POST", "account/deactivate", b"", 401, None),
    Case("deactivate/wrong-password", "POST", "account/deactivate",
         {"auth": password_auth(password="wrong")}, 401, "M_FORBIDDEN"),
    Case("deactivate/other-users-identity", "POST", "account/deactivate",
         {"auth": password_auth(user="{other}")}, 401, "M_FORBIDDEN"),

    # GET/PUT/DELETE /devices/{deviceId}
    Case("get-device/unknown", "GET", "devices/NOSUCHDEVICE", None, 404, "M_NOT_FOUND"),
    Case("get-device/other-users", "GET", "devices/{other_device}", None, 404, "M_NOT_FOUND"),
    Case("get-device/not-utf8", "GET", "devices/%FF", None, 400, "M_INVALID_PARAM"),
    Case("put-device/name-int", "PUT", "devices/{device}", {"display_name": 5}, 400, "M_INVALID_PARAM"),
    Case("put-device/name-too-long", "PUT", "devices/{device}", {"display_name": LONG}, 400,
         "M_INVALID_PARAM"),
    Case("put-device/unknown", "PUT", "devices/NOSUCHDEVICE", {"display_name": "x"}, 404, "M_NOT_FOUND"),
    Case("put-device/other-users", "PUT", "devices/{other_device}", {"display_name": "x"}, 404,
         "M_NOT_FOUND"),
    Case("delete-device/no-auth", "DELETE", "devices/{device}", {}, 401, None),
    Case("delete-device/no-body", "DELETE", "devices/{device}", None, 401, None),
    Case("delete-device/wrong-password", "DELETE", "devices/{device}",
         {"auth": password_auth(password="wrong")}, 401, "M_FORBIDDEN"),
    Case("delete-device/auth-str", "DELETE", "devices/{device}", {"auth": "x"}, 400, "M_INVALID_PARAM"),
    # Spec: 200 "The device was successfully removed, or had been removed previously".
    Case("delete-device/unknown", "DELETE", "devices/NOSUCHDEVICE", {"auth": password_auth()}, 200, None),
    Case("delete-device/other-users", "DELETE", "devices/{other_device}", {"auth": password_auth()},
         200, None),

    # POST /delete_devices
    Case("delete-devices/missing", "POST", "delete_devices", {"auth": password_auth()}, 400,
         "M_MISSING_PARAM"),
    Case("delete-devices/str", "POST", "delete_devices", {"devices": "{device}", "auth": password_auth()},
         400, "M_INVALID_PARAM"),
    Case("delete-devices/int-items", "POST", "delete_devices", {"devices": [1], "auth": password_auth()},
         400, "M_INVALID_PARAM"),
    Case("delete-devices/too-many", "POST", "delete_devices",
         {"devices": [f"D{i}" for i in range(1001)], "auth": password_auth()}, 400, "M_INVALID_PARAM"),
    Case("delete-devices/no-auth", "POST", "delete_devices", {"devices": ["{device}"]}, 401, None),
    Case("delete-devices/wrong-password", "POST", "delete_devices",
         {"devices": ["{device}"], "auth": password_auth(password="wrong")}, 401, "M_FORBIDDEN"),
    Case("delete-devices/other-users", "POST", "delete_devices",
         {"devices": ["{other_device}"], "auth": password_auth()}, 200, None),

    # GET /profile/{userId} and /profile/{userId}/{keyName}
    Case("get-profile/unknown-user", "GET", "profile/@nobody-{new}:test.local", None, 404, "M_NOT_FOUND"),
    Case("get-profile/invalid-user-id", "GET", "profile/not-a-user-id", None, 400, "M_INVALID_PARAM"),
    Case("get-profile/not-utf8", "GET", "profile/%FF", None, 400, "M_INVALID_PARAM"),
    Case("get-field/unset", "GET", "profile/{me}/org.example.unset", None, 404, "M_NOT_FOUND"),
    Case("get-field/unknown-user", "GET", "profile/@nobody-{new}:test.local/displayname", None, 404,
         "M_NOT_FOUND"),
    Case("put-profile/displayname-int", "PUT", "profile/{me}/displayname", {"displayname": 5}, 400,
         "M_INVALID_PARAM"),
    Case("put-profile/displayname-too-long", "PUT", "profile/{me}/displayname", {"displayname": LONG},
         400, "M_INVALID_PARAM"),
    Case("put-profile/avatar-url-object", "PUT", "profile/{me}/avatar_url", {"avatar_url": {}}, 400,
         "M_INVALID_PARAM"),
    Case("put-profile/empty", "PUT", "profile/{me}/displayname", {}, 400, "M_MISSING_PARAM"),
    Case("put-profile/wrong-key", "PUT", "profile/{me}/displayname", {"avatar_url": "mxc://a/b"}, 400,
         "M_MISSING_PARAM"),
    Case("put-profile/extra-key", "PUT", "profile/{me}/displayname", {"displayname": "a", "x": 1}, 400,
         "M_BAD_JSON"),
    Case("put-profile/key-too-large", "PUT", "profile/{me}/org.example." + "k" * 250,
         {"org.example." + "k" * 250: 1}, 400, "M_KEY_TOO_LARGE"),
    Case("put-profile/too-large", "PUT", "profile/{me}/org.example.big",
         {"org.example.big": "x" * 70_000}, 400, "M_PROFILE_TOO_LARGE"),
    Case("put-profile/other-user", "PUT", "profile/{other}/displayname", {"displayname": "hijack"}, 403,
         "M_FORBIDDEN"),
    Case("put-profile/unknown-user", "PUT", "profile/@nobody-{new}:test.local/displayname",
         {"displayname": "x"}, 403, "M_FORBIDDEN"),
    Case("put-profile/invalid-user-id", "PUT", "profile/not-a-user-id/displayname", {"displayname": "x"},
         400, "M_INVALID_PARAM"),
    Case("delete-profile/other-user", "DELETE", "profile/{other}/displayname", None, 403, "M_FORBIDDEN"),
    Case("delete-profile/key-too-large", "DELETE", "profile/{me}/org.example." + "k" * 250, None, 400,
         "M_KEY_TOO_LARGE"),

    # /_synapse/admin/v1/register and whois
    Case("admin-register/nonce-missing", "POST", ADMIN_REGISTER, admin_register(nonce=_DROP), 400,
         "M_MISSING_PARAM", "none"),
    Case("admin-register/nonce-int", "POST", ADMIN_REGISTER, admin_register(nonce=5), 400,
         "M_INVALID_PARAM", "none"),
    Case("admin-register/nonce-unknown", "POST", ADMIN_REGISTER, admin_register(nonce="f" * 64), 400,
         "M_UNKNOWN", "none"),
    Case("admin-register/mac-missing", "POST", ADMIN_REGISTER, admin_register(mac=_DROP), 400,
         "M_MISSING_PARAM", "none"),
    Case("admin-register/mac-wrong", "POST", ADMIN_REGISTER, admin_register(mac="0" * 40), 403,
         "M_FORBIDDEN", "none"),
    Case("admin-register/username-int", "POST", ADMIN_REGISTER, admin_register(username=5), 400,
         "M_INVALID_PARAM", "none"),
    Case("admin-register/password-missing", "POST", ADMIN_REGISTER, admin_register(password=_DROP), 400,
         "M_MISSING_PARAM", "none"),
    Case("admin-register/admin-str", "POST", ADMIN_REGISTER, admin_register(admin="yes"), 400,
         "M_INVALID_PARAM", "none"),
    Case("admin-register/username-invalid", "POST", ADMIN_REGISTER, admin_register(username="bad name!"),
         400, "M_INVALID_USERNAME", "none"),
    Case("admin-register/username-taken", "POST", ADMIN_REGISTER, admin_register(username="{localpart}"),
         400, "M_USER_IN_USE", "none"),
    Case("admin-whois/other-user", "GET", "/_synapse/admin/v1/whois/{other}", None, 403, "M_FORBIDDEN"),
    Case("admin-whois/invalid-user-id", "GET", "/_synapse/admin/v1/whois/not-a-user-id", None, 400,
         "M_INVALID_PARAM"),
    Case("client-whois/other-user", "GET", "admin/whois/{other}", None, 403, "M_FORBIDDEN"),
]

ALL_CASES = BAD_BODY_CASES + AUTH_CASES + FIELD_CASES


# --- the test -----------------------------------------------------------------------------------

_bystanders: dict[str, Client] = {}


def bystander(server: ServerProcess) -> Client:
    """Another user on the same server (one per server), whose state no case may touch."""
    if server.base_url not in _bystanders:
        c = server.client()
        c.register(initial_device_display_name="bystander phone")
        assert c.put(f"profile/{c.user_id}/displayname", {"displayname": "Bystander"}).status_code == 200
        _bystanders[server.base_url] = c
    return _bystanders[server.base_url]


def snapshot(ctx: Ctx) -> dict[str, Any]:
    def devices(c: Client) -> list[tuple[str, str | None]]:
        r = c.get("devices")
        assert r.status_code == 200, r.text
        return sorted((d["device_id"], d.get("display_name")) for d in r.json()["devices"])

    def profile(c: Client) -> Any:
        return c.get(f"profile/{c.user_id}", token=None).json()

    available = ctx.user.get("register/available", params={"username": ctx.new}, token=None)
    return {"devices": devices(ctx.user), "profile": profile(ctx.user),
            "bystander_devices": devices(ctx.other), "bystander_profile": profile(ctx.other),
            "new_username_free": (available.status_code, available.json())}


def send(ctx: Ctx, case: Case) -> requests.Response:
    kwargs: dict[str, Any] = {"params": ctx.fill(case.query)}
    if case.token == "none":
        kwargs["token"] = None
    elif case.token == "bad":
        kwargs["token"] = "hat_" + uuid.uuid4().hex
    elif case.token == "query":
        kwargs["token"] = None
        kwargs["params"] = {**(kwargs["params"] or {}), "access_token": ctx.user.token}
    body = ctx.fill(case.body)
    if isinstance(body, bytes):
        kwargs["data"] = body
        kwargs["headers"] = {"Content-Type": "application/json"}
    elif body is not None:
        kwargs["data"] = json.dumps(body).encode()
        kwargs["headers"] = {"Content-Type": "application/json"}
    if case.spec_401_is_uia:
        kwargs["validate"] = False
    r = ctx.user.request(case.method, ctx.fill(case.path), **kwargs)
    if case.spec_401_is_uia:
        validate_error(r.status_code, r.json())
    return r


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_input(server: ServerProcess, user: Client, case: Case) -> None:
    ctx = Ctx(server, user, bystander(server), "u" + uuid.uuid4().hex[:10])
    before = snapshot(ctx)
    r = send(ctx, case)
    assert r.status_code == case.status, r.text
    body = r.json() if r.content else {}
    assert body.get("errcode") == case.errcode, r.text
    if case.errcode is not None:
        assert isinstance(body.get("error"), str)
    # Nothing was written: the session still works, the old password still logs in, and
    # every piece of state a failed request might touch is as it was.
    assert user.get("account/whoami").status_code == 200
    assert snapshot(ctx) == before
    probe = server.client()
    probe.login(user.user_id, PASSWORD)
    probe.post("logout")


def test_case_table_covers_every_endpoint() -> None:
    """A guard against the table silently losing an endpoint."""
    covered = {(c.method, c.path.split("?")[0].split("/{")[0].split("/%")[0]) for c in ALL_CASES}
    for method, prefix in [("GET", "/_matrix/client/versions"), ("GET", "/.well-known/matrix/client"),
                           ("GET", "/.well-known/matrix/server"), ("GET", "login"),
                           ("GET", ADMIN_REGISTER), ("POST", "register"), ("GET", "register/available"),
                           ("GET", "/_matrix/client/v1/register/m.login.registration_token/validity"),
                           ("POST", "login"), ("POST", "logout"), ("POST", "logout/all"),
                           ("POST", "refresh"), ("GET", "account/whoami"), ("GET", "capabilities"),
                           ("POST", "account/password"), ("POST", "account/deactivate"),
                           ("GET", "devices"), ("PUT", "devices"), ("DELETE", "devices"),
                           ("POST", "delete_devices"), ("GET", "profile"), ("PUT", "profile"),
                           ("DELETE", "profile"), ("POST", ADMIN_REGISTER),
                           ("GET", "/_synapse/admin/v1/whois")]:
        assert any(m == method and p.startswith(prefix) for m, p in covered), (method, prefix)
