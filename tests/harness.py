"""Test harness: real server processes on SQLite and PostgreSQL, and a small HTTP client.

Servers run as separate processes exactly as an admin starts them (``python -m homeserver -c``),
so the tests exercise the real listener, config loading, migrations and logging. A server's log
is checked for tracebacks when it stops: a request that crashed the handler fails the run even
if its test only looked at the status code.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import psycopg2
import requests
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
ENGINES = ("sqlite", "postgres")


class PostgresMissing(RuntimeError):
    pass


def check_postgres() -> None:
    """Raise with instructions if the PostgreSQL the tests need is not there."""
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
        conn.close()
    except psycopg2.Error as e:
        raise PostgresMissing(
            f"PostgreSQL is required at {PG['host']}:{PG['port']} (user {PG['user']}, trust auth) "
            f"for the PostgreSQL half of the suite, and it is not reachable: {e}") from None


def create_pg_database() -> str:
    name = "hearth_test_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    conn.close()
    return name


def drop_pg_database(name: str) -> None:
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHARED_SECRET = "test-shared-secret"


def base_config(engine: str, workdir: str, port: int) -> tuple[dict[str, Any], str | None]:
    """A permissive config for tests: open registration, fast bcrypt, generous rate limits."""
    pg_name = None
    if engine == "sqlite":
        database = {"name": "sqlite3", "args": {"database": os.path.join(workdir, "homeserver.db")}}
    else:
        pg_name = create_pg_database()
        database = {"name": "psycopg2", "args": {**PG, "database": pg_name, "cp_min": 1, "cp_max": 5}}
    fast = {"per_second": 1000, "burst_count": 1000}
    cfg = {
        "server_name": "test.local",
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                       "resources": [{"names": ["client", "federation"]}]}],
        "database": database,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": SHARED_SECRET,
        "bcrypt_rounds": 4,
        "rc_message": fast, "rc_registration": fast,
        "rc_login": {"address": fast, "account": fast, "failed_attempts": fast},
        "rc_client_ip": fast,
    }
    return cfg, pg_name


class ServerProcess:
    """One homeserver process with its own config, database and log file."""

    def __init__(self, engine: str, overrides: dict[str, Any] | None = None,
                 port: int | None = None) -> None:
        self.engine = engine
        self.workdir = tempfile.mkdtemp(prefix=f"hearth-{engine}-")
        # ``port``: the client listener's port, when overrides (e.g. extra listeners) must name it.
        self.port = port or free_port()
        self.config, self.pg_name = base_config(engine, self.workdir, self.port)
        for k, v in (overrides or {}).items():
            if v is None:
                self.config.pop(k, None)
            else:
                self.config[k] = v
        self.config_path = os.path.join(self.workdir, "homeserver.yaml")
        self.log_path = os.path.join(self.workdir, "server.log")
        self.proc: subprocess.Popen | None = None
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f)
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "homeserver", "-c", self.config_path],
                                     cwd=self.workdir, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(self.base_url + "/_matrix/client/versions", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self.pg_name:
            drop_pg_database(self.pg_name)
            self.pg_name = None

    def tracebacks(self) -> list[str]:
        text = self.log()
        return [chunk[:2000] for chunk in text.split("Traceback (most recent call last)")[1:]]

    def client(self, validate: bool = True) -> "Client":
        return Client(self.base_url, validate=validate)

    def users(self, n: int) -> list["Client"]:
        """``n`` freshly registered users, each logged in."""
        out = []
        for _ in range(n):
            c = self.client()
            c.register()
            out.append(c)
        return out

    def admin(self, password: str = "correct horse battery") -> "Client":
        """A new server admin, created through shared-secret registration."""
        import hashlib
        import hmac
        c = self.client()
        nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
        username = "admin" + uuid.uuid4().hex[:8]
        mac = hmac.new(SHARED_SECRET.encode(), f"{nonce}\0{username}\0{password}\0admin".encode(),
                       hashlib.sha1).hexdigest()
        r = c.post("/_synapse/admin/v1/register", {"nonce": nonce, "username": username,
                                                    "password": password, "admin": True, "mac": mac})
        assert r.status_code == 200, r.text
        out = r.json()
        c.token, c.user_id, c.device_id = out["access_token"], out["user_id"], out["device_id"]
        return c


class Client:
    """requests with Matrix conveniences; every response is checked against the spec's schemas."""

    def __init__(self, base_url: str, token: str | None = None, validate: bool = True) -> None:
        self.base_url = base_url
        self.token = token
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.validate = validate
        self.session = requests.Session()

    def request(self, method: str, path: str, body: Any = None, *, token: Any = ...,
                data: bytes | None = None, headers: dict[str, str] | None = None,
                params: dict[str, Any] | None = None, validate: bool | None = None
                ) -> requests.Response:
        if not path.startswith("/"):
            path = "/_matrix/client/v3/" + path
        hdrs = dict(headers or {})
        tok = self.token if token is ... else token
        if tok is not None:
            hdrs.setdefault("Authorization", f"Bearer {tok}")
        kwargs: dict[str, Any] = {"headers": hdrs, "params": params, "timeout": 60}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        r = self.session.request(method, self.base_url + path, **kwargs)
        if (self.validate if validate is None else validate):
            _validate(method, path, r)
        return r

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, body, **kw)

    def register(self, username: str | None = None, password: str = "correct horse battery",
                 **extra: Any) -> dict[str, Any]:
        """Register through the dummy flow and adopt the new session."""
        username = username or ("u" + uuid.uuid4().hex[:10])
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"},
                **extra}
        r = self.post("register", body, token=None)
        assert r.status_code == 200, r.text
        out = r.json()
        self.token = out.get("access_token")
        self.user_id = out["user_id"]
        self.device_id = out.get("device_id")
        return out

    def login(self, user: str, password: str, **extra: Any) -> dict[str, Any]:
        r = self.post("login", {"type": "m.login.password",
                                "identifier": {"type": "m.id.user", "user": user},
                                "password": password, **extra}, token=None)
        assert r.status_code == 200, r.text
        out = r.json()
        self.token, self.user_id, self.device_id = out["access_token"], out["user_id"], out["device_id"]
        return out

    def password_auth(self, password: str = "correct horse battery", session: str | None = None
                      ) -> dict[str, Any]:
        auth: dict[str, Any] = {"type": "m.login.password", "password": password,
                                "identifier": {"type": "m.id.user", "user": self.user_id}}
        if session:
            auth["session"] = session
        return auth


def _validate(method: str, path: str, r: requests.Response) -> None:
    """Successes must match the spec's documented schema; errors the documented one or the
    standard error shape (statuses the spec leaves undocumented, unknown paths)."""
    from tests.spec_validation import validate_error, validate_response
    if not path.startswith("/_matrix/client/") or r.status_code == 204 or r.request.method == "HEAD":
        return
    body = r.json() if r.content else None
    if r.status_code < 400:
        validate_response(method, path, r.status_code, body)
        return
    if r.status_code == 401 and isinstance(body, dict) and body.get("errcode") in (
            "M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"):
        validate_error(r.status_code, body)  # an auth failure, not a UIA challenge
        return
    try:
        validate_response(method, path, r.status_code, body)
    except AssertionError as e:
        text = str(e)
        if not any(m in text for m in ("is not documented", "no path in the", "method not documented")):
            raise
        validate_error(r.status_code, body)
