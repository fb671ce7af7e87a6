"""A real Synapse beside Hearth, for federation tests: a test CA, Synapse's process, and the config
that makes Hearth serve federation over TLS.

Federation is HTTPS only, so each server gets a certificate for its server name from a CA the test
generates, and each server trusts that CA (``federation_custom_ca_list``; certificate checks stay
on). Server names are IP literals with ports (``127.0.0.1:PORT``): no DNS, no .well-known, no SRV.
Both servers refuse loopback destinations by default; the configs here use the default IP range
blacklist minus loopback (Synapse ignores ``ip_range_whitelist`` for IP-literal names).

Synapse runs from the repository's ``.venv-synapse`` (``make synapse``, part of ``make test``).
A missing Synapse is an error, never a skip.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homeserver.config import DEFAULT_IP_RANGE_BLACKLIST
from tests.harness import Client, ServerProcess, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNAPSE_VERSION = "1.163.2"
SYNAPSE_VENV = os.path.join(ROOT, ".venv-synapse")
SYNAPSE_STAMP = os.path.join(SYNAPSE_VENV, f".installed-{SYNAPSE_VERSION}")

# Synapse's DEFAULT_IP_RANGE_BLOCKLIST (synapse/config/server.py, 1.163.2).
SYNAPSE_DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7",
    "2001:db8::/32", "ff00::/8", "fec0::/10",
)
LOOPBACK_RANGES = ("127.0.0.0/8", "::1/128")


def loopback_open_blacklist(default: tuple[str, ...] = SYNAPSE_DEFAULT_IP_RANGE_BLACKLIST
                            ) -> list[str]:
    """A server's default IP range blacklist minus loopback: every other private range stays
    refused."""
    return [r for r in default if r not in LOOPBACK_RANGES]


class SynapseMissing(RuntimeError):
    pass


def synapse_python() -> str:
    """The interpreter of the repository's Synapse venv; raises (never skips) if it is missing."""
    py = os.path.join(SYNAPSE_VENV, "bin", "python")
    if not (os.path.exists(SYNAPSE_STAMP) and os.path.exists(py)):
        raise SynapseMissing(
            f"matrix-synapse=={SYNAPSE_VERSION} is required in {SYNAPSE_VENV} for the federation "
            f"tests and is not installed there: run `make synapse` (part of `make test`)")
    return py


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """``host[:port]`` → (host, port); IPv6 literals come bracketed (``[::1]:8448``)."""
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = server_name.rpartition(":")
    if not sep:
        return server_name, None
    return host, int(port)


# --- the CA ------------------------------------------------------------------------------------

class FederationCA:
    """A throw-away CA and one certificate per server name, as PEM files in ``workdir``.

    ``ca_path`` is what each server trusts (``federation_custom_ca_list``); ``issue(name)`` gives
    ``(certificate_path, key_path)`` for a server name (the port is ignored; an IP literal gets an
    IP SAN, anything else a DNS SAN). Keys are EC P-256: fast to make, accepted by OpenSSL
    everywhere.
    """

    def __init__(self, workdir: str, name: str = "Hearth test CA") -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {uuid.uuid4().hex[:8]}")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = os.path.join(workdir, "ca.pem")
        with open(self.ca_path, "wb") as f:
            f.write(self.certificate.public_bytes(serialization.Encoding.PEM))
        self._issued: dict[tuple[str, str], tuple[str, str]] = {}

    def issue(self, server_name: str, directory: str | None = None) -> tuple[str, str]:
        """(certificate_path, private_key_path) for ``server_name``, written to ``directory``
        (default: the CA's own); made once per host and directory."""
        host, _ = split_server_name(server_name)
        directory = directory or self.workdir
        if (host, directory) in self._issued:
            return self._issued[(host, directory)]
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, host.replace(":", "_"))
        cert_path, key_path = stem + ".crt", stem + ".key"
        with open(cert_path, "wb") as f:
            # Leaf then CA: a full chain, as a real deployment would serve it.
            f.write(cert.public_bytes(serialization.Encoding.PEM))
            f.write(self.certificate.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        self._issued[(host, directory)] = (cert_path, key_path)
        return cert_path, key_path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA and checks host names."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        ctx.check_hostname = True
        return ctx


def tls_get(ca: FederationCA, server_name: str, path: str, *, address: str | None = None,
            port: int | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``path`` over TLS from the server behind ``server_name``, verifying its certificate for
    that name against ``ca``; ``address`` overrides where to connect (a DNS name on 127.0.0.x).
    Returns (status, parsed JSON or raw bytes)."""
    host, name_port = split_server_name(server_name)
    port = port or name_port or 8448
    ctx = ca.ssl_context()
    sock = socket.create_connection((address or host, port), timeout=timeout)
    try:
        tls = ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = tls
    try:
        conn.request("GET", path, headers={"Host": server_name})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, body


# --- Synapse -----------------------------------------------------------------------------------

UNLIMITED = {"per_second": 100000, "burst_count": 100000}
# Short federation back-off: a peer that was down (a Hearth restarting) is retried in seconds.
FAST_FEDERATION_RETRY = {
    "destination_min_retry_interval": "1s",
    "destination_retry_multiplier": 2,
    "destination_max_retry_interval": "5s",
}


class SynapseServer:
    """One Synapse process: TLS federation listener on ``fed_port``, plain client listener on
    ``client_port``, SQLite, everything in ``workdir`` (config, signing key, database, logs).

    ``extra_config`` is merged over the generated config last (top-level keys).
    """

    def __init__(self, workdir: str, server_name: str, fed_port: int, client_port: int,
                 ca: FederationCA, *, bind_address: str = "127.0.0.1",
                 extra_config: dict[str, Any] | None = None) -> None:
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.server_name = server_name
        self.fed_port = fed_port
        self.client_port = client_port
        self.ca = ca
        self.bind_address = bind_address
        self.extra_config = dict(extra_config or {})
        self.base_url = f"http://{bind_address}:{client_port}"
        self.config_path = os.path.join(self.workdir, "homeserver.yaml")
        self.stdout_path = os.path.join(self.workdir, "stdout.log")
        self.log_path = os.path.join(self.workdir, "homeserver.log")
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0
        self.config: dict[str, Any] = {}
        self._out: Any = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def mxid(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def write_config(self) -> dict[str, Any]:
        py = synapse_python()
        if not os.path.exists(self.config_path):
            subprocess.run([py, "-m", "synapse.app.homeserver", "--generate-config",
                            "--server-name", self.server_name, "--config-path", self.config_path,
                            "--data-directory", self.workdir, "--report-stats=no"],
                           cwd=self.workdir, check=True, capture_output=True)
        with open(self.config_path) as f:
            cfg = yaml.safe_load(f)
        cert, key = self.ca.issue(self.server_name)
        cfg.update({
            "public_baseurl": self.base_url + "/",
            "listeners": [
                {"port": self.fed_port, "bind_addresses": [self.bind_address], "type": "http",
                 "tls": True, "x_forwarded": False,
                 "resources": [{"names": ["federation"], "compress": False}]},
                {"port": self.client_port, "bind_addresses": [self.bind_address], "type": "http",
                 "tls": False, "x_forwarded": False,
                 "resources": [{"names": ["client"], "compress": False}]},
            ],
            "database": {"name": "sqlite3",
                         "args": {"database": os.path.join(self.workdir, "homeserver.db")}},
            "tls_certificate_path": cert,
            "tls_private_key_path": key,
            "federation_verify_certificates": True,
            "federation_custom_ca_list": [self.ca.ca_path],
            "ip_range_blacklist": loopback_open_blacklist(),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "report_stats": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "bcrypt_rounds": 4,
            "presence": {"enabled": True},
            "caches": {**(cfg.get("caches") or {}), "sync_response_cache_duration": 0},
            "federation": {**FAST_FEDERATION_RETRY, "max_long_retry_delay": "2s",
                           "max_short_retry_delay": "1s"},
            "allow_public_rooms_over_federation": True,
            "room_list_publication_rules": [{"action": "allow"}],
            "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 1,
                              "reject_limit": 100000, "concurrent": 1000},
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
            "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
            "rc_presence": {"per_user": UNLIMITED},
        })
        for k in ("rc_message", "rc_registration", "rc_registration_token_validity",
                  "rc_admin_redaction", "rc_joins_per_room", "rc_3pid_validation",
                  "rc_third_party_invite", "rc_media_create", "rc_delayed_event_mgmt",
                  "rc_room_creation", "rc_reports", "rc_user_directory", "rc_profile",
                  "rc_key_requests"):
            cfg[k] = UNLIMITED
        cfg.update(self.extra_config)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f)
        self.config = cfg
        return cfg

    def start(self, timeout: float = 60.0) -> "SynapseServer":
        """Start and wait until the client API answers and the federation listener serves the
        server's keys over TLS with a certificate the CA vouches for."""
        self.write_config()
        self._out = open(self.stdout_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [synapse_python(), "-m", "synapse.app.homeserver", "-c", self.config_path],
            cwd=self.workdir, env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + timeout
        client_ok = fed_ok = False
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Synapse {self.server_name} exited with {self.proc.returncode} "
                                   f"during start-up:\n{self.log_tail()}")
            try:
                if not client_ok:
                    with urllib.request.urlopen(self.base_url + "/_matrix/client/versions",
                                                timeout=2) as r:
                        client_ok = r.status == 200
                if client_ok and not fed_ok:
                    status, body = tls_get(self.ca, self.server_name, "/_matrix/key/v2/server",
                                           address=self.bind_address, port=self.fed_port, timeout=2)
                    fed_ok = status == 200 and body.get("server_name") == self.server_name
                if client_ok and fed_ok:
                    self.start_seconds = time.monotonic() - t0
                    return self
            except (urllib.error.URLError, OSError, ssl.SSLError, http.client.HTTPException) as e:
                last_error = e
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse {self.server_name} did not come up within {timeout}s "
                           f"(client API ok: {client_ok}, federation keys over TLS ok: {fed_ok}, "
                           f"last error: {last_error!r}):\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process we started (by PID), SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def client(self, validate: bool = True) -> Client:
        return Client(self.base_url, validate=validate)

    def register(self, localpart: str | None = None, *, validate: bool = True,
                 password: str = "correct horse battery") -> Client:
        """A new user, logged in: a ``tests.harness.Client`` with ``token``/``user_id`` set.
        ``validate=False`` for calls where Synapse departs from the spec (nulls, see INTEROP.md)."""
        c = self.client(validate=validate)
        c.register(localpart or ("s" + uuid.uuid4().hex[:10]), password=password)
        return c

    def log_tail(self, n: int = 60) -> str:
        out = []
        for p in (self.stdout_path, self.log_path):
            try:
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                out.append(f"--- {p}\n" + "\n".join(lines))
            except OSError:
                pass
        return "\n".join(out)


def start_synapse(workroot: str, ca: FederationCA, *, tag: str = "synapse",
                  extra_config: dict[str, Any] | None = None) -> SynapseServer:
    """A Synapse on fresh ports named ``127.0.0.1:<fed_port>``, started."""
    fed_port, client_port = free_port(), free_port()
    return SynapseServer(os.path.join(workroot, f"{tag}-{fed_port}"), f"127.0.0.1:{fed_port}",
                         fed_port, client_port, ca, extra_config=extra_config).start()


# --- Hearth ------------------------------------------------------------------------------------

def hearth_federation_overrides(server_name: str, fed_port: int, ca: FederationCA, workdir: str,
                                client_port: int, bind_address: str = "127.0.0.1"
                                ) -> dict[str, Any]:
    """Config overrides for ``tests.harness.ServerProcess`` (pass ``port=client_port`` to it) so
    Hearth is ``server_name``: plain client API on ``client_port``, federation over TLS on
    ``fed_port`` with a certificate from ``ca`` (written to ``workdir``), trusting ``ca``, loopback
    allowed as a destination, no notary, back-off in seconds."""
    os.makedirs(workdir, exist_ok=True)
    cert, key = ca.issue(server_name, directory=workdir)
    return {
        "server_name": server_name,
        "public_baseurl": f"http://{bind_address}:{client_port}/",
        "listeners": [
            {"port": client_port, "bind_addresses": [bind_address], "type": "http",
             "resources": [{"names": ["client"]}]},
            {"port": fed_port, "bind_addresses": [bind_address], "type": "http", "tls": True,
             "resources": [{"names": ["federation"]}]},
        ],
        "tls_certificate_path": cert,
        "tls_private_key_path": key,
        "federation_verify_certificates": True,
        "federation_custom_ca_list": [ca.ca_path],
        "ip_range_blacklist": loopback_open_blacklist(DEFAULT_IP_RANGE_BLACKLIST),
        "trusted_key_servers": [],
        "federation": {"destination_min_retry_interval": "1s",
                       "destination_retry_multiplier": 2,
                       "destination_max_retry_interval": "5s"},
        "allow_public_rooms_over_federation": True,
    }


def hearth_federation_server(ca: FederationCA, engine: str = "sqlite",
                             overrides: dict[str, Any] | None = None) -> ServerProcess:
    """A Hearth ``ServerProcess`` (not started) named ``127.0.0.1:<fed_port>`` that federates over
    TLS; ``.server_name`` and ``.fed_port`` are set on it. ``overrides`` go on top."""
    client_port, fed_port = free_port(), free_port()
    server_name = f"127.0.0.1:{fed_port}"
    certdir = os.path.join(ca.workdir, f"hearth-{fed_port}")
    cfg = hearth_federation_overrides(server_name, fed_port, ca, certdir, client_port)
    cfg.update(overrides or {})
    srv = ServerProcess(engine, cfg, port=client_port)
    srv.server_name = server_name  # type: ignore[attr-defined]
    srv.fed_port = fed_port  # type: ignore[attr-defined]
    return srv


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 15.0,
             interval: float = 0.2) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last probe: {last!r}")
