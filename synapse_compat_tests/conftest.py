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
