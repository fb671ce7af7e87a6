"""TLS settings from files: clear errors for missing or wrong files, and a listener context
that serves the configured certificate chain."""

from __future__ import annotations

import os

import pytest

from federation.tls import (TlsConfigError, client_tls_policy, load_ca_certificates,
                            server_tls_context_factory)
from tests.federation.tls_servers import TestCA


def test_client_policy_names_a_missing_ca_file(tmp_path: os.PathLike) -> None:
    missing = os.path.join(str(tmp_path), "nope.pem")
    with pytest.raises(TlsConfigError, match="nope.pem"):
        client_tls_policy([missing])


def test_client_policy_refuses_a_file_without_certificates(tmp_path: os.PathLike) -> None:
    path = os.path.join(str(tmp_path), "junk.pem")
    with open(path, "w") as f:
        f.write("not a certificate\n")
    with pytest.raises(TlsConfigError, match="junk.pem.*no PEM certificate"):
        client_tls_policy([path])


def test_ca_files_may_hold_several_certificates(tmp_path: os.PathLike) -> None:
    a, b = TestCA("A"), TestCA("B")
    bundle = os.path.join(str(tmp_path), "bundle.pem")
    with open(bundle, "wb") as f:
        f.write(open(a.ca_path, "rb").read() + open(b.ca_path, "rb").read())
    assert len(load_ca_certificates([bundle])) == 2
    client_tls_policy([bundle, a.ca_path])  # builds without error


def test_server_context_from_pem_files() -> None:
    ca = TestCA()
    cert, key = ca.issue(dns_names=["hs.test"])
    with open(cert, "ab") as f:  # a "fullchain" file: leaf, then the CA
        f.write(open(ca.ca_path, "rb").read())
    options = server_tls_context_factory(cert, key)
    assert options.getContext() is not None


def test_server_context_errors_name_the_file(tmp_path: os.PathLike) -> None:
    ca = TestCA()
    cert, key = ca.issue(dns_names=["hs.test"])
    other_cert, other_key = ca.issue(dns_names=["other.test"])
    with pytest.raises(TlsConfigError, match="missing.crt"):
        server_tls_context_factory(os.path.join(str(tmp_path), "missing.crt"), key)
    with pytest.raises(TlsConfigError, match="missing.key"):
        server_tls_context_factory(cert, os.path.join(str(tmp_path), "missing.key"))
    with pytest.raises(TlsConfigError, match="not a PEM private key"):
        server_tls_context_factory(cert, cert)
    with pytest.raises(TlsConfigError, match="no PEM certificate"):
        server_tls_context_factory(key, key)
    with pytest.raises(TlsConfigError, match="does not match"):
        server_tls_context_factory(cert, other_key)
