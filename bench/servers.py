"""Start and stop the two homeservers under test: Hearth and a pip-installed Synapse.

Both get the same treatment: a fresh database (SQLite file or a new PostgreSQL database), a
loopback listener on a free port, open registration, bcrypt at 4 rounds, every rate limit raised
far above what the load needs, and their default logging (INFO, access log included) to a file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import yaml

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
SYNAPSE_VERSION = "1.163.2"
SYNAPSE_VENV = os.path.join(BENCH_DIR, ".venv-synapse")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
SERVER_NAME = "bench.local"
BCRYPT_ROUNDS = 4
# The same database pool for both servers on PostgreSQL (Synapse's defaults).
PG_POOL = {"cp_min": 5, "cp_max": 10}
UNLIMITED = {"per_second": 100000, "burst_count": 100000}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Synapse's virtualenv ----------------------------------------------------------------------

def synapse_python() -> str:
    return os.path.join(SYNAPSE_VENV, "bin", "python")


def ensure_synapse_venv(log=print) -> str:
    """Create bench/.venv-synapse with matrix-synapse (and psycopg2) if it is not there yet."""
    py = synapse_python()
    check = [py, "-c", "import importlib.metadata as m, synapse, psycopg2; "
                     "print(m.version('matrix-synapse'))"]
    if os.path.exists(py):
        r = subprocess.run(check, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == SYNAPSE_VERSION:
            return py
    log(f"installing matrix-synapse=={SYNAPSE_VERSION} into {SYNAPSE_VENV} (about a minute)...")
    if not os.path.exists(py):
        # A plain interpreter, not the project's venv: Synapse's dependencies stay apart.
        subprocess.run(["python3", "-m", "venv", SYNAPSE_VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"matrix-synapse[postgres]=={SYNAPSE_VERSION}"], check=True)
    r = subprocess.run(check, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"Synapse venv is broken after install:\n{r.stderr}")
    return py


# --- PostgreSQL --------------------------------------------------------------------------------

def create_pg_database(prefix: str) -> str:
    import psycopg2
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        # Synapse refuses a database whose collation is not C.
        cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0 "
                    f"LC_COLLATE 'C' LC_CTYPE 'C'")
    conn.close()
    return name


def drop_pg_database(name: str) -> None:
    import psycopg2
    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


# --- /proc readings ----------------------------------------------------------------------------

def proc_status_kb(pid: int, field: str) -> int | None:
    """A VmHWM/VmRSS-style line of /proc/<pid>/status, in kB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return float(total - idle), float(total)


def pg_backend_pids(dbname: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to one database (other databases on the same
    PostgreSQL, such as other people's tests, are left out)."""
    import psycopg2
    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
            return [int(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


def pg_backends_cpu(dbname: str) -> dict[int, float]:
    return {pid: proc_cpu_seconds(pid) for pid in pg_backend_pids(dbname)}


def other_busy_cores(exclude_pids: tuple[int, ...], seconds: float = 1.0) -> float:
    """Cores kept busy by processes other than ours over a short sample."""
    own0 = sum(proc_cpu_seconds(p) for p in exclude_pids)
    b0, t0 = system_cpu()
    time.sleep(seconds)
    b1, t1 = system_cpu()
    own1 = sum(proc_cpu_seconds(p) for p in exclude_pids)
    ncpu = os.cpu_count() or 1
    machine = (b1 - b0) / max(1.0, t1 - t0) * ncpu
    return max(0.0, machine - (own1 - own0) / seconds)


def wait_for_quiet(log, exclude_pids: tuple[int, ...], limit: float = 0.3,
                   max_wait: float = 60.0) -> float:
    """Wait (bounded) until other work on the machine calms down; return the last sample."""
    deadline = time.monotonic() + max_wait
    busy = other_busy_cores(exclude_pids)
    while busy > limit and time.monotonic() < deadline:
        log(f"other processes keep {busy:.2f} cores busy; waiting for them (at most "
            f"{deadline - time.monotonic():.0f}s more)")
        busy = other_busy_cores(exclude_pids, 3.0)
    return busy


# --- the servers -------------------------------------------------------------------------------

class Server:
    """One homeserver process: its work dir, database, port and log."""

    kind = "?"

    def __init__(self, engine: str, workroot: str, tag: str = "",
                 extra_config: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.extra_config = dict(extra_config or {})
        self.workdir = os.path.join(workroot, f"{self.kind}-{engine}{tag}")
        os.makedirs(self.workdir, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = os.path.join(self.workdir, "homeserver.yaml")
        self.stdout_path = os.path.join(self.workdir, "stdout.log")
        self.pg_name: str | None = None
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    # subclasses fill these in
    def write_config(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONUNBUFFERED="1")

    def log_paths(self) -> list[str]:
        return [self.stdout_path]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 180.0) -> None:
        if self.engine == "postgres":
            self.pg_name = create_pg_database(f"bench_{self.kind}")
        self.write_config()
        self._out = open(self.stdout_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.env(),
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} during start-up; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/_matrix/client/versions", timeout=2) as r:
                    if r.status == 200:
                        self.start_seconds = time.monotonic() - t0
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer within {timeout}s; log tail:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_kb(self) -> int | None:
        return proc_status_kb(self.pid, "VmHWM") if self.alive() else None

    def rss_kb(self) -> int | None:
        return proc_status_kb(self.pid, "VmRSS") if self.alive() else None

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid) if self.alive() else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_out", None):
            self._out.close()
            self._out = None

    def cleanup(self) -> None:
        self.stop()
        if self.pg_name:
            try:
                drop_pg_database(self.pg_name)
            except Exception as e:  # noqa: BLE001 - best effort at exit
                print(f"warning: could not drop database {self.pg_name}: {e}", file=sys.stderr)
            self.pg_name = None

    def log_tail(self, n: int = 40) -> str:
        out = []
        for p in self.log_paths():
            try:
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                out.append(f"--- {p}\n" + "\n".join(lines))
            except OSError:
                pass
        return "\n".join(out)

    def count_in_logs(self, needle: str) -> int:
        total = 0
        for p in self.log_paths():
            try:
                with open(p, "rb") as f:
                    total += f.read().decode("utf-8", "replace").count(needle)
            except OSError:
                pass
        return total

    def database_config(self) -> dict[str, Any]:
        if self.engine == "sqlite":
            return {"name": "sqlite3", "args": {"database": os.path.join(self.workdir, "homeserver.db")}}
        return {"name": "psycopg2", "args": {**PG, "database": self.pg_name, **PG_POOL}}


class HearthServer(Server):
    kind = "hearth"

    def write_config(self) -> None:
        cfg = {
            "server_name": SERVER_NAME,
            "public_baseurl": self.base_url + "/",
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http",
                           "resources": [{"names": ["client", "federation"]}]}],
            "database": self.database_config(),
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": uuid.uuid4().hex,
            "bcrypt_rounds": BCRYPT_ROUNDS,
            "rc_message": UNLIMITED, "rc_registration": UNLIMITED,
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_client_ip": UNLIMITED,
            **self.extra_config,
        }
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "homeserver", "-c", self.config_path]

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PYTHONPATH"] = ROOT
        return env


class SynapseServer(Server):
    kind = "synapse"

    def write_config(self) -> None:
        if os.path.exists(self.config_path):
            os.remove(self.config_path)
        subprocess.run([synapse_python(), "-m", "synapse.app.homeserver", "--generate-config",
                        "--server-name", SERVER_NAME, "--config-path", self.config_path,
                        "--report-stats=no"], cwd=self.workdir, check=True,
                       stdout=subprocess.DEVNULL)
        with open(self.config_path) as f:
            cfg = yaml.safe_load(f)
        cfg["listeners"] = [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http",
                             "tls": False, "x_forwarded": False,
                             "resources": [{"names": ["client", "federation"], "compress": False}]}]
        cfg["public_baseurl"] = self.base_url + "/"
        cfg["database"] = self.database_config()
        cfg["enable_registration"] = True
        cfg["enable_registration_without_verification"] = True
        cfg["bcrypt_rounds"] = BCRYPT_ROUNDS
        cfg["trusted_key_servers"] = []
        cfg["suppress_key_server_warning"] = True
        cfg["report_stats"] = False
        for key in ("rc_message", "rc_registration", "rc_registration_token_validity",
                    "rc_admin_redaction", "rc_joins_per_room", "rc_3pid_validation",
                    "rc_third_party_invite", "rc_media_create", "rc_delayed_event_mgmt",
                    "rc_room_creation", "rc_reports", "rc_user_directory", "rc_profile",
                    "rc_key_requests"):
            cfg[key] = UNLIMITED
        cfg["rc_login"] = {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED}
        cfg["rc_joins"] = {"local": UNLIMITED, "remote": UNLIMITED}
        cfg["rc_invites"] = {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED}
        cfg["rc_presence"] = {"per_user": UNLIMITED}
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f)

    def command(self) -> list[str]:
        return [synapse_python(), "-m", "synapse.app.homeserver", "-c", self.config_path]

    def log_paths(self) -> list[str]:
        return [self.stdout_path, os.path.join(self.workdir, "homeserver.log")]


SERVERS = {"hearth": HearthServer, "synapse": SynapseServer}


def versions() -> dict[str, str]:
    out = {"synapse": SYNAPSE_VERSION}
    try:
        r = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; "
                            "print(m.version('hearth-homeserver'))"], capture_output=True, text=True)
        out["hearth"] = r.stdout.strip() or "?"
    except OSError:
        out["hearth"] = "?"
    return out


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


