"""Test doubles for the federation transport: a throwaway CA, TLS servers on 127.0.0.1 that
record what arrives and answer as told, and fake name, SRV and clock services."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.web import resource, server
from zope.interface import implementer

from federation.tls import server_tls_context_factory


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_pem(directory: str, filename: str, data: bytes) -> str:
    path = os.path.join(directory, filename)
    with open(path, "wb") as f:
        f.write(data)
    return path


class TestCA:
    """A certificate authority made up for one test, issuing server certificates as files."""

    __test__ = False  # not a pytest class

    def __init__(self, cn: str = "Hearth Test CA") -> None:
        self.dir = tempfile.mkdtemp(prefix="hearth-tls-")
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.ca_path = _write_pem(self.dir, "ca.pem",
                                  self.cert.public_bytes(serialization.Encoding.PEM))
        self._count = 0

    def issue(self, dns_names: Iterable[str] = (), ips: Iterable[str] = ()) -> tuple[str, str]:
        """(certificate path, key path) of a server certificate for the given SANs."""
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(_name("hearth test server"))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))
        self._count += 1
        cert_path = _write_pem(self.dir, f"server{self._count}.crt",
                               cert.public_bytes(serialization.Encoding.PEM))
        key_path = _write_pem(self.dir, f"server{self._count}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return cert_path, key_path


@dataclass
class Recorded:
    method: str
    uri: str                      # exactly as on the request line
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)   # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False                        # never answer


Handler = Callable[[Recorded], Answer]


class _Recorder(resource.Resource):
    isLeaf = True

    def __init__(self, owner: RecordingServer) -> None:
        super().__init__()
        self.owner = owner

    def render(self, request: server.Request) -> Any:
        rec = Recorded(
            method=request.method.decode(), uri=request.uri.decode("latin-1"),
            headers={k.decode().lower(): [v.decode("latin-1") for v in vs]
                     for k, vs in request.requestHeaders.getAllRawHeaders()},
            body=request.content.read())
        self.owner.requests.append(rec)
        answer = self.owner.handler(rec)
        if answer.hang:
            self.owner.hanging.append(request)
            return server.NOT_DONE_YET
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        if isinstance(answer.body, bytes):
            return answer.body
        request.setHeader("Content-Type", "application/json")
        return json.dumps(answer.body).encode()


class _CountingSite(server.Site):
    def __init__(self, owner: RecordingServer, root: resource.Resource) -> None:
        super().__init__(root)
        self.owner = owner

    def buildProtocol(self, addr: Any) -> Any:
        self.owner.connections += 1
        proto = super().buildProtocol(addr)
        self.owner.protocols.append(proto)
        return proto


class RecordingServer:
    """An HTTPS server on 127.0.0.1 (our server_tls_context_factory) that records requests,
    the SNI of each handshake, and answers with ``handler``."""

    def __init__(self, cert_path: str, key_path: str,
                 handler: Handler | None = None) -> None:
        self.requests: list[Recorded] = []
        self.sni: list[bytes | None] = []
        self.connections = 0
        self.protocols: list[Any] = []
        self.hanging: list[server.Request] = []
        self.handler: Handler = handler or (lambda rec: Answer(200, {"ok": True}))
        options = server_tls_context_factory(cert_path, key_path)
        context = options.getContext()
        context.set_tlsext_servername_callback(lambda conn: self.sni.append(conn.get_servername()))
        self.port_obj = reactor.listenSSL(0, _CountingSite(self, _Recorder(self)), options,
                                          interface="127.0.0.1")
        self.port: int = self.port_obj.getHost().port

    async def stop(self) -> None:
        for request in self.hanging:
            if request.channel is not None and request.channel.transport is not None:
                request.channel.transport.abortConnection()
        for proto in self.protocols:
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.abortConnection()
        await self.port_obj.stopListening()


class SilentServer:
    """Accepts TCP on 127.0.0.1 and never says a word (a TLS handshake that never ends)."""

    def __init__(self) -> None:
        self.protocols: list[protocol.Protocol] = []
        owner = self

        class Silent(protocol.Protocol):
            def connectionMade(self) -> None:
                owner.protocols.append(self)

        factory = protocol.Factory.forProtocol(Silent)
        self.port_obj = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port: int = self.port_obj.getHost().port

    async def stop(self) -> None:
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.abortConnection()
        await self.port_obj.stopListening()


def closed_port() -> int:
    """A port on 127.0.0.1 with (very likely) nobody listening."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeNames:
    """A/AAAA answers from a dict; unknown names have no address. Records every lookup."""

    def __init__(self, names: dict[str, list[str]] | None = None) -> None:
        self.names = dict(names or {})
        self.lookups: list[str] = []

    def resolveHostName(self, receiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:
        self.lookups.append(hostName)
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        for ip in self.names.get(hostName, []):
            cls = IPv6Address if ":" in ip else IPv4Address
            receiver.addressResolved(cls("TCP", ip, portNumber))
        receiver.resolutionComplete()
        return resolution


class FakeSrv:
    """SRV answers from a dict name -> [(priority, weight, port, target)]; else NXDOMAIN."""

    def __init__(self, records: dict[str, list[tuple[int, int, int, str]]] | None = None) -> None:
        self.records = dict(records or {})
        self.lookups: list[str] = []

    def lookupService(self, name: str, timeout: Any = None) -> defer.Deferred:
        self.lookups.append(name)
        if name not in self.records:
            return defer.fail(DNSNameError(name))
        answers = [dns.RRHeader(name.encode(), dns.SRV, dns.IN, 300,
                                dns.Record_SRV(prio, weight, port, target.encode(), 300))
                   for prio, weight, port, target in self.records[name]]
        return defer.succeed((answers, [], []))


class ManualClock:
    """time_msec that moves only when the test says so."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def time_msec(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)
