"""Synapse-compatible admin endpoints for media: quarantine, deletion, a user's media."""

from __future__ import annotations

from typing import Any

from homeserver.api.admin.users import require_admin
from homeserver.http.errors import MatrixError, not_found
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.identifiers import check_user_id
from homeserver.media.ids import check_media_path
from homeserver.media.repository import MediaRepository
from storage.media import ORDER_COLUMNS, MediaRow

MAX_PAGE = 1000


def media_json(row: MediaRow) -> dict[str, Any]:
    """A media row as Synapse's admin API shows it."""
    return {"media_id": row.media_id, "media_type": row.content_type,
            "media_length": row.media_length, "upload_name": row.upload_name,
            "created_ts": row.created_ts, "last_access_ts": row.last_access_ts,
            "quarantined_by": row.quarantined_by, "safe_from_quarantine": False}


class AdminMediaApi:
    def __init__(self, repo: MediaRepository) -> None:
        self.repo = repo

    def register(self, router: Router) -> None:
        base = "/_synapse/admin/v1"
        router.add("POST", f"{base}/media/quarantine/{{serverName}}/{{mediaId}}", self.quarantine)
        router.add("POST", f"{base}/media/unquarantine/{{serverName}}/{{mediaId}}", self.unquarantine)
        router.add("GET", f"{base}/media/{{serverName}}/{{mediaId}}", self.info)
        router.add("DELETE", f"{base}/media/{{serverName}}/{{mediaId}}", self.delete)
        router.add("GET", f"{base}/users/{{userId}}/media", self.list_user_media)
        router.add("DELETE", f"{base}/users/{{userId}}/media", self.delete_user_media)

    async def quarantine(self, req: HttpRequest, serverName: str, mediaId: str) -> tuple[int, Any]:
        require_admin(req)
        assert req.requester is not None
        check_media_path(serverName, mediaId)
        if not await self.repo.quarantine(serverName, mediaId, req.requester.user_id):
            raise not_found("Unknown media")
        return 200, {}

    async def unquarantine(self, req: HttpRequest, serverName: str, mediaId: str) -> tuple[int, Any]:
        require_admin(req)
        check_media_path(serverName, mediaId)
        if not await self.repo.quarantine(serverName, mediaId, None):
            raise not_found("Unknown media")
        return 200, {}

    async def info(self, req: HttpRequest, serverName: str, mediaId: str) -> tuple[int, Any]:
        require_admin(req)
        check_media_path(serverName, mediaId)
        row = await self.repo.get_media_info(serverName, mediaId)
        if row is None:
            raise not_found("Unknown media")
        return 200, {"media_info": {**media_json(row), "media_origin": row.origin,
                                    "user_id": row.user_id, "authenticated": row.authenticated}}

    async def delete(self, req: HttpRequest, serverName: str, mediaId: str) -> tuple[int, Any]:
        require_admin(req)
        check_media_path(serverName, mediaId)
        if serverName != self.repo.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Can only delete local media")
        deleted = await self.repo.delete([(serverName, mediaId)])
        if not deleted:
            raise not_found("Unknown media")
        return 200, {"deleted_media": [mediaId], "total": 1}

    def _local_user(self, req: HttpRequest, user_id: str) -> None:
        require_admin(req)
        check_user_id(user_id)
        if user_id.split(":", 1)[1] != self.repo.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Can only look up local users")

    async def list_user_media(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        self._local_user(req, userId)
        start = req.query_int("from", 0, lo=0, hi=2**31) or 0
        limit = req.query_int("limit", 100, lo=0, hi=MAX_PAGE)
        assert limit is not None
        order_by = req.query("order_by", "created_ts") or "created_ts"
        if order_by not in ORDER_COLUMNS:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown value for order_by")
        direction = req.query("dir", "f")
        if direction not in ("f", "b"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
        rows, total = await self.repo.user_media(userId, order_by, direction == "f", limit,
                                                 start)
        out: dict[str, Any] = {"media": [media_json(r) for r in rows], "total": total}
        if start + len(rows) < total:
            out["next_token"] = start + len(rows)
        return 200, out

    async def delete_user_media(self, req: HttpRequest, userId: str) -> tuple[int, Any]:
        self._local_user(req, userId)
        deleted = await self.repo.delete_user_media(userId)
        return 200, {"deleted_media": deleted, "total": len(deleted)}
