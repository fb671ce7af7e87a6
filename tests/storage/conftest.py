"""Databases for storage tests: a fresh SQLite file and a fresh PostgreSQL database per test."""

from __future__ import annotations

import os
import tempfile
from typing import Any, AsyncIterator

import pytest_twisted
from twisted.internet import reactor

from storage.database import Database
from storage.engines import create_engine
from storage.migrations import prepare_database
from tests.harness import ENGINES, PG, create_pg_database, drop_pg_database


@pytest_twisted.async_yield_fixture(params=ENGINES)
async def db(request: Any) -> AsyncIterator[Database]:
    pg_name = None
    if request.param == "sqlite":
        path = os.path.join(tempfile.mkdtemp(prefix="hearth-db-"), "test.db")
        database = Database(create_engine("sqlite3", {"database": path}), reactor)
    else:
        pg_name = create_pg_database()
        database = Database(create_engine("psycopg2", {**PG, "database": pg_name, "cp_max": 4}),
                            reactor)
    database.start()
    await prepare_database(database)
    yield database
    database.stop()
    if pg_name:
        drop_pg_database(pg_name)
