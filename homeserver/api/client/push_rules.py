"""/pushrules/: a user's push rules, read whole or one at a time, created, moved, deleted,
enabled and given actions. Only the ``global`` scope exists."""

from __future__ import annotations

from typing import Any

from homeserver.http.errors import invalid_param
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.push.rule_service import PushRuleService
from homeserver.push.rules import check_kind

SCOPE = "global"


def _check_scope(scope: str) -> None:
    if scope != SCOPE:
        raise invalid_param(f"Unknown push rule scope {scope!r}; only 'global' exists")


class PushRulesApi:
    def __init__(self, rules: PushRuleService) -> None:
        self.rules = rules

    def register(self, router: Router) -> None:
        router.client("GET", "/pushrules/", self.get_all)
        router.client("GET", "/pushrules", self.get_all)
        router.client("GET", "/pushrules/{scope}/", self.get_scope)
        router.client("GET", "/pushrules/{scope}", self.get_scope)
        router.client("GET", "/pushrules/{scope}/{kind}/", self.get_kind)
        router.client("GET", "/pushrules/{scope}/{kind}/{ruleId}", self.get_rule)
        router.client("PUT", "/pushrules/{scope}/{kind}/{ruleId}", self.put_rule)
        router.client("DELETE", "/pushrules/{scope}/{kind}/{ruleId}", self.delete_rule)
        router.client("GET", "/pushrules/{scope}/{kind}/{ruleId}/enabled", self.get_enabled)
        router.client("PUT", "/pushrules/{scope}/{kind}/{ruleId}/enabled", self.put_enabled)
        router.client("GET", "/pushrules/{scope}/{kind}/{ruleId}/actions", self.get_actions)
        router.client("PUT", "/pushrules/{scope}/{kind}/{ruleId}/actions", self.put_actions)

    @staticmethod
    def _user(req: HttpRequest) -> str:
        assert req.requester is not None
        return req.requester.user_id

    async def get_all(self, req: HttpRequest) -> tuple[int, Any]:
        return 200, {SCOPE: await self.rules.ruleset(self._user(req))}

    async def get_scope(self, req: HttpRequest, scope: str) -> tuple[int, Any]:
        _check_scope(scope)
        return 200, await self.rules.ruleset(self._user(req))

    async def get_kind(self, req: HttpRequest, scope: str, kind: str) -> tuple[int, Any]:
        _check_scope(scope)
        check_kind(kind)
        return 200, (await self.rules.ruleset(self._user(req)))[kind]

    async def get_rule(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        return 200, await self.rules.get_rule(self._user(req), kind, ruleId)

    async def put_rule(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        body = req.json()
        await self.rules.put_rule(self._user(req), kind, ruleId, body.data,
                                  before=req.query("before"), after=req.query("after"))
        return 200, {}

    async def delete_rule(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        await self.rules.delete_rule(self._user(req), kind, ruleId)
        return 200, {}

    async def get_enabled(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        rule = await self.rules.get_rule(self._user(req), kind, ruleId)
        return 200, {"enabled": rule["enabled"]}

    async def put_enabled(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        body = req.json()
        enabled = body.bool("enabled", required=True)
        await self.rules.set_enabled(self._user(req), kind, ruleId, enabled)
        return 200, {}

    async def get_actions(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        rule = await self.rules.get_rule(self._user(req), kind, ruleId)
        return 200, {"actions": rule["actions"]}

    async def put_actions(self, req: HttpRequest, scope: str, kind: str, ruleId: str) -> tuple[int, Any]:
        _check_scope(scope)
        body = req.json()
        actions = body.list("actions", required=True)
        await self.rules.set_actions(self._user(req), kind, ruleId, actions)
        return 200, {}
