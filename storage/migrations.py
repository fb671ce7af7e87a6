"""Versioned schema migrations, applied in order at start-up.

Files in storage/schema/ are named ``NNNN_name.sql`` (both engines), ``NNNN_name.sqlite.sql`` or
``NNNN_name.postgres.sql`` (one engine). Each file runs in its own transaction and is recorded in
``schema_migrations``, so a crash half-way leaves the database at the last whole migration.
"""

from __future__ import annotations

import logging
import os
import re
import time

from storage.database import Database, Transaction

logger = logging.getLogger(__name__)

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "schema")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+(\.(sqlite|postgres))?\.sql$")


def list_migrations(engine_name: str) -> list[tuple[int, str]]:
    """(version, file name) for the files that apply to this engine, in order."""
    suffix = "sqlite" if engine_name == "sqlite3" else "postgres"
    out = []
    for fname in os.listdir(SCHEMA_DIR):
        m = _NAME.match(fname)
        if not m:
            continue
        if m.group(3) and m.group(3) != suffix:
            continue
        out.append((int(m.group(1)), fname))
    return sorted(out)


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements; statements end with ';' at the end of a line."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    stmts, cur = [], []
    for line in lines:
        cur.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(cur).strip().rstrip(";").strip()
            if stmt:
                stmts.append(stmt)
            cur = []
    rest = "\n".join(cur).strip()
    if rest:
        stmts.append(rest)
    return stmts


def _ensure_table(txn: Transaction) -> set[str]:
    txn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied_ts BIGINT NOT NULL)")
    return {r[0] for r in txn.query("SELECT name FROM schema_migrations")}


def _apply(txn: Transaction, version: int, fname: str) -> None:
    with open(os.path.join(SCHEMA_DIR, fname), encoding="utf-8") as f:
        for stmt in split_statements(f.read()):
            txn.execute(stmt)
    txn.execute("INSERT INTO schema_migrations (name, version, applied_ts) VALUES (?, ?, ?)",
                (fname, version, int(time.time() * 1000)))


async def prepare_database(db: Database, before: int | None = None) -> list[str]:
    """Apply every migration not yet applied (with ``before``: only those numbered below it,
    as tests of a migration start); returns the names applied now."""
    applied = await db.run("schema_migrations", _ensure_table)
    done = []
    for version, fname in list_migrations(db.engine_name):
        if fname in applied or (before is not None and version >= before):
            continue
        logger.info("applying schema migration %s", fname)
        await db.run(f"migrate {fname}", _apply, version, fname)
        done.append(fname)
    return done
