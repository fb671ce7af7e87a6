"""The `hearth` command line, run as a subprocess: config generation, first run, config errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
import yaml

from crypto.keys import parse_signing_key_file
from homeserver.config import load_config
from tests.harness import ROOT, free_port

ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")


def hearth(*args: str, cwd: Path | str = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m homeserver` to completion (for commands that exit by themselves)."""
    return subprocess.run([sys.executable, "-m", "homeserver", *args], cwd=cwd, env=ENV,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


class Running:
    """A server started in the background, its output going to a file we can poll."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="hearth-cli-", suffix=".log")
        self.out_path = Path(name)
        self._out = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "homeserver", *args], cwd=cwd, env=ENV,
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None and not check():
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s:\n{self.output()}")

    def wait_listening(self, port: int) -> None:
        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/_matrix/client/versions",
                                    timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        self.wait_for(up)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(args: list[str], cwd: Path) -> Running:
        r = Running(args, cwd)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
        output = r.output()
        r.out_path.unlink()
        assert "Traceback" not in output, output


def generated(tmp_path: Path, port: int | None = None, **extra: object) -> Path:
    """A config written by --generate-config, optionally with its port and keys changed."""
    path = tmp_path / "homeserver.yaml"
    args = ["--generate-config", "--server-name", "cli.test", "-c", str(path)]
    if port is not None:
        args += ["--http-port", str(port)]
    out = hearth(*args)
    assert out.returncode == 0, out.stderr
    if extra:
        raw = yaml.safe_load(path.read_text())
        raw.update(extra)
        path.write_text(yaml.safe_dump(raw))
    return path


# --- --generate-config ---------------------------------------------------------------------------

def test_generate_config_writes_config_and_key(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "h.yaml"  # the folder does not exist yet
    out = hearth("--generate-config", "--server-name", "x.test", "-c", str(path))
    assert out.returncode == 0, out.stderr
    assert str(path) in out.stdout
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the shared secret
    config = load_config(str(path))
    assert config.server_name == "x.test"
    assert config.signing_key_path == str(tmp_path / "conf" / "x.test.signing.key")
    assert config.registration_shared_secret and len(config.registration_shared_secret) >= 32
    assert config.listeners[0].port == 8008
    assert config.listeners[0].bind_addresses == ("127.0.0.1",)
    keys = parse_signing_key_file(Path(config.signing_key_path).read_text())
    assert len(keys) == 1
    assert not (tmp_path / "conf" / "homeserver.db").exists()  # generating starts nothing


def test_generate_config_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    assert hearth("--generate-config", "-H", "x.test", "-c", str(path)).returncode == 0
    before = path.read_text()
    key = (tmp_path / "x.test.signing.key").read_text()
    again = hearth("--generate-config", "-H", "other.test", "-c", str(path))
    assert again.returncode == 1
    assert f"{path}: already exists" in again.stderr
    assert path.read_text() == before
    assert (tmp_path / "x.test.signing.key").read_text() == key
    assert not (tmp_path / "other.test.signing.key").exists()


def test_generated_secrets_differ(tmp_path: Path) -> None:
    a = load_config(str(generated(tmp_path / "a")))
    b = load_config(str(generated(tmp_path / "b")))
    assert a.registration_shared_secret != b.registration_shared_secret


def test_generate_config_options(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    out = hearth("--generate-config", "-H", "x.test", "-c", str(path), "--open-private-ports",
                 "--http-port", "8118", "--public-baseurl", "https://matrix.x.test",
                 "--report-stats", "no")
    assert out.returncode == 0, out.stderr
    config = load_config(str(path))
    assert config.listeners[0].port == 8118
    assert config.listeners[0].bind_addresses == ("0.0.0.0",)
    assert config.public_baseurl == "https://matrix.x.test/"


def test_generate_config_needs_a_server_name(tmp_path: Path) -> None:
    out = hearth("--generate-config", "-c", str(tmp_path / "h.yaml"))
    assert out.returncode == 2
    assert "--server-name" in out.stderr
    assert not (tmp_path / "h.yaml").exists()


@pytest.mark.parametrize("args,word", [
    (["-H", "not a name"], "server name"),
    (["-H", "x.test", "--http-port", "0"], "port"),
    (["-H", "x.test", "--public-baseurl", "matrix.x.test"], "public base URL"),
])
def test_generate_config_bad_arguments(tmp_path: Path, args: list[str], word: str) -> None:
    path = tmp_path / "h.yaml"
    out = hearth("--generate-config", "-c", str(path), *args)
    assert out.returncode == 1
    assert str(path) in out.stderr and word in out.stderr
    assert "Traceback" not in out.stderr
    assert not path.exists()


def test_generate_keys_creates_a_missing_key(tmp_path: Path) -> None:
    path = generated(tmp_path)
    key_path = tmp_path / "cli.test.signing.key"
    key_path.unlink()
    out = hearth("-c", str(path), "--generate-keys")
    assert out.returncode == 0, out.stderr
    assert len(parse_signing_key_file(key_path.read_text())) == 1
    assert not (tmp_path / "homeserver.db").exists()


# --- first run -----------------------------------------------------------------------------------

def test_first_run_without_config_generates_homeserver_yaml(tmp_path: Path,
                                                            running: Callable[..., Running]) -> None:
    # No arguments at all, as a first-time user runs it. It will try to listen on 8008, which may
    # be taken on this machine, so this only waits for the generated files and then stops it.
    work = tmp_path / "empty"
    work.mkdir()
    srv = running([], work)
    srv.wait_for(lambda: "First run: wrote" in srv.output())
    srv.stop()
    config = load_config(str(work / "homeserver.yaml"))
    assert config.server_name == "localhost"
    assert config.listeners[0].port == 8008
    assert config.listeners[0].bind_addresses == ("127.0.0.1",)
    assert config.database.args["database"] == str(work / "homeserver.db")
    assert (work / "localhost.signing.key").exists()


def test_first_run_starts_listening_and_reuses_its_config(tmp_path: Path,
                                                          running: Callable[..., Running]) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    port = free_port()
    srv = running(["--http-port", str(port), "-H", "first.test"], work)
    srv.wait_listening(port)
    assert "First run: wrote" in srv.output()
    config = load_config(str(work / "homeserver.yaml"))
    assert config.server_name == "first.test" and config.listeners[0].port == port
    assert (work / "first.test.signing.key").exists()
    assert (work / "homeserver.db").exists()
    assert (work / "media_store").is_dir()
    assert "register_new_matrix_user" in srv.output()  # the hint for creating an admin
    assert srv.stop() == 0
    secret = config.registration_shared_secret
    # The second start finds ./homeserver.yaml and does not write a new one.
    again = running([], work)
    again.wait_listening(port)
    assert "First run" not in again.output()
    assert load_config(str(work / "homeserver.yaml")).registration_shared_secret == secret
    assert again.stop() == 0


def test_pid_file_is_written_and_removed(tmp_path: Path, running: Callable[..., Running]) -> None:
    port = free_port()
    path = generated(tmp_path, port, pid_file="hearth.pid")
    srv = running(["-c", str(path)], tmp_path)
    srv.wait_listening(port)
    pid_file = tmp_path / "hearth.pid"
    srv.wait_for(pid_file.exists)
    assert int(pid_file.read_text()) == srv.proc.pid
    assert srv.stop() == 0
    assert not pid_file.exists()


def test_port_in_use_fails_start_up(tmp_path: Path, running: Callable[..., Running]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = generated(tmp_path, port)
        srv = running(["-c", str(path)], tmp_path)
        srv.proc.wait(60)
    assert srv.proc.returncode == 1
    assert "start-up failed" in srv.output()


# --- config errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,key", [
    ({"foo": 1}, "unknown key 'foo'"),
    ({"bcrypt_rounds": "many"}, "'bcrypt_rounds': expected an integer"),
    ({"max_upload_size": "10T"}, "'max_upload_size': expected a size"),
    ({"database": {"name": "sqlite3", "args": {"database": "x.db", "foo": 1}}},
     "unknown key 'database.args.foo'"),
    ({"listeners": [{"port": 8008, "foo": True}]}, "unknown key 'listeners[0].foo'"),
    ({"log_config": "missing-log.yaml"}, "'log_config': cannot use"),
])
def test_config_errors_stop_start_up(tmp_path: Path, extra: dict, key: str) -> None:
    path = generated(tmp_path, free_port(), **extra)
    out = hearth("-c", str(path), timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith(f"Configuration error: {path}: ")
    assert key in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "homeserver.db").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    out = hearth("-c", "missing.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert "missing.yaml: no such config file" in out.stderr and "--generate-config" in out.stderr
    assert list(tmp_path.iterdir()) == []  # an explicit -c is never generated


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("server_name: [x\n")
    out = hearth("-c", str(path))
    assert out.returncode == 1
    assert f"{path}: not valid YAML" in out.stderr


def test_console_script(tmp_path: Path) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "hearth")
    assert os.path.exists(exe), "console script missing: run `pip install -e .`"
    out = subprocess.run([exe, "-c", str(tmp_path / "nope.yaml")], capture_output=True, text=True,
                         env=ENV, timeout=60)
    assert out.returncode == 1 and "no such config file" in out.stderr
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode == 0 and "--generate-config" in out.stdout


# --- the container entrypoint (runs without Docker: it is a shell script around `hearth`) -------

def entrypoint(config: Path, **env: str) -> subprocess.CompletedProcess:
    """Run docker/entrypoint.sh with `hearth --generate-keys` as the final command (exits at once)."""
    bin_dir = os.path.dirname(sys.executable)
    full_env = {k: v for k, v in ENV.items() if k not in ("SERVER_NAME", "POSTGRES_HOST")}
    full_env.update(PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
                    HEARTH_CONFIG=str(config), **env)
    return subprocess.run(["sh", os.path.join(ROOT, "docker", "entrypoint.sh"), "--generate-keys"],
                          env=full_env, capture_output=True, text=True, timeout=60)


def test_docker_entrypoint_generates_sqlite_config(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    out = entrypoint(config, SERVER_NAME="docker.test", PUBLIC_BASEURL="https://m.docker.test")
    assert out.returncode == 0, out.stderr
    c = load_config(str(config))
    assert c.server_name == "docker.test" and c.public_baseurl == "https://m.docker.test/"
    assert c.listeners[0].bind_addresses == ("0.0.0.0",) and c.listeners[0].port == 8008
    assert c.database.name == "sqlite3"
    assert (tmp_path / "docker.test.signing.key").exists()
    # A second start keeps the existing file, whatever the environment says.
    before = config.read_text()
    out = entrypoint(config, SERVER_NAME="other.test", POSTGRES_HOST="db")
    assert out.returncode == 0, out.stderr
    assert config.read_text() == before


def test_docker_entrypoint_postgres_config(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    out = entrypoint(config, SERVER_NAME="docker.test", POSTGRES_HOST="db", POSTGRES_USER="hs",
                     POSTGRES_PASSWORD="pw", POSTGRES_DB="hsdb", POSTGRES_PORT="5433")
    assert out.returncode == 0, out.stderr
    c = load_config(str(config))
    assert c.database.name == "psycopg2"
    assert c.database.args == {"host": "db", "port": 5433, "user": "hs", "password": "pw",
                               "database": "hsdb", "cp_min": 5, "cp_max": 10}
    assert c.registration_shared_secret
    assert config.stat().st_mode & 0o777 == 0o600


def test_docker_entrypoint_needs_server_name(tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    out = entrypoint(config)
    assert out.returncode == 1
    assert "SERVER_NAME" in out.stderr and str(config) in out.stderr
    assert not config.exists()
