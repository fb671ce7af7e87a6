"""The two database engines: SQLite (embedded default, WAL) and PostgreSQL (psycopg2).

An engine knows how to open a connection, how to translate the portable SQL written in the
stores (``?`` placeholders), and which errors are worth retrying. Nothing above storage/ sees it.
"""

from __future__ import annotations

import os
import re
import sqlite3
from typing import Any, Mapping

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions


class IntegrityError(Exception):
    """A uniqueness or foreign-key constraint was violated (engine independent)."""


class SqliteEngine:
    name = "sqlite3"
    # SQLite allows one writer at a time; one thread with one connection serializes the work
    # without "database is locked" retries, and WAL lets other processes read meanwhile.
    threads = 1

    def __init__(self, args: Mapping[str, Any]) -> None:
        self.path = args.get("database", ":memory:")
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def convert(self, sql: str) -> str:
        return sql

    def is_integrity_error(self, e: BaseException) -> bool:
        return isinstance(e, sqlite3.IntegrityError)

    def is_retryable(self, e: BaseException) -> bool:
        return isinstance(e, sqlite3.OperationalError) and "locked" in str(e)

    def is_connection_lost(self, e: BaseException) -> bool:
        return False


_PLACEHOLDER = re.compile(r"\?")


class PostgresEngine:
    name = "psycopg2"

    def __init__(self, args: Mapping[str, Any]) -> None:
        args = dict(args)
        self.threads = int(args.pop("cp_max", 10))
        args.pop("cp_min", None)
        if "database" in args and "dbname" not in args:
            args["dbname"] = args.pop("database")
        self.connect_args = args
        self._converted: dict[str, str] = {}

    def connect(self) -> Any:
        conn = psycopg2.connect(**self.connect_args)
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED)
        return conn

    def begin(self, conn: Any) -> None:
        pass  # psycopg2 opens a transaction implicitly at the first statement

    def convert(self, sql: str) -> str:
        out = self._converted.get(sql)
        if out is None:
            # The stores never put a literal '?' or '%' in SQL text, so this is a plain swap.
            out = _PLACEHOLDER.sub("%s", sql)
            self._converted[sql] = out
        return out

    def is_integrity_error(self, e: BaseException) -> bool:
        return isinstance(e, psycopg2.IntegrityError)

    def is_retryable(self, e: BaseException) -> bool:
        return isinstance(e, psycopg2.extensions.TransactionRollbackError)

    def is_connection_lost(self, e: BaseException) -> bool:
        return isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError))


def create_engine(name: str, args: Mapping[str, Any]) -> SqliteEngine | PostgresEngine:
    if name == "sqlite3":
        return SqliteEngine(args)
    if name == "psycopg2":
        return PostgresEngine(args)
    raise ValueError(f"unknown database engine {name!r}")
