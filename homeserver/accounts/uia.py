"""User-interactive authentication (spec: Client-Server API, "User-Interactive Authentication API").

A protected request without ``auth`` gets 401 with the flows and a new session; each stage the
client completes is recorded in the (persisted) session; once every stage of one flow is done,
the request goes ahead. Sessions are bound to the purpose and user they were opened for.
"""

from __future__ import annotations

from typing import Any

from homeserver.accounts.secrets import check_password, new_session_id
from homeserver.clock import Clock
from homeserver.http.errors import MatrixError
from homeserver.http.jsonbody import JsonObject
from storage.accounts import AccountStore
from storage.registration_tokens import RegistrationTokenStore
from storage.uia import UiaSession, UiaStore

SESSION_LIFETIME_MS = 60 * 60 * 1000

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"


class UiaIncomplete(MatrixError):
    """401 carrying the flows, the session and what is done so far."""

    def __init__(self, body: dict[str, Any], errcode: str | None = None,
                 error: str | None = None) -> None:
        super().__init__(401, errcode or "M_UNAUTHORIZED", error or "Additional authentication required")
        self.body = body
        self.has_error = errcode is not None

    def to_json(self) -> dict[str, Any]:
        out = dict(self.body)
        if self.has_error:
            out["errcode"] = self.errcode
            out["error"] = self.message
        return out


def parse_user_identifier(auth: dict[str, Any], server_name: str) -> str:
    """The user id named by an m.id.user identifier (or the legacy 'user' field)."""
    ident = auth.get("identifier")
    if ident is None and "user" in auth:
        ident = {"type": "m.id.user", "user": auth["user"]}
    if ident is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: identifier")
    if not isinstance(ident, dict):
        raise MatrixError(400, "M_INVALID_PARAM", "'identifier' must be an object")
    if ident.get("type") != "m.id.user":
        raise MatrixError(400, "M_UNKNOWN", f"Unknown identifier type: {ident.get('type')!r}")
    if "user" not in ident:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: identifier.user")
    user = ident["user"]
    if not isinstance(user, str) or not user:
        raise MatrixError(400, "M_INVALID_PARAM", "'identifier.user' must be a non-empty string")
    if user.startswith("@"):
        return user
    return f"@{user.lower()}:{server_name}"


class UserInteractiveAuth:
    def __init__(self, store: UiaStore, accounts: AccountStore, tokens: RegistrationTokenStore,
                 clock: Clock, server_name: str) -> None:
        self.store = store
        self.accounts = accounts
        self.tokens = tokens
        self.clock = clock
        self.server_name = server_name

    async def check(self, purpose: str, flows: list[list[str]], body: JsonObject, *,
                    user_id: str | None = None, params: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], UiaSession]:
        """Return the request body to act on (merged over the session's) once a flow is done.

        Raises UiaIncomplete (401) until then. ``user_id`` binds the session to that account:
        password stages must then prove that account's password.
        """
        auth = body.dict("auth")
        request = {k: v for k, v in body.data.items() if k != "auth"}
        session: UiaSession | None = None
        if auth is not None and "session" in auth:
            sid = auth["session"]
            if not isinstance(sid, str):
                raise MatrixError(400, "M_INVALID_PARAM", "'auth.session' must be a string")
            session = await self.store.get(sid)
            if (session is None or session.purpose != purpose or session.user_id != user_id
                    or session.created_ts + SESSION_LIFETIME_MS < self.clock.time_msec()):
                raise MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session")
        if session is None:
            session_id = new_session_id()
            await self.store.create(session_id, self.clock.time_msec(), purpose, user_id,
                                    request, params or {})
            session = await self.store.get(session_id)
            assert session is not None
        # The first request's fields win: a later round trip cannot change what was authorised.
        merged = {**request, **session.request}
        completed = list(session.completed)

        if auth is not None and "type" in auth:
            stage = auth["type"]
            allowed = {s for flow in flows for s in flow}
            if not isinstance(stage, str) or stage not in allowed:
                raise self._incomplete(session, flows, completed, "M_UNRECOGNIZED",
                                       f"Unsupported authentication type {stage!r}")
            error = await self._run_stage(stage, auth, session, user_id)
            if error is not None:
                raise self._incomplete(session, flows, completed, *error)
            completed = await self.store.mark_completed(session.session_id, stage)
            session = await self.store.get(session.session_id) or session

        if any(all(s in completed for s in flow) for flow in flows):
            return merged, session
        raise self._incomplete(session, flows, completed)

    async def finish(self, session: UiaSession) -> None:
        """The protected action succeeded: the session cannot be replayed."""
        await self.store.delete(session.session_id)

    def _incomplete(self, session: UiaSession, flows: list[list[str]], completed: list[str],
                    errcode: str | None = None, error: str | None = None) -> UiaIncomplete:
        body: dict[str, Any] = {"flows": [{"stages": f} for f in flows],
                                "params": {k: v for k, v in session.params.items()
                                           if not k.startswith("_")},
                                "session": session.session_id}
        if completed:
            body["completed"] = completed
        return UiaIncomplete(body, errcode, error)

    async def _run_stage(self, stage: str, auth: dict[str, Any], session: UiaSession,
                         user_id: str | None) -> tuple[str, str] | None:
        """Check one stage; returns (errcode, message) when it fails."""
        if stage == DUMMY:
            return None
        if stage == PASSWORD:
            password = auth.get("password")
            if not isinstance(password, str):
                return "M_MISSING_PARAM", "Missing parameter: password"
            try:
                claimed = parse_user_identifier(auth, self.server_name)
            except MatrixError as e:
                return e.errcode, e.message
            if user_id is not None and claimed.lower() != user_id.lower():
                return "M_FORBIDDEN", "Invalid username or password"
            user = await self.accounts.get_user(user_id or claimed)
            if user is None or user.deactivated or not await check_password(password, user.password_hash):
                return "M_FORBIDDEN", "Invalid username or password"
            return None
        if stage == REGISTRATION_TOKEN:
            token = auth.get("token")
            if not isinstance(token, str) or not token:
                return "M_MISSING_PARAM", "Missing parameter: token"
            if session.params.get("_registration_token") == token:
                return None
            if not await self.tokens.try_reserve(token, self.clock.time_msec()):
                return "M_FORBIDDEN", "Invalid registration token"
            await self.store.set_param(session.session_id, "_registration_token", token)
            return None
        return "M_UNRECOGNIZED", f"Unsupported authentication type {stage!r}"
