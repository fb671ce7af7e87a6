"""Shared fixtures: servers on both engines, clients, and databases for storage tests."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest_twisted  # noqa: E402
from twisted.internet import reactor  # noqa: E402

from storage.database import Database  # noqa: E402
from storage.engines import create_engine  # noqa: E402
from storage.migrations import prepare_database  # noqa: E402
from tests.harness import (ENGINES, PG, Client, PostgresMissing, ServerProcess,  # noqa: E402
                           check_postgres, create_pg_database, drop_pg_database)


def pytest_sessionstart(session: pytest.Session) -> None:
    # The PostgreSQL half of the suite never skips: a missing server fails the run loudly.
    try:
        check_postgres()
    except PostgresMissing as e:
        pytest.exit(str(e), returncode=3)


def _assert_clean(server: ServerProcess) -> None:
    tbs = server.tracebacks()
    assert not tbs, f"server log of {server.engine} has tracebacks:\n" + "\n---\n".join(tbs)


@pytest.fixture(scope="session", params=ENGINES)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One long-lived server per engine, shared by the tests that need no special config."""
    srv = ServerProcess(request.param).start()
    yield srv
    try:
        _assert_clean(srv)
    finally:
        srv.cleanup()


@pytest.fixture
def client(server: ServerProcess) -> Client:
    return server.client()


@pytest.fixture
def user(server: ServerProcess) -> Client:
    """A freshly registered user, logged in."""
    c = server.client()
    c.register()
    return c


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_server(engine: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with config overrides on the parametrized engine; stopped after the test."""
    started: list[ServerProcess] = []

    def make(overrides: dict[str, Any] | None = None, start: bool = True) -> ServerProcess:
        srv = ServerProcess(engine, overrides)
        started.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in started:
        try:
            _assert_clean(srv)
        finally:
            srv.cleanup()


# A fresh database per test on each engine: empty (``fresh_db``, for tests of migrations) or
# migrated (``db``, for store-level tests).
@pytest.fixture(params=ENGINES)
def fresh_db(request: Any) -> Iterator[Database]:
    pg_name = None
    if request.param == "sqlite":
        path = os.path.join(tempfile.mkdtemp(prefix="hearth-db-"), "test.db")
        database = Database(create_engine("sqlite3", {"database": path}), reactor)
    else:
        pg_name = create_pg_database()
        database = Database(create_engine("psycopg2", {**PG, "database": pg_name, "cp_max": 4}),
                            reactor)
    database.start()
    yield database
    database.stop()
    if pg_name:
        drop_pg_database(pg_name)


@pytest_twisted.async_fixture
async def db(fresh_db: Database) -> Database:
    await prepare_database(fresh_db)
    return fresh_db
