"""The /_matrix/key/v2 handlers through a Router: our keys, the notary endpoints, bad input.
Responses are validated against the spec's server-server OpenAPI definitions."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from crypto.keys import generate_signing_key, get_verify_key, key_id_of
from crypto.signing import verify_json
from federation.keyring import parse_key_response
from federation.keys_api import KeysApi
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_NONE, Router
from tests.federation.keyring_fakes import DAY, NOW, FakeClock, Network, make_keyring, request
from tests.spec_validation import validate_error, validate_response

LOCAL = "local.test"
ORIGIN = "remote.test"


class Api:
    def __init__(self) -> None:
        self.net = Network(FakeClock())
        self.remote = self.net.add(ORIGIN)
        self.signing_key = generate_signing_key()
        self.keyring = make_keyring(self.net, server_name=LOCAL, signing_key=self.signing_key)
        self.router = Router()
        KeysApi(self.keyring, self.net.clock).register(self.router)

    async def call(self, method: str, uri: str, body: Any = None) -> tuple[int, Any]:
        path = uri.split("?", 1)[0]
        route, params = self.router.match(method, path)
        assert route.auth == AUTH_NONE
        try:
            status, resp = await route.handler(request(method, uri, body, []), **params)
        except MatrixError as e:
            validate_error(e.status, e.to_json())
            return e.status, e.to_json()
        # The deprecated forms with a trailing key id are no longer in the spec.
        spec_path = ("/".join(path.split("/")[:6]) if path.startswith("/_matrix/key/v2/query/")
                     else "/".join(path.split("/")[:5]))
        validate_response(method, spec_path, status, resp, api="server-server")
        return status, resp


@pytest.fixture
def api() -> Api:
    return Api()


@pytest_twisted.ensureDeferred
async def test_own_keys(api: Api) -> None:
    status, body = await api.call("GET", "/_matrix/key/v2/server")
    assert status == 200
    verify_json(body, LOCAL, get_verify_key(api.signing_key))
    assert [k.row.key_id for k in parse_key_response(body, LOCAL, NOW, LOCAL)] == [
        key_id_of(api.signing_key)]
    assert body["valid_until_ts"] == NOW + DAY
    # The deprecated form with a key id answers the same.
    assert await api.call("GET", "/_matrix/key/v2/server/ed25519:whatever") == (200, body)


def check_notary_answer(api: Api, body: Any) -> None:
    [entry] = body["server_keys"]
    verify_json(entry, ORIGIN, get_verify_key(api.remote.key))
    verify_json(entry, LOCAL, get_verify_key(api.signing_key))
    assert api.remote.key_id in entry["verify_keys"]


@pytest_twisted.ensureDeferred
async def test_notary_get(api: Api) -> None:
    status, body = await api.call("GET", f"/_matrix/key/v2/query/{ORIGIN}")
    assert status == 200
    check_notary_answer(api, body)
    status, body = await api.call("GET", f"/_matrix/key/v2/query/{ORIGIN}/{api.remote.key_id}"
                                  f"?minimum_valid_until_ts={NOW}")
    check_notary_answer(api, body)
    assert len(api.net.calls) == 1
    # Asking for validity beyond what we hold makes us ask the server again (a minute later).
    api.net.clock.now += 60_000
    await api.call("GET", f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts={NOW + 2 * DAY}")
    assert len(api.net.calls) == 2


@pytest_twisted.ensureDeferred
async def test_notary_post(api: Api) -> None:
    status, body = await api.call("POST", "/_matrix/key/v2/query", {"server_keys": {
        ORIGIN: {api.remote.key_id: {"minimum_valid_until_ts": NOW}},
        "unreachable.test": {},
        LOCAL: {},
    }})
    assert status == 200
    by_server = {e["server_name"]: e for e in body["server_keys"]}
    assert set(by_server) == {ORIGIN, LOCAL}
    check_notary_answer(api, {"server_keys": [by_server[ORIGIN]]})
    verify_json(by_server[LOCAL], LOCAL, get_verify_key(api.signing_key))
    assert await api.call("POST", "/_matrix/key/v2/query", {"server_keys": {}}) == (
        200, {"server_keys": []})


@pytest_twisted.ensureDeferred
async def test_unreachable_server_gives_an_empty_list(api: Api) -> None:
    assert await api.call("GET", "/_matrix/key/v2/query/unreachable.test") == (
        200, {"server_keys": []})


@pytest_twisted.ensureDeferred
async def test_bad_input(api: Api) -> None:
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/_matrix/key/v2/query", [], "M_BAD_JSON"),
        ("POST", "/_matrix/key/v2/query", b"{nope", "M_NOT_JSON"),
        ("POST", "/_matrix/key/v2/query", {}, "M_MISSING_PARAM"),
        ("POST", "/_matrix/key/v2/query", {"server_keys": []}, "M_INVALID_PARAM"),
        ("POST", "/_matrix/key/v2/query", {"server_keys": {ORIGIN: []}}, "M_INVALID_PARAM"),
        ("POST", "/_matrix/key/v2/query", {"server_keys": {ORIGIN: {"ed25519:a": 5}}},
         "M_INVALID_PARAM"),
        ("POST", "/_matrix/key/v2/query",
         {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": "soon"}}}},
         "M_INVALID_PARAM"),
        ("POST", "/_matrix/key/v2/query", {"server_keys": {"bad name!": {}}}, "M_INVALID_PARAM"),
        ("POST", "/_matrix/key/v2/query",
         {"server_keys": {f"s{i}.test": {} for i in range(101)}}, "M_INVALID_PARAM"),
        ("GET", f"/_matrix/key/v2/query/{ORIGIN}?minimum_valid_until_ts=soon", None,
         "M_INVALID_PARAM"),
        ("GET", "/_matrix/key/v2/query/bad%20name", None, "M_INVALID_PARAM"),
    ]
    for method, uri, body, errcode in cases:
        status, resp = await api.call(method, uri, body)
        assert (status, resp["errcode"]) == (400, errcode), (uri, body)
    assert api.net.calls == []  # nothing was fetched for a refused request
