"""The database API on both engines: transactions, rollback, integrity errors, migrations."""

from __future__ import annotations

import pytest
import pytest_twisted

from storage.database import Database
from storage.engines import IntegrityError
from storage.migrations import list_migrations, prepare_database, split_statements


@pytest_twisted.ensureDeferred
async def test_migrations_are_recorded_and_not_reapplied(db: Database) -> None:
    names = [r[0] for r in await db.query("SELECT name FROM schema_migrations ORDER BY version")]
    assert names == [f for _, f in list_migrations(db.engine_name)]
    assert await prepare_database(db) == []


@pytest_twisted.ensureDeferred
async def test_transaction_commits_and_returns(db: Database) -> None:
    def fn(txn) -> int:
        txn.execute("INSERT INTO users (user_id, created_ts) VALUES (?, ?)", ("@a:x", 1))
        return 7
    assert await db.run("t", fn) == 7
    assert await db.query("SELECT user_id FROM users") == [("@a:x",)]


@pytest_twisted.ensureDeferred
async def test_exception_rolls_back_every_statement(db: Database) -> None:
    def fn(txn) -> None:
        txn.execute("INSERT INTO users (user_id, created_ts) VALUES (?, ?)", ("@b:x", 1))
        raise ValueError("boom")
    with pytest.raises(ValueError):
        await db.run("t", fn)
    assert await db.query("SELECT user_id FROM users") == []


@pytest_twisted.ensureDeferred
async def test_integrity_error_is_engine_independent(db: Database) -> None:
    await db.execute("INSERT INTO users (user_id, created_ts) VALUES (?, ?)", ("@c:x", 1))
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO users (user_id, created_ts) VALUES (?, ?)", ("@c:x", 2))
    # Case-insensitive uniqueness of user ids is enforced by the schema itself.
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO users (user_id, created_ts) VALUES (?, ?)", ("@C:x", 2))


@pytest_twisted.ensureDeferred
async def test_after_commit_callbacks_run_only_on_commit(db: Database) -> None:
    seen: list[str] = []

    def ok(txn) -> None:
        txn.call_after_commit(lambda: seen.append("ok"))

    def bad(txn) -> None:
        txn.call_after_commit(lambda: seen.append("bad"))
        raise RuntimeError("no")

    await db.run("ok", ok)
    with pytest.raises(RuntimeError):
        await db.run("bad", bad)
    assert seen == ["ok"]


@pytest_twisted.ensureDeferred
async def test_transactions_run_off_the_reactor_thread(db: Database) -> None:
    import threading
    main = threading.get_ident()
    ident = await db.run("t", lambda txn: threading.get_ident())
    assert ident != main


def test_split_statements() -> None:
    sql = "-- comment\nCREATE TABLE a (x TEXT);\nCREATE INDEX i ON a (x);\n"
    assert split_statements(sql) == ["CREATE TABLE a (x TEXT)", "CREATE INDEX i ON a (x)"]
