"""TLS for federation: verifying the servers we call, and the certificate our listener presents.

Spec "TLS": the destination must present a certificate signed by a known CA; we trust the
operating system's CAs plus any the administrator lists (``federation_custom_ca_list``). There
is deliberately no "don't verify" mode. SNI is sent for host names and not for IP literals,
whose certificates are checked against their IP SANs.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet._sslverify import IOpenSSLTrustRoot  # public type, private module
from twisted.internet.ssl import (CertificateOptions, TLSVersion, optionsForClientTLS,
                                  platformTrust)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["TlsConfigError", "FederationTlsPolicy", "client_tls_policy",
           "server_tls_context_factory", "load_ca_certificates"]


class TlsConfigError(Exception):
    """A certificate, key or CA file is missing, unreadable or not what it should be."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsConfigError(f"cannot read {what} {path!r}: {e.strerror or e}") from None


def _load_certificates(path: str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsConfigError(f"{what} {path!r} holds no PEM certificate")
    return certs


def load_ca_certificates(paths: Iterable[str]) -> list[x509.Certificate]:
    """Every certificate in the PEM files ``paths`` (a file may hold several)."""
    certs: list[x509.Certificate] = []
    for path in paths:
        certs.extend(_load_certificates(path, "CA file"))
    return certs


@implementer(IOpenSSLTrustRoot)
class _SystemAndExtraTrust:
    """The platform's trust store plus some extra CA certificates.

    Twisted offers either the platform store or an explicit list, not both, so this implements
    its trust-root interface: load the default verify paths, then add our CAs to the store.
    """

    def __init__(self, extra: Sequence[x509.Certificate]) -> None:
        self._extra = [crypto.X509.from_cryptography(c) for c in extra]
        self._platform = platformTrust()

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        self._platform._addCACertsToContext(context)
        store = context.get_cert_store()
        assert store is not None
        for cert in self._extra:
            store.add_cert(cert)


@implementer(IPolicyForHTTPS)
class FederationTlsPolicy:
    """Verifying TLS client settings for one expected server name (host name or IP literal).

    ``creatorForNetloc`` is given the name the certificate must match — for federation that is
    the (delegated) server name, not the host we connect to (spec "Resolving server names").
    Creators are cached per name so each name builds its OpenSSL context once.
    """

    def __init__(self, trust_root: IOpenSSLTrustRoot, cache_size: int = 1024) -> None:
        self._trust_root = trust_root
        self._cache: OrderedDict[str, IOpenSSLClientConnectionCreator] = OrderedDict()
        self._cache_size = cache_size

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        name = hostname.decode("ascii").strip("[]").lower()
        creator = self._cache.get(name)
        if creator is None:
            # Twisted's client options send SNI only for DNS names and check IP literals
            # against the certificate's IP address SANs.
            creator = optionsForClientTLS(
                _normalise_ip(name), trustRoot=self._trust_root,
                extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2})
            self._cache[name] = creator
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(name)
        return creator


def _normalise_ip(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def client_tls_policy(custom_ca_paths: Iterable[str] = ()) -> FederationTlsPolicy:
    """The policy for outgoing federation TLS: system CAs plus ``custom_ca_paths`` (PEM files).

    Raises TlsConfigError naming the file when one cannot be read or holds no certificate.
    """
    return FederationTlsPolicy(_SystemAndExtraTrust(load_ca_certificates(custom_ca_paths)))


def _load_private_key(path: str) -> PrivateKeyTypes:
    data = _read(path, "TLS private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsConfigError(f"TLS private key {path!r} is encrypted; give an unencrypted key") \
            from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise TlsConfigError(f"TLS private key {path!r} is not a PEM private key: {e}") from None


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def server_tls_context_factory(cert_path: str, key_path: str) -> CertificateOptions:
    """TLS settings for our federation listener from PEM files.

    ``cert_path`` holds the server certificate first, then any intermediates (the usual
    "fullchain" file). Raises TlsConfigError when a file is missing, unreadable, malformed, or
    the key does not belong to the certificate.
    """
    chain = _load_certificates(cert_path, "TLS certificate")
    key = _load_private_key(key_path)
    if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
        raise TlsConfigError(
            f"TLS private key {key_path!r} does not match the certificate in {cert_path!r}")
    return CertificateOptions(
        # pyOpenSSL takes cryptography objects directly (its own X509/PKey are deprecated).
        privateKey=key, certificate=chain[0], extraCertChain=chain[1:],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
