"""Password change, deactivation, devices (review and revoke), profiles, capabilities, versions."""

from __future__ import annotations

import time
import uuid

from tests.harness import Client, ServerProcess

PW = "correct horse battery"


def name() -> str:
    return "u" + uuid.uuid4().hex[:10]


def uia_session(c: Client, method: str, path: str, body: dict) -> str:
    r = c.request(method, path, body)
    assert r.status_code == 401, r.text
    assert r.json()["flows"] == [{"stages": ["m.login.password"]}]
    return r.json()["session"]


# --- password ---------------------------------------------------------------------------------

def test_password_change_logs_out_other_devices_by_default(user: Client) -> None:
    other = Client(user.base_url)
    other.login(user.user_id, PW)
    sid = uia_session(user, "POST", "account/password", {"new_password": "new-pass-1"})
    r = user.post("account/password", {"new_password": "new-pass-1", "auth": user.password_auth(PW, sid)})
    assert r.status_code == 200, r.text
    assert user.get("account/whoami").status_code == 200
    assert other.get("account/whoami").status_code == 401
    assert [d["device_id"] for d in user.get("devices").json()["devices"]] == [user.device_id]
    bad = user.post("login", {"type": "m.login.password", "password": PW,
                              "identifier": {"type": "m.id.user", "user": user.user_id}}, token=None)
    assert bad.status_code == 403
    Client(user.base_url).login(user.user_id, "new-pass-1")


def test_password_change_can_keep_other_devices(user: Client) -> None:
    other = Client(user.base_url)
    other.login(user.user_id, PW)
    r = user.post("account/password", {"new_password": "new-pass-2", "logout_devices": False,
                                       "auth": user.password_auth(PW)})
    assert r.status_code == 200, r.text
    assert other.get("account/whoami").status_code == 200


def test_password_uia_wrong_password_is_401_forbidden_and_changes_nothing(user: Client) -> None:
    r = user.post("account/password", {"new_password": "x-new", "auth": user.password_auth("wrong")})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    assert "session" in r.json() and "flows" in r.json()
    Client(user.base_url).login(user.user_id, PW)


def test_password_uia_cannot_use_another_users_password(server: ServerProcess) -> None:
    a, b = server.client(), server.client()
    a.register()
    b.register()
    auth = {"type": "m.login.password", "password": PW,
            "identifier": {"type": "m.id.user", "user": b.user_id}}
    r = a.post("account/password", {"new_password": "hijack", "auth": auth})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"


def test_uia_session_of_one_endpoint_is_not_valid_for_another(user: Client) -> None:
    sid = uia_session(user, "POST", "account/password", {"new_password": "n"})
    r = user.post("account/deactivate", {"auth": user.password_auth(PW, sid)})
    assert r.status_code == 400
    assert user.get("account/whoami").status_code == 200


def test_password_policy(make_server) -> None:
    srv = make_server({"password_config": {"policy": {"enabled": True, "minimum_length": 10,
                                                      "require_digit": True}}})
    c = srv.client()
    r = c.post("register", {"username": name(), "password": "short",
                            "auth": {"type": "m.login.dummy"}}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_WEAK_PASSWORD")
    c.register(password="longenough1")
    r = c.post("account/password", {"new_password": "nodigitshere",
                                    "auth": c.password_auth("longenough1")})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_WEAK_PASSWORD")


# --- deactivation -----------------------------------------------------------------------------

def test_deactivate_account(server: ServerProcess) -> None:
    c = server.client()
    u = name()
    c.register(u)
    uid = c.user_id
    r = c.post("account/deactivate", {"auth": c.password_auth(PW)})
    assert r.status_code == 200, r.text
    assert r.json() == {"id_server_unbind_result": "no-support"}
    assert c.get("account/whoami").status_code == 401
    r = c.post("login", {"type": "m.login.password", "password": PW,
                         "identifier": {"type": "m.id.user", "user": u}}, token=None)
    assert r.status_code == 403
    # The id can never be registered again, and the profile is gone.
    r = c.post("register", {"username": u, "password": PW, "auth": {"type": "m.login.dummy"}},
               token=None)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")
    r = c.get(f"profile/{uid}", token=None)
    assert r.status_code == 404


# --- devices ----------------------------------------------------------------------------------

def test_devices_show_last_seen_ip_and_user_agent(user: Client) -> None:
    user.get("account/whoami", headers={"User-Agent": "HearthTest/1.0"})
    devs = user.get("devices").json()["devices"]
    assert len(devs) == 1
    d = devs[0]
    assert d["device_id"] == user.device_id and d["last_seen_ip"] == "127.0.0.1"
    assert isinstance(d["last_seen_ts"], int)
    one = user.get(f"devices/{user.device_id}").json()
    assert one["device_id"] == user.device_id


def test_device_rename_and_unknown_device(user: Client) -> None:
    assert user.put(f"devices/{user.device_id}", {"display_name": "My laptop"}).status_code == 200
    assert user.get(f"devices/{user.device_id}").json()["display_name"] == "My laptop"
    r = user.get("devices/NOPE")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    r = user.put("devices/NOPE", {"display_name": "x"})
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


def test_delete_device_with_uia_revokes_its_session(user: Client) -> None:
    other = Client(user.base_url)
    other.login(user.user_id, PW)
    sid = uia_session(user, "DELETE", f"devices/{other.device_id}", {})
    r = user.delete(f"devices/{other.device_id}", {"auth": user.password_auth(PW, sid)})
    assert r.status_code == 200, r.text
    assert other.get("account/whoami").status_code == 401
    ids = [d["device_id"] for d in user.get("devices").json()["devices"]]
    assert ids == [user.device_id]
    # Deleting a device that is already gone succeeds (spec: "or had been removed previously").
    r = user.delete("devices/NOPE", {"auth": user.password_auth(PW)})
    assert r.status_code == 200
    assert [d["device_id"] for d in user.get("devices").json()["devices"]] == [user.device_id]


def test_delete_devices_bulk(user: Client) -> None:
    others = []
    for _ in range(2):
        c = Client(user.base_url)
        c.login(user.user_id, PW)
        others.append(c)
    ids = [c.device_id for c in others] + ["NOT_A_DEVICE"]
    sid = uia_session(user, "POST", "delete_devices", {"devices": ids})
    # The first request's device list is what was authorised.
    r = user.post("delete_devices", {"devices": [user.device_id], "auth": user.password_auth(PW, sid)})
    assert r.status_code == 200, r.text
    for c in others:
        assert c.get("account/whoami").status_code == 401
    assert user.get("account/whoami").status_code == 200


def test_ip_records_are_purged_after_max_age(make_server) -> None:
    srv = make_server({"user_ips_max_age": "2s"})
    admin = srv.admin()
    c = srv.client()
    c.register()
    c.get("account/whoami", headers={"User-Agent": "Tracked/1"})
    who = admin.get(f"/_synapse/admin/v1/whois/{c.user_id}").json()
    conns = [x for d in who["devices"].values() for s in d["sessions"] for x in s["connections"]]
    assert any(x["user_agent"] == "Tracked/1" and x["ip"] == "127.0.0.1" for x in conns)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        who = admin.get(f"/_synapse/admin/v1/whois/{c.user_id}").json()
        if not who["devices"]:
            break
        time.sleep(0.5)
    assert who["devices"] == {}, who


# --- profiles ---------------------------------------------------------------------------------

def test_default_displayname_and_profile_readable_by_others(server: ServerProcess) -> None:
    a, b = server.client(), server.client()
    u = name()
    a.register(u)
    b.register()
    assert b.get(f"profile/{a.user_id}").json() == {"displayname": u}
    assert a.put(f"profile/{a.user_id}/displayname", {"displayname": "Alice A."}).status_code == 200
    assert a.put(f"profile/{a.user_id}/avatar_url", {"avatar_url": "mxc://test.local/abc"}).status_code == 200
    assert b.get(f"profile/{a.user_id}/displayname").json() == {"displayname": "Alice A."}
    assert b.get(f"profile/{a.user_id}", token=None).json() == {
        "displayname": "Alice A.", "avatar_url": "mxc://test.local/abc"}


def test_cannot_change_someone_elses_profile(server: ServerProcess) -> None:
    a, b = server.client(), server.client()
    a.register()
    b.register()
    r = b.put(f"profile/{a.user_id}/displayname", {"displayname": "pwned"})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")


def test_profile_missing_user_and_unset_field(user: Client) -> None:
    r = user.get("profile/@nobody:test.local")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    r = user.get(f"profile/{user.user_id}/avatar_url")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


def test_custom_profile_field_and_delete(user: Client) -> None:
    r = user.put(f"profile/{user.user_id}/m.tz", {"m.tz": "Europe/Berlin"})
    assert r.status_code == 200, r.text
    assert user.get(f"profile/{user.user_id}/m.tz").json() == {"m.tz": "Europe/Berlin"}
    assert user.delete(f"profile/{user.user_id}/m.tz").status_code == 200
    assert user.get(f"profile/{user.user_id}/m.tz").status_code == 404


def test_profile_size_limit(user: Client) -> None:
    r = user.put(f"profile/{user.user_id}/org.example.big", {"org.example.big": "x" * 70000})
    assert r.status_code == 400 and r.json()["errcode"] in ("M_PROFILE_TOO_LARGE", "M_TOO_LARGE")


# --- discovery --------------------------------------------------------------------------------

def test_versions_and_well_known(client: Client) -> None:
    v = client.get("/_matrix/client/versions", token=None).json()
    assert "v1.1" in v["versions"]
    wk = client.get("/.well-known/matrix/client", token=None)
    assert wk.json()["m.homeserver"]["base_url"] == client.base_url + "/"
    assert client.get("/.well-known/matrix/server", token=None).status_code == 404


def test_capabilities(user: Client) -> None:
    caps = user.get("capabilities").json()["capabilities"]
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.room_versions"]["default"] == "12"
    assert set(caps["m.room_versions"]["available"]) >= {"10", "11", "12"}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.set_avatar_url"] == {"enabled": True}
    assert user.get("capabilities", token=None).status_code == 401
