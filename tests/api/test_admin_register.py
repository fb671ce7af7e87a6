"""Shared-secret admin registration: the register_new_matrix_user script and the raw endpoint."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import io
import os
import subprocess
import sys
import uuid
from typing import Any, Callable

import pytest
import requests

from scripts import register_new_matrix_user as script
from tests.harness import ROOT, SHARED_SECRET, ServerProcess
from tests.spec_validation import validate_error

REGISTER = "/_synapse/admin/v1/register"
PASSWORD = "correct horse battery"


def name() -> str:
    return "u" + uuid.uuid4().hex[:10]


def mac(secret: str, nonce: str, user: str, password: str, admin: bool,
        user_type: str | None = None) -> str:
    """The MAC as Synapse's admin API documents it, written out independently of the script."""
    msg = b"\x00".join([nonce.encode(), user.encode(), password.encode(),
                        b"admin" if admin else b"notadmin"] + ([user_type.encode()] if user_type else []))
    return hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()


def run_script(*args: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the script as an admin would, with no terminal on stdin."""
    cmd = command or [sys.executable, "-m", "scripts.register_new_matrix_user"]
    return subprocess.run(cmd + list(args), cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def login(server: ServerProcess, user: str, password: str = PASSWORD) -> requests.Response:
    return server.client().post("login", {"type": "m.login.password", "password": password,
                                          "identifier": {"type": "m.id.user", "user": user}},
                                token=None)


def token_for(server: ServerProcess, user: str, password: str = PASSWORD) -> str:
    r = login(server, user, password)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def other_user(server: ServerProcess) -> str:
    c = server.client()
    return c.register()["user_id"]


def is_admin(server: ServerProcess, token: str, other: str) -> bool:
    """Whois on someone else is admin-only: 200 for admins, 403 M_FORBIDDEN for others."""
    r = server.client().get(f"/_synapse/admin/v1/whois/{other}", token=token)
    if r.status_code == 403:
        assert r.json()["errcode"] == "M_FORBIDDEN"
        return False
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == other
    return True


def nonce(server: ServerProcess) -> str:
    r = requests.get(server.base_url + REGISTER, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["nonce"]


def post_register(server: ServerProcess, body: Any = None, data: bytes | None = None
                  ) -> requests.Response:
    if data is not None:
        return requests.post(server.base_url + REGISTER, data=data, timeout=30)
    return requests.post(server.base_url + REGISTER, json=body, timeout=30)


def signed_body(server: ServerProcess, user: str, *, admin: bool = False, secret: str = SHARED_SECRET,
                user_type: str | None = None, mac_user_type: str | None = None) -> dict[str, Any]:
    n = nonce(server)
    body = {"nonce": n, "username": user, "password": PASSWORD, "admin": admin,
            "mac": mac(secret, n, user, PASSWORD, admin, mac_user_type)}
    if user_type:
        body["user_type"] = user_type
    return body


def assert_error(r: requests.Response, status: int, errcode: str) -> dict[str, Any]:
    body = r.json()
    assert (r.status_code, body.get("errcode")) == (status, errcode), r.text
    validate_error(r.status_code, body)
    return body


# --- the script against a running server --------------------------------------------------------

@pytest.mark.parametrize("admin,user_type", [(True, None), (False, None), (False, "bot")])
def test_script_mac_matches_documented_scheme(admin: bool, user_type: str | None) -> None:
    args = ("secret", "abc123", "alice", "pässword", admin, user_type)
    assert script.registration_mac(*args) == mac(*args)
    assert script.registration_mac(*args) != mac("secret", "abc123", "alice", "pässword", not admin,
                                                 user_type)


def test_script_with_config_creates_admin(server: ServerProcess) -> None:
    user = name()
    # No server URL: the script finds the client listener in the config file.
    out = run_script("-c", server.config_path, "-u", user, "-p", PASSWORD, "-a")
    assert out.returncode == 0, out.stderr
    assert f"@{user}:test.local" in out.stdout and "Success" in out.stdout
    token = token_for(server, user)
    who = server.client().get("account/whoami", token=token)
    assert who.status_code == 200 and who.json()["user_id"] == f"@{user}:test.local"
    assert is_admin(server, token, other_user(server))


def test_script_with_shared_secret_and_url(server: ServerProcess) -> None:
    user = name()
    out = run_script("-k", SHARED_SECRET, "-u", user.upper(), "-p", PASSWORD, "--admin",
                     server.base_url + "/")
    assert out.returncode == 0, out.stderr
    # The server lowercases the localpart, as Synapse does.
    token = token_for(server, user)
    assert is_admin(server, token, other_user(server))


def test_script_no_admin_makes_a_normal_user(server: ServerProcess) -> None:
    user = name()
    out = run_script("-k", SHARED_SECRET, "-u", user, "-p", PASSWORD, "--no-admin", server.base_url)
    assert out.returncode == 0, out.stderr
    assert "(user)" in out.stdout
    token = token_for(server, user)
    assert not is_admin(server, token, other_user(server))
    # Whois on oneself needs no admin rights.
    r = server.client().get(f"/_synapse/admin/v1/whois/@{user}:test.local", token=token)
    assert r.status_code == 200, r.text


def test_script_user_type_is_signed(server: ServerProcess) -> None:
    user = name()
    out = run_script("-k", SHARED_SECRET, "-u", user, "-p", PASSWORD, "--no-admin", "-t", "bot",
                     server.base_url)
    assert out.returncode == 0, out.stderr
    token_for(server, user)


def test_console_script_is_installed(server: ServerProcess) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "hearth-register-user")
    assert os.path.exists(exe), "console script missing: run `pip install -e .`"
    user = name()
    out = run_script("-k", SHARED_SECRET, "-u", user, "-p", PASSWORD, "--no-admin", server.base_url,
                     command=[exe])
    assert out.returncode == 0, out.stderr
    token_for(server, user)


def test_script_wrong_secret_is_refused(server: ServerProcess) -> None:
    user = name()
    out = run_script("-k", "not-the-secret", "-u", user, "-p", PASSWORD, "-a", server.base_url)
    assert out.returncode == 1
    assert "HMAC incorrect" in out.stderr and "403" in out.stderr
    assert login(server, user).status_code == 403


def test_script_user_in_use(server: ServerProcess) -> None:
    user = name()
    args = ("-k", SHARED_SECRET, "-u", user, "-p", PASSWORD, "--no-admin", server.base_url)
    assert run_script(*args).returncode == 0
    again = run_script(*args)
    assert again.returncode == 1
    assert "M_USER_IN_USE" in again.stderr
    ok = run_script(*args, "--exists-ok")
    assert ok.returncode == 0, ok.stderr
    assert "already exists" in ok.stdout


def test_script_invalid_username_reports_server_error(server: ServerProcess) -> None:
    out = run_script("-k", SHARED_SECRET, "-u", "bad name!", "-p", PASSWORD, "--no-admin",
                     server.base_url)
    assert out.returncode == 1
    assert "M_INVALID_USERNAME" in out.stderr


def test_script_without_terminal_refuses_to_prompt(server: ServerProcess) -> None:
    out = run_script("-k", SHARED_SECRET, server.base_url)
    assert out.returncode == 1
    assert "not a terminal" in out.stderr
    for flag in ("--user", "--password", "--no-admin"):
        assert flag in out.stderr
    # Only the admin flag missing is enough to refuse, and nothing is registered.
    user = name()
    out = run_script("-k", SHARED_SECRET, "-u", user, "-p", PASSWORD, server.base_url)
    assert out.returncode == 1 and "--admin" in out.stderr
    assert login(server, user).status_code == 403


def test_script_unreachable_server() -> None:
    from tests.harness import free_port
    out = run_script("-k", SHARED_SECRET, "-u", name(), "-p", PASSWORD, "-a",
                     f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert "cannot reach" in out.stderr


def test_script_password_file(server: ServerProcess, tmp_path: Any) -> None:
    user = name()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    out = run_script("-k", SHARED_SECRET, "-u", user, "--password-file", str(pw), "--no-admin",
                     server.base_url)
    assert out.returncode == 0, out.stderr
    token_for(server, user)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _interactive(monkeypatch: pytest.MonkeyPatch, answers: list[str], secrets: list[str]
                 ) -> Callable[[list[str]], int]:
    """Run main() in-process as if at a terminal, answering prompts from the given lists."""
    prompts: list[str] = []

    def ask(prompt: str = "") -> str:
        prompts.append(prompt)
        return answers.pop(0)

    def ask_secret(prompt: str = "Password: ", stream: Any = None) -> str:
        prompts.append(prompt)
        return secrets.pop(0)

    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr("builtins.input", ask)
    monkeypatch.setattr(getpass, "getpass", ask_secret)
    monkeypatch.setattr(getpass, "getuser", lambda: "someone")
    return script.main


def test_script_prompts_for_missing_values(server: ServerProcess, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    user = name()
    main = _interactive(monkeypatch, [user, "maybe", "yes"], [PASSWORD, PASSWORD])
    assert main(["-k", SHARED_SECRET, server.base_url]) == 0
    token = token_for(server, user)
    assert is_admin(server, token, other_user(server))


def test_script_prompt_defaults_and_mismatch(server: ServerProcess, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # An empty answer takes the login name offered as default; mismatched passwords abort.
    main = _interactive(monkeypatch, [""], [PASSWORD, PASSWORD + "x"])
    assert main(["-k", SHARED_SECRET, "--no-admin", server.base_url]) == 1
    assert "do not match" in capsys.readouterr().err
    # An empty answer to the admin question means no.
    main = _interactive(monkeypatch, ["", ""], ["", PASSWORD, PASSWORD])
    user = "someone" + uuid.uuid4().hex[:6]
    monkeypatch.setattr(getpass, "getuser", lambda: user)
    assert main(["-k", SHARED_SECRET, server.base_url]) == 0
    assert "cannot be blank" in capsys.readouterr().err
    assert not is_admin(server, token_for(server, user), other_user(server))


# --- servers with special shared-secret configs --------------------------------------------------

def test_missing_secret_disables_shared_secret_registration(
        make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server({"registration_shared_secret": None})
    assert_error(requests.get(srv.base_url + REGISTER, timeout=30), 400, "M_UNKNOWN")
    assert_error(post_register(srv, {"nonce": "x", "username": name(), "password": PASSWORD,
                                     "mac": "00"}), 400, "M_UNKNOWN")
    out = run_script("-c", srv.config_path, "-u", name(), "-p", PASSWORD, "-a")
    assert out.returncode == 1 and "no registration_shared_secret" in out.stderr
    assert srv.config_path in out.stderr
    out = run_script("-k", SHARED_SECRET, "-u", name(), "-p", PASSWORD, "-a", srv.base_url)
    assert out.returncode == 1 and "400" in out.stderr and "not enabled" in out.stderr


def test_secret_from_registration_shared_secret_path(
        make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server({"registration_shared_secret": None,
                       "registration_shared_secret_path": "secret.txt"}, start=False)
    with open(os.path.join(srv.workdir, "secret.txt"), "w") as f:
        f.write("file-secret\n")
    srv.start()
    user = name()
    out = run_script("-c", srv.config_path, "-u", user, "-p", PASSWORD, "-a")
    assert out.returncode == 0, out.stderr
    assert is_admin(srv, token_for(srv, user), other_user(srv))
    out = run_script("-k", SHARED_SECRET, "-u", name(), "-p", PASSWORD, "-a", srv.base_url)
    assert out.returncode == 1 and "HMAC incorrect" in out.stderr


# --- the raw endpoint -----------------------------------------------------------------------------

def test_endpoint_registers_and_returns_a_session(server: ServerProcess) -> None:
    user = name()
    r = post_register(server, signed_body(server, user, admin=True))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["user_id"] == f"@{user}:test.local" and out["home_server"] == "test.local"
    who = server.client().get("account/whoami", token=out["access_token"])
    assert who.json()["user_id"] == out["user_id"] and who.json()["device_id"] == out["device_id"]
    assert is_admin(server, out["access_token"], other_user(server))


def test_nonce_is_single_use(server: ServerProcess) -> None:
    body = signed_body(server, name())
    assert post_register(server, body).status_code == 200
    again = dict(body, username=name())
    again["mac"] = mac(SHARED_SECRET, body["nonce"], again["username"], PASSWORD, False)
    assert_error(post_register(server, again), 400, "M_UNKNOWN")


def test_failed_mac_spends_the_nonce(server: ServerProcess) -> None:
    user = name()
    good = signed_body(server, user)
    bad = dict(good, mac=mac("wrong", good["nonce"], user, PASSWORD, False))
    body = assert_error(post_register(server, bad), 403, "M_FORBIDDEN")
    assert body["error"] == "HMAC incorrect"
    assert_error(post_register(server, good), 400, "M_UNKNOWN")
    assert login(server, user).status_code == 403


def test_unknown_nonce(server: ServerProcess) -> None:
    user = name()
    n = "f" * 64
    body = {"nonce": n, "username": user, "password": PASSWORD, "admin": False,
            "mac": mac(SHARED_SECRET, n, user, PASSWORD, False)}
    assert_error(post_register(server, body), 400, "M_UNKNOWN")


def test_mac_covers_admin_flag_and_user_type(server: ServerProcess) -> None:
    user = name()
    # Signed as a normal user but asking for admin.
    body = dict(signed_body(server, user, admin=False), admin=True)
    assert_error(post_register(server, body), 403, "M_FORBIDDEN")
    # A user_type that the mac does not cover.
    assert_error(post_register(server, signed_body(server, user, user_type="bot")), 403, "M_FORBIDDEN")
    r = post_register(server, signed_body(server, user, user_type="bot", mac_user_type="bot"))
    assert r.status_code == 200, r.text


def test_endpoint_user_in_use(server: ServerProcess) -> None:
    user = name()
    assert post_register(server, signed_body(server, user)).status_code == 200
    assert_error(post_register(server, signed_body(server, user)), 400, "M_USER_IN_USE")
    assert_error(post_register(server, signed_body(server, user.upper())), 400, "M_USER_IN_USE")


def test_bad_json(server: ServerProcess) -> None:
    assert_error(post_register(server, data=b"{not json"), 400, "M_NOT_JSON")
    assert_error(post_register(server, data=b""), 400, "M_NOT_JSON")
    assert_error(post_register(server, ["a", "list"]), 400, "M_BAD_JSON")


@pytest.mark.parametrize("field", ["nonce", "username", "password", "mac"])
def test_missing_fields(server: ServerProcess, field: str) -> None:
    body = signed_body(server, name())
    del body[field]
    assert_error(post_register(server, body), 400, "M_MISSING_PARAM")


@pytest.mark.parametrize("field,value", [("nonce", 1), ("username", ["x"]), ("password", None),
                                         ("admin", "yes"), ("mac", {}), ("user_type", 5),
                                         ("displayname", False)])
def test_wrong_field_types(server: ServerProcess, field: str, value: Any) -> None:
    body = signed_body(server, name())
    body[field] = value
    assert_error(post_register(server, body), 400, "M_INVALID_PARAM")
