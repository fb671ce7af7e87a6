"""One database API over both engines: transactions run in a thread pool, never on the reactor.

A store method hands a plain function to ``Database.run`` and gets its result back as an
awaitable; the function receives a ``Transaction`` and runs inside one database transaction
that commits when it returns and rolls back when it raises.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Sequence, TypeVar

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from storage.engines import IntegrityError, PostgresEngine, SqliteEngine

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ATTEMPTS = 5


class Transaction:
    """A cursor inside one transaction, speaking the stores' portable SQL."""

    def __init__(self, engine: SqliteEngine | PostgresEngine, conn: Any) -> None:
        self.engine = engine
        self._cursor = conn.cursor()
        self.after_commit: list[Callable[[], Any]] = []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        try:
            self._cursor.execute(self.engine.convert(sql), tuple(args))
        except Exception as e:
            if self.engine.is_integrity_error(e):
                raise IntegrityError(str(e)) from e
            raise

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._cursor.executemany(self.engine.convert(sql), [tuple(r) for r in rows])
        except Exception as e:
            if self.engine.is_integrity_error(e):
                raise IntegrityError(str(e)) from e
            raise

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        self.execute(sql, args)
        return self._cursor.fetchall()

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        self.execute(sql, args)
        return self._cursor.fetchone()

    def call_after_commit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the reactor thread once this transaction has committed."""
        self.after_commit.append(fn)

    def close(self) -> None:
        try:
            self._cursor.close()
        except Exception:  # pragma: no cover - closing a cursor of a dead connection
            pass


class Database:
    """Runs transactions for the stores on a dedicated thread pool, one connection per thread."""

    def __init__(self, engine: SqliteEngine | PostgresEngine, reactor: Any) -> None:
        self.engine = engine
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=engine.threads, name=f"db-{engine.name}")
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._started = False

    @property
    def reactor(self) -> Any:
        return self._reactor

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def start(self) -> None:
        if not self._started:
            self._pool.start()
            self._started = True
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()
            with self._lock:
                for conn in self._connections:
                    try:
                        conn.close()
                    except Exception:
                        pass
                self._connections.clear()

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            try:
                conn.close()
            except Exception:
                pass

    def run_sync(self, desc: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, list]:
        """Run ``fn(txn, ...)`` in a transaction on the calling thread; retries conflicts."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            conn = self._connection()
            txn = Transaction(self.engine, conn)
            start = time.monotonic()
            try:
                self.engine.begin(conn)
                result = fn(txn, *args, **kwargs)
                conn.commit()
                elapsed = time.monotonic() - start
                if elapsed > 1.0:
                    logger.info("slow transaction %s took %.2fs", desc, elapsed)
                return result, txn.after_commit
            except BaseException as e:
                try:
                    conn.rollback()
                except Exception:
                    self._drop_connection()
                if self.engine.is_connection_lost(e):
                    self._drop_connection()
                    if attempt < _MAX_ATTEMPTS:
                        logger.warning("database connection lost in %s; reconnecting", desc)
                        continue
                if self.engine.is_retryable(e) and attempt < _MAX_ATTEMPTS:
                    logger.info("transaction %s conflicted (%s); retrying", desc, e)
                    time.sleep(0.01 * attempt)
                    continue
                raise
            finally:
                txn.close()
        raise AssertionError("unreachable")

    async def run(self, desc: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(txn, *args, **kwargs)`` in one transaction off the reactor thread."""
        if not self._started:
            self.start()
        result, after = await threads.deferToThreadPool(
            self._reactor, self._pool, self.run_sync, desc, fn, *args, **kwargs)
        for cb in after:
            try:
                r = cb()
                if isinstance(r, defer.Deferred):
                    r.addErrback(lambda f: logger.error("after-commit callback failed: %s", f))
            except Exception:
                logger.exception("after-commit callback of %s failed", desc)
        return result

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """A one-statement read."""
        return await self.run("query", lambda txn: txn.query(sql, args))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """A one-statement write; returns the row count."""
        def fn(txn: Transaction) -> int:
            txn.execute(sql, args)
            return txn.rowcount
        return await self.run("execute", fn)
