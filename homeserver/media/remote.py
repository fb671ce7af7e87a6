"""What the media repository needs from whoever fetches media from other servers.

The repository caches what a source returns; the source (federation/media.py, over the
federation client) speaks HTTP and turns every failure into the Matrix error a client gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RemoteFile:
    """Media downloaded from its origin server."""
    content_type: str
    upload_name: str | None
    data: bytes


class RemoteMediaSource(Protocol):
    async def download(self, origin: str, media_id: str, max_size: int,
                       timeout_ms: int) -> RemoteFile:
        """The media ``mxc://origin/media_id``, at most ``max_size`` bytes.

        Raises MatrixError: 404 M_NOT_FOUND when the origin has no such media, 502 when it
        cannot be fetched (M_TOO_LARGE past ``max_size``), 504 when the origin does not answer
        in time or the media is not uploaded yet (M_NOT_YET_UPLOADED).
        """
        ...
