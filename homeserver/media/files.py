"""Content-addressed files under media_store_path: ``content/ab/cd/<sha256 hex>``.

A file is written to ``tmp/`` first, fsynced, then renamed into place, so a reader never sees
half a file and a crash leaves at most a stray temporary file. The same bytes always land at the
same path, so identical uploads share one file. All file work runs in a thread, never on the
reactor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import BinaryIO

from twisted.internet import threads

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")
# A temporary file older than this belongs to no upload in progress (uploads are written from
# a body that has fully arrived, which takes seconds).
STALE_TEMP_S = 3600


@dataclass(frozen=True)
class TempFile:
    path: str
    sha256: str
    length: int


class ContentFiles:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._content = os.path.join(self.root, "content")
        self._tmp = os.path.join(self.root, "tmp")
        os.makedirs(self._content, exist_ok=True)
        os.makedirs(self._tmp, exist_ok=True)

    def path(self, sha256: str) -> str:
        if not _HEX.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return os.path.join(self._content, sha256[:2], sha256[2:4], sha256)

    # --- blocking primitives (run in a thread) -----------------------------------------------

    def _write_temp(self, source: BinaryIO | bytes) -> TempFile:
        digest = hashlib.sha256()
        length = 0
        path = os.path.join(self._tmp, secrets.token_hex(16))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes):
                    digest.update(source)
                    out.write(source)
                    length = len(source)
                else:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        length += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink(path)
            raise
        return TempFile(path, digest.hexdigest(), length)

    def _commit(self, temp: TempFile) -> None:
        final = self.path(temp.sha256)
        if os.path.exists(final):
            _unlink(temp.path)  # the same bytes are already stored
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(temp.path, final)

    def _read(self, sha256: str) -> bytes:
        with open(self.path(sha256), "rb") as f:
            return f.read()

    def _remove(self, sha256: str) -> None:
        # The (at most 65,536) directories stay: removing one could race with a commit into it.
        _unlink(self.path(sha256))

    def _clean_temp(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        n = 0
        for name in os.listdir(self._tmp):
            p = os.path.join(self._tmp, name)
            try:
                if os.stat(p).st_mtime < cutoff:
                    os.unlink(p)
                    n += 1
            except OSError:
                pass
        return n

    # --- the reactor-side API ----------------------------------------------------------------

    async def write_temp(self, source: BinaryIO | bytes) -> TempFile:
        """Copy ``source`` (read from its current position) into a temporary file, hashing it."""
        return await threads.deferToThread(self._write_temp, source)

    async def commit(self, temp: TempFile) -> None:
        """Move a temporary file to its content address (dropping it if that exists)."""
        await threads.deferToThread(self._commit, temp)

    async def discard(self, temp: TempFile) -> None:
        await threads.deferToThread(_unlink, temp.path)

    async def read(self, sha256: str) -> bytes:
        return await threads.deferToThread(self._read, sha256)

    async def remove(self, sha256: str) -> None:
        await threads.deferToThread(self._remove, sha256)

    async def clean_temp(self, older_than_s: float = STALE_TEMP_S) -> int:
        return await threads.deferToThread(self._clean_temp, older_than_s)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
