"""/versions, /.well-known and /capabilities: what a client reads before anything else."""

from __future__ import annotations

from typing import Any, Mapping

from homeserver.config import Config
from homeserver.http.errors import MatrixError
from homeserver.http.router import AUTH_NONE, Router
from homeserver.http.site import HttpRequest

SUPPORTED_VERSIONS = ["r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0",
                      "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
                      "v1.9", "v1.10", "v1.11", "v1.12"]


class VersionsApi:
    def __init__(self, config: Config, room_versions: Mapping[str, str], default_room_version: str) -> None:
        self.config = config
        self.room_versions = room_versions
        self.default_room_version = default_room_version

    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/client/versions", self.versions, auth=AUTH_NONE)
        router.add("GET", "/.well-known/matrix/client", self.well_known_client, auth=AUTH_NONE)
        router.add("GET", "/.well-known/matrix/server", self.well_known_server, auth=AUTH_NONE)
        router.client("GET", "/capabilities", self.capabilities, allow_guest=True)

    async def versions(self, req: HttpRequest) -> tuple[int, Any]:
        return 200, {"versions": SUPPORTED_VERSIONS,
                     "unstable_features": {"org.matrix.msc2432": True,
                                           "org.matrix.simplified_msc3575": True}}

    async def well_known_client(self, req: HttpRequest) -> tuple[int, Any]:
        if not self.config.serve_client_wellknown:
            raise MatrixError(404, "M_NOT_FOUND", ".well-known is not served here")
        body = {"m.homeserver": {"base_url": self.config.public_baseurl}}
        body.update(self.config.extra_well_known_client_content)
        return 200, body

    async def well_known_server(self, req: HttpRequest) -> tuple[int, Any]:
        if not self.config.serve_server_wellknown:
            raise MatrixError(404, "M_NOT_FOUND", ".well-known is not served here")
        name = self.config.server_name
        host_has_port = name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]")
        return 200, {"m.server": name if host_has_port else f"{name}:443"}

    async def capabilities(self, req: HttpRequest) -> tuple[int, Any]:
        change_password = self.config.password_enabled
        return 200, {"capabilities": {
            "m.change_password": {"enabled": change_password},
            "m.room_versions": {"default": self.default_room_version,
                                "available": dict(self.room_versions)},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": False},
            "m.profile_fields": {"enabled": True},
        }}
