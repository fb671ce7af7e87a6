"""Create a user on a running homeserver through the admin shared-secret registration API.

Command-line compatible with Synapse's ``register_new_matrix_user``. It needs only the standard
library and PyYAML, so it works against Hearth or Synapse and can be copied anywhere.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Callable

import yaml

DEFAULT_SERVER_URL = "http://localhost:8008"
REGISTER_PATH = "/_synapse/admin/v1/register"
TIMEOUT_S = 30


class RegistrationFailed(Exception):
    """A step failed; the message is what the user should read."""


def registration_mac(secret: str, nonce: str, user: str, password: str, admin: bool,
                     user_type: str | None = None) -> str:
    """The hex HMAC-SHA1 the server expects: NUL-joined nonce, user, password, admin flag[, type]."""
    parts = [nonce, user, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    message = "\x00".join(parts).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha1).hexdigest()


# --- the config file ---------------------------------------------------------------------------

def _client_url(listeners: Any) -> str | None:
    """A local URL for the first listener serving the client API, if the config has one."""
    if not isinstance(listeners, list):
        return None
    for lis in listeners:
        if not isinstance(lis, dict) or not isinstance(lis.get("port"), int):
            continue
        if lis.get("type", "http") != "http":
            continue
        names = [n for res in lis.get("resources") or [] if isinstance(res, dict)
                 for n in res.get("names") or []]
        if "client" in names:
            scheme = "https" if lis.get("tls") else "http"
            return f"{scheme}://localhost:{lis['port']}"
    return None


def read_config(path: str) -> tuple[str, str | None]:
    """The shared secret and (if any) a client URL from a homeserver YAML config."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise RegistrationFailed(f"cannot read config file {path}: {e}") from None
    except yaml.YAMLError as e:
        raise RegistrationFailed(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise RegistrationFailed(f"config file {path} is not a YAML mapping")
    secret = config.get("registration_shared_secret")
    secret_path = config.get("registration_shared_secret_path")
    if not secret and isinstance(secret_path, str) and secret_path:
        if not os.path.isabs(secret_path):
            secret_path = os.path.join(os.path.dirname(os.path.abspath(path)), secret_path)
        try:
            with open(secret_path, encoding="utf-8") as f:
                secret = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise RegistrationFailed(f"cannot read registration_shared_secret_path "
                                     f"{secret_path}: {e}") from None
    if not isinstance(secret, str) or not secret:
        raise RegistrationFailed(
            f"no registration_shared_secret in config file {path}: set it (or "
            f"registration_shared_secret_path) and restart the server, or pass -k")
    return secret, _client_url(config.get("listeners"))


# --- HTTP ----------------------------------------------------------------------------------------

def _request(method: str, url: str, body: Any = None) -> Any:
    """Send a JSON request; return the decoded JSON answer or raise with the server's error."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise _http_error(e) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RegistrationFailed(f"cannot reach {url}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise RegistrationFailed(f"{url} answered something that is not JSON") from None


class ServerError(RegistrationFailed):
    """The server refused; keeps its status and Matrix errcode."""

    def __init__(self, status: int, errcode: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode


def _http_error(e: urllib.error.HTTPError) -> ServerError:
    raw = e.read()
    errcode, error = None, None
    try:
        body = json.loads(raw)
        if isinstance(body, dict):
            errcode, error = body.get("errcode"), body.get("error")
    except ValueError:
        pass
    what = f"{e.code} {e.reason}"
    if errcode or error:
        what += f": {error or ''}" + (f" ({errcode})" if errcode else "")
    return ServerError(e.code, errcode, f"the server answered {what}")


def register_user(server_url: str, secret: str, user: str, password: str, admin: bool,
                  user_type: str | None = None) -> dict[str, Any]:
    """Fetch a nonce, sign the request and register; returns the server's answer."""
    url = server_url.rstrip("/") + REGISTER_PATH
    nonce = _request("GET", url).get("nonce")
    if not isinstance(nonce, str):
        raise RegistrationFailed(f"{url} gave no nonce")
    body: dict[str, Any] = {
        "nonce": nonce, "username": user, "password": password, "admin": admin,
        "mac": registration_mac(secret, nonce, user, password, admin, user_type),
    }
    if user_type:
        body["user_type"] = user_type
    return _request("POST", url, body)


# --- the command line ---------------------------------------------------------------------------

def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="register_new_matrix_user",
        description="Register a new user on a homeserver with its registration_shared_secret. "
                    "Anything not given on the command line is asked for interactively.")
    p.add_argument("-u", "--user", help="the new user's localpart (asked for if omitted)")
    p.add_argument("--exists-ok", action="store_true",
                   help="succeed without changes if the user already exists")
    pw = p.add_mutually_exclusive_group()
    pw.add_argument("-p", "--password", help="the new user's password (asked for if omitted)")
    pw.add_argument("--password-file", help="read the password from this file")
    p.add_argument("-t", "--user_type", "--user-type", dest="user_type", default=None,
                   help="the user type, such as 'bot' or 'support'")
    adm = p.add_mutually_exclusive_group()
    adm.add_argument("-a", "--admin", dest="admin", action="store_true", default=None,
                     help="make the user a server admin (asked for if neither flag is given)")
    adm.add_argument("--no-admin", dest="admin", action="store_false", default=None,
                     help="make a normal user")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--config", help="homeserver YAML config holding "
                                            "registration_shared_secret")
    src.add_argument("-k", "--shared-secret", help="the registration shared secret")
    p.add_argument("server_url", nargs="?", default=None,
                   help="the homeserver's client URL (default: the client listener in the "
                        f"config given with -c, else {DEFAULT_SERVER_URL})")
    return p.parse_args(argv)


def _ask_user(ask: Callable[[str], str]) -> str:
    try:
        default = getpass.getuser()
    except Exception:  # no login name in this environment
        default = ""
    while True:
        answer = ask(f"New user localpart [{default}]: " if default else "New user localpart: ")
        answer = answer.strip() or default
        if answer:
            return answer


def _ask_password(ask_secret: Callable[[str], str]) -> str:
    while True:
        password = ask_secret("Password: ")
        if not password:
            print("Password cannot be blank.", file=sys.stderr)
            continue
        if ask_secret("Confirm password: ") != password:
            raise RegistrationFailed("passwords do not match")
        return password


def _ask_admin(ask: Callable[[str], str]) -> bool:
    while True:
        answer = ask("Make admin [no]: ").strip().lower()
        if answer in ("", "n", "no", "false"):
            return False
        if answer in ("y", "yes", "true"):
            return True
        print("Please answer yes or no.", file=sys.stderr)


def _read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise RegistrationFailed(f"cannot read password file {path}: {e}") from None
    if not password:
        raise RegistrationFailed(f"password file {path} is empty")
    return password


def run(args: argparse.Namespace) -> int:
    """Gather what is missing, register, and report; raises RegistrationFailed on errors."""
    if args.config:
        secret, config_url = read_config(args.config)
    else:
        secret, config_url = args.shared_secret, None
    if not secret:
        raise RegistrationFailed("the shared secret given with -k is empty")
    server_url = args.server_url or config_url or DEFAULT_SERVER_URL
    password = _read_password_file(args.password_file) if args.password_file else args.password

    missing = [flag for flag, value in (("-u/--user", args.user), ("-p/--password", password),
                                        ("-a/--admin or --no-admin", args.admin))
               if value is None]
    if missing and not sys.stdin.isatty():
        raise RegistrationFailed("standard input is not a terminal, so cannot ask for: "
                                 + ", ".join(missing) + "; give them on the command line")
    user = args.user if args.user is not None else _ask_user(input)
    if password is None:
        password = _ask_password(getpass.getpass)
    admin = args.admin if args.admin is not None else _ask_admin(input)
    if not user:
        raise RegistrationFailed("the user name cannot be empty")
    if not password:
        raise RegistrationFailed("the password cannot be empty")

    print(f"Sending registration request to {server_url} ...")
    try:
        result = register_user(server_url, secret, user, password, admin, args.user_type)
    except ServerError as e:
        if args.exists_ok and e.errcode == "M_USER_IN_USE":
            print(f"User {user!r} already exists; nothing to do.")
            return 0
        raise
    kind = "admin" if admin else "user"
    print(f"Success! Registered {result.get('user_id', user)} ({kind}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console scripts; returns the process exit code."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except RegistrationFailed as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\nAborted.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
