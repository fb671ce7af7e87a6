"""Fixtures for the compatibility tests: a real Hearth process per test, on each database engine.

Client libraries talk to the process over HTTP exactly as they would in production. When a test
ends, the server's log is checked: a handler that crashed fails the test even if the client
library swallowed the error response.
"""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.harness import ENGINES, PostgresMissing, ServerProcess, check_postgres  # noqa: E402

from synapse_compat_tests.federation_fixture import (  # noqa: E402
    FederationCA, SynapseServer, hearth_federation_server, start_synapse)


def pytest_sessionstart(session: pytest.Session) -> None:
    # As in tests/: the PostgreSQL half never skips; a missing database fails the run loudly.
    try:
        check_postgres()
    except PostgresMissing as e:
        pytest.exit(str(e), returncode=3)


@pytest.fixture(params=ENGINES)
def hearth(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A freshly started Hearth on the parametrized engine; its log must be free of tracebacks."""
    srv = ServerProcess(request.param).start()
    try:
        yield srv
        tbs = srv.tracebacks()
        if tbs:
            pytest.fail(f"server log ({srv.engine}) has {len(tbs)} traceback(s):\n"
                        + "\n---\n".join(tbs), pytrace=False)
    finally:
        srv.cleanup()


# --- federation: a test CA, one real Synapse per session, a Hearth that federates over TLS ------

@pytest.fixture(scope="session")
def federation_ca(tmp_path_factory: pytest.TempPathFactory) -> FederationCA:
    """The CA every federating server in this session trusts; ``.issue(name)`` makes certs."""
    return FederationCA(str(tmp_path_factory.mktemp("federation-ca")))


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory,
            federation_ca: FederationCA) -> Iterator[SynapseServer]:
    """A real Synapse named 127.0.0.1:<fed port>, shared by the session (tests use fresh users
    and rooms). Missing Synapse venv → the test errors naming `make synapse`; it never skips."""
    srv = start_synapse(str(tmp_path_factory.mktemp("synapse")), federation_ca)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=ENGINES)
def hearth_federating(request: pytest.FixtureRequest,
                      federation_ca: FederationCA) -> Iterator[ServerProcess]:
    """A fresh Hearth named 127.0.0.1:<fed port> (``.server_name``, ``.fed_port``) serving
    federation over TLS with a cert from ``federation_ca``; log must be free of tracebacks."""
    srv = hearth_federation_server(federation_ca, request.param)
    try:
        srv.start()
        yield srv
        tbs = srv.tracebacks()
        if tbs:
            pytest.fail(f"server log ({srv.engine}) has {len(tbs)} traceback(s):\n"
                        + "\n---\n".join(tbs), pytrace=False)
    finally:
        srv.cleanup()
