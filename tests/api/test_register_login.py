"""Registration, login, logout, refresh tokens and whoami against real servers on both engines."""

from __future__ import annotations

import time
import uuid

from tests.harness import Client, ServerProcess


def name() -> str:
    return "u" + uuid.uuid4().hex[:10]


def test_register_flow_starts_with_uia_401(client: Client) -> None:
    r = client.post("register", {"username": name(), "password": "pw-pw-pw"}, token=None)
    assert r.status_code == 401
    body = r.json()
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert isinstance(body["session"], str) and body["params"] == {}


def test_register_with_session_then_whoami(client: Client) -> None:
    u = name()
    r = client.post("register", {"username": u, "password": "pw-pw-pw"}, token=None)
    session = r.json()["session"]
    r = client.post("register", {"auth": {"type": "m.login.dummy", "session": session}}, token=None)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["user_id"] == f"@{u}:test.local"
    assert len(out["access_token"]) >= 22  # at least 128 random bits
    client.token = out["access_token"]
    who = client.get("account/whoami").json()
    assert who == {"user_id": out["user_id"], "device_id": out["device_id"], "is_guest": False}
    # The session is spent: it cannot register a second account.
    r = client.post("register", {"username": name(), "password": "x",
                                 "auth": {"type": "m.login.dummy", "session": session}}, token=None)
    assert r.status_code == 400


def test_register_uppercase_is_lowercased_and_taken_ids_refused(client: Client) -> None:
    u = name()
    out = client.register(u.upper())
    assert out["user_id"] == f"@{u}:test.local"
    r = client.post("register", {"username": u, "password": "pw",
                                 "auth": {"type": "m.login.dummy"}}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")


def test_register_available(client: Client) -> None:
    u = name()
    r = client.get("register/available", params={"username": u}, token=None)
    assert r.json() == {"available": True}
    client.register(u)
    r = client.get("register/available", params={"username": u}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")
    r = client.get("register/available", params={"username": "bad name!"}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_USERNAME")


def test_register_inhibit_login_and_device_options(client: Client) -> None:
    r = client.post("register", {"username": name(), "password": "pw", "inhibit_login": True,
                                 "auth": {"type": "m.login.dummy"}}, token=None)
    assert r.status_code == 200 and "access_token" not in r.json()
    out = client.register(device_id="MYDEVICE", initial_device_display_name="Laptop")
    assert out["device_id"] == "MYDEVICE"
    dev = client.get("devices/MYDEVICE").json()
    assert dev["display_name"] == "Laptop"


def test_register_without_username_generates_one(client: Client) -> None:
    r = client.post("register", {"password": "pw-pw", "auth": {"type": "m.login.dummy"}}, token=None)
    assert r.status_code == 200
    assert r.json()["user_id"].endswith(":test.local")


def test_guest_registration_is_off_by_default(client: Client) -> None:
    r = client.post("register", {}, params={"kind": "guest"}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


def test_login_flows_and_password_login(client: Client) -> None:
    assert client.get("login", token=None).json() == {"flows": [{"type": "m.login.password"}]}
    u = name()
    client.register(u, password="s3cret-pass")
    c2 = Client(client.base_url)
    out = c2.login(u, "s3cret-pass", initial_device_display_name="Phone")
    assert out["user_id"] == f"@{u}:test.local" and out["device_id"] != client.device_id
    assert out["well_known"]["m.homeserver"]["base_url"].startswith("http://127.0.0.1")
    # Full user id, legacy "user" field, and case-insensitive localpart all work.
    c3 = Client(client.base_url)
    assert c3.login(f"@{u}:test.local", "s3cret-pass")["user_id"] == out["user_id"]
    r = c3.post("login", {"type": "m.login.password", "user": u.upper(), "password": "s3cret-pass"},
                token=None)
    assert r.status_code == 200, r.text
    r = c3.post("login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": u},
                          "password": "wrong"}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")


def test_login_with_existing_device_id_reuses_device(client: Client) -> None:
    u = name()
    client.register(u, device_id="KEEPME")
    c2 = Client(client.base_url)
    c2.login(u, "correct horse battery", device_id="KEEPME")
    devices = [d["device_id"] for d in c2.get("devices").json()["devices"]]
    assert devices == ["KEEPME"]


def test_logout_deletes_device_and_token(user: Client) -> None:
    c2 = Client(user.base_url)
    c2.login(user.user_id, "correct horse battery")
    assert user.post("logout").status_code == 200
    r = user.get("account/whoami")
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert [d["device_id"] for d in c2.get("devices").json()["devices"]] == [c2.device_id]


def test_logout_all(user: Client) -> None:
    c2 = Client(user.base_url)
    c2.login(user.user_id, "correct horse battery")
    assert c2.post("logout/all").status_code == 200
    for c in (user, c2):
        assert c.get("account/whoami").status_code == 401
    c3 = Client(user.base_url)
    c3.login(user.user_id, "correct horse battery")
    assert [d["device_id"] for d in c3.get("devices").json()["devices"]] == [c3.device_id]


def test_refresh_tokens_rotate(client: Client) -> None:
    u = name()
    out = client.register(u, refresh_token=True)
    assert isinstance(out["refresh_token"], str) and out["expires_in_ms"] > 0
    r = client.post("refresh", {"refresh_token": out["refresh_token"]}, token=None)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["access_token"] != out["access_token"] and new["refresh_token"] != out["refresh_token"]
    # The old access token is gone; the new one works.
    assert client.get("account/whoami").status_code == 401
    client.token = new["access_token"]
    assert client.get("account/whoami").json()["user_id"] == out["user_id"]
    # Once the new token was used, the old refresh token is revoked.
    r = client.post("refresh", {"refresh_token": out["refresh_token"]}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    r = client.post("refresh", {"refresh_token": new["refresh_token"]}, token=None)
    assert r.status_code == 200


def test_refresh_retry_before_use_is_allowed(client: Client) -> None:
    out = client.register(name(), refresh_token=True)
    first = client.post("refresh", {"refresh_token": out["refresh_token"]}, token=None).json()
    # The response was "lost": retrying with the same refresh token still works ...
    second = client.post("refresh", {"refresh_token": out["refresh_token"]}, token=None)
    assert second.status_code == 200
    # ... and the unused first answer is void.
    client.token = first["access_token"]
    assert client.get("account/whoami").status_code == 401
    client.token = second.json()["access_token"]
    assert client.get("account/whoami").status_code == 200


def test_refreshable_access_token_expires(make_server) -> None:
    srv: ServerProcess = make_server({"refreshable_access_token_lifetime": "1s"})
    c = srv.client()
    out = c.register(refresh_token=True)
    assert out["expires_in_ms"] == 1000
    time.sleep(1.2)
    r = c.get("account/whoami")
    assert (r.status_code, r.json()["errcode"], r.json()["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", True)
    c.token = c.post("refresh", {"refresh_token": out["refresh_token"]}, token=None).json()["access_token"]
    assert c.get("account/whoami").status_code == 200


def test_registration_disabled_by_default(make_server) -> None:
    srv = make_server({"enable_registration": None, "enable_registration_without_verification": None})
    c = srv.client()
    r = c.post("register", {"username": name(), "password": "pw", "auth": {"type": "m.login.dummy"}},
               token=None)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")


def test_registration_token_flow(make_server) -> None:
    srv = make_server({"registration_requires_token": True,
                       "enable_registration_without_verification": False})
    c = srv.client()
    admin = srv.admin()
    r = c.post("register", {"username": name(), "password": "pw"}, token=None)
    assert r.json()["flows"] == [{"stages": ["m.login.registration_token"]}]
    session = r.json()["session"]
    r = c.post("register", {"auth": {"type": "m.login.registration_token", "token": "nope",
                                     "session": session}}, token=None)
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    r = admin.post("/_synapse/admin/v1/registration_tokens/new", {"token": "letmein", "uses_allowed": 1})
    assert r.status_code == 200 and r.json()["pending"] == 0, r.text
    v = c.get("/_matrix/client/v1/register/m.login.registration_token/validity",
              params={"token": "letmein"}, token=None)
    assert v.json() == {"valid": True}
    r = c.post("register", {"auth": {"type": "m.login.registration_token", "token": "letmein",
                                     "session": session}}, token=None)
    assert r.status_code == 200, r.text
    # One use allowed: it is spent now.
    r2 = srv.client().post("register", {"username": name(), "password": "pw",
                                 "auth": {"type": "m.login.registration_token", "token": "letmein"}},
                    token=None)
    assert r2.status_code == 401 and r2.json()["errcode"] == "M_FORBIDDEN"
    v = c.get("/_matrix/client/v1/register/m.login.registration_token/validity",
              params={"token": "letmein"}, token=None)
    assert v.json() == {"valid": False}


def test_open_registration_without_verification_refuses_to_start(make_server) -> None:
    srv = make_server({"enable_registration_without_verification": None}, start=False)
    try:
        srv.start(timeout=10)
        raise AssertionError("server started with unverified open registration")
    except RuntimeError as e:
        assert "enable_registration_without_verification" in str(e)


def test_admin_registration_token_api(make_server) -> None:
    srv = make_server()
    admin, plain = srv.admin(), srv.client()
    plain.register()
    base = "/_synapse/admin/v1/registration_tokens"
    assert plain.get(base).status_code == 403
    made = admin.post(base + "/new", {"uses_allowed": 2, "length": 20}).json()
    assert len(made["token"]) == 20 and made["uses_allowed"] == 2 and made["completed"] == 0
    assert admin.post(base + "/new", {"token": made["token"]}).status_code == 400
    assert admin.post(base + "/new", {"token": "bad token!"}).status_code == 400
    r = admin.put(f"{base}/{made['token']}", {"uses_allowed": 0})
    assert r.json()["uses_allowed"] == 0
    assert [t["token"] for t in admin.get(base, params={"valid": "false"}).json()["registration_tokens"]] \
        == [made["token"]]
    assert admin.get(base, params={"valid": "true"}).json()["registration_tokens"] == []
    assert admin.delete(f"{base}/{made['token']}").status_code == 200
    assert admin.get(f"{base}/{made['token']}").status_code == 404
