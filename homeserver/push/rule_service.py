"""Reading and changing a user's push rules, publishing them as m.push_rules account data, and
handing the evaluator each user's compiled ruleset (cached; shared by all unchanged users)."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable

from twisted.internet import defer

from homeserver.http.errors import MatrixError, invalid_param
from homeserver.notifier import Notifier
from homeserver.push.evaluator import Ruleset
from homeserver.push.rules import (KINDS, check_actions, check_conditions, check_kind,
                                   check_new_rule_id, check_pattern, effective_rules, format_rule,
                                   is_default_rule, rule_not_found, user_ruleset)
from storage.account_data import AccountDataStore
from storage.push_rules import PushRuleStore, RuleNotFound, UserRules

logger = logging.getLogger(__name__)

PUSH_RULES_TYPE = "m.push_rules"


class PushRuleService:
    def __init__(self, store: PushRuleStore, account_data: AccountDataStore,
                 notifier: Notifier) -> None:
        self.store = store
        self.account_data = account_data
        self.notifier = notifier
        self._rulesets: dict[str, Ruleset] = {}
        # Bumped on every change, so a load that raced with a change is not cached.
        self._generation: dict[str, int] = {}
        # Bumped on every change of anyone's rules: callers caching rulesets_for's grouping
        # (the push processor, per room state) know when to ask again.
        self.version = 0
        # Changes and their publication in m.push_rules happen one at a time, so the account
        # data written last always shows the latest rules.
        self._lock = defer.DeferredLock()

    # --- reading -------------------------------------------------------------------------------

    async def _stored(self, user_id: str) -> UserRules:
        return (await self.store.get_rules([user_id]))[user_id]

    async def ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """The user's global ruleset as the API shows it: kind -> rules in priority order."""
        rules = effective_rules(user_id, await self._stored(user_id))
        return {kind: [format_rule(kind, r) for r in rules[kind]] for kind in KINDS}

    async def account_data_content(self, user_id: str) -> dict[str, Any]:
        """The content of the user's m.push_rules account data."""
        return {"global": await self.ruleset(user_id)}

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        check_kind(kind)
        for rule in (await self.ruleset(user_id))[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise rule_not_found()

    async def rulesets_for(self, user_ids: Iterable[str]) -> dict[Ruleset, list[str]]:
        """The compiled rulesets of these users, each with the users it belongs to (everyone who
        changed nothing shares the defaults)."""
        out: dict[Ruleset, list[str]] = {}
        missing = []
        for u in user_ids:
            rs = self._rulesets.get(u)
            if rs is None:
                missing.append(u)
            else:
                out.setdefault(rs, []).append(u)
        if missing:
            generations = {u: self._generation.get(u, 0) for u in missing}
            stored = await self.store.get_rules(missing)
            for u in missing:
                rs = user_ruleset(stored[u])
                if self._generation.get(u, 0) == generations[u]:
                    self._rulesets[u] = rs
                out.setdefault(rs, []).append(u)
        return out

    # --- changing ------------------------------------------------------------------------------

    async def put_rule(self, user_id: str, kind: str, rule_id: str, body: dict[str, Any],
                       before: str | None, after: str | None) -> None:
        """PUT /pushrules/global/{kind}/{ruleId}: every field is checked before anything is
        written."""
        check_kind(kind)
        check_new_rule_id(rule_id)
        actions = check_actions(body.get("actions")) if "actions" in body else None
        if actions is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: actions")
        conditions = pattern = None
        if kind in ("override", "underride"):
            conditions = check_conditions(body.get("conditions", []))
        elif kind == "content":
            pattern = check_pattern(body.get("pattern"))
        for anchor in (before, after):
            if anchor is not None and anchor.startswith("."):
                raise invalid_param("A rule cannot be placed relative to a server-default rule")

        async def write() -> None:
            try:
                await self.store.put_rule(user_id, kind, rule_id, conditions=conditions,
                                          pattern=pattern, actions=actions, before=before, after=after)
            except RuleNotFound as e:
                raise MatrixError(400, "M_UNKNOWN", f"before/after rule not found: {e.rule_id}") from None
        await self._change(user_id, write)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        check_kind(kind)
        if is_default_rule(kind, rule_id):
            raise invalid_param("Server-default rules cannot be deleted; disable them instead")

        async def write() -> None:
            if not await self.store.delete_rule(user_id, kind, rule_id):
                raise rule_not_found()
        await self._change(user_id, write)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        check_kind(kind)
        if not isinstance(enabled, bool):
            raise invalid_param("'enabled' must be a boolean")

        async def write() -> None:
            if is_default_rule(kind, rule_id):
                await self.store.set_default_enabled(user_id, kind, rule_id, enabled)
            elif not await self.store.set_rule_enabled(user_id, kind, rule_id, enabled):
                raise rule_not_found()
        await self._change(user_id, write)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        check_kind(kind)
        cleaned = check_actions(actions)

        async def write() -> None:
            if is_default_rule(kind, rule_id):
                await self.store.set_default_actions(user_id, kind, rule_id, cleaned)
            elif not await self.store.set_rule_actions(user_id, kind, rule_id, cleaned):
                raise rule_not_found()
        await self._change(user_id, write)

    async def _change(self, user_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """Make a change, drop the cached ruleset and publish the whole ruleset as m.push_rules
        (spec: "Push Rules: Events"), waking the user's /sync."""
        async with self._lock:
            await write()
            await self._publish(user_id)

    async def _publish(self, user_id: str) -> None:
        self._generation[user_id] = self._generation.get(user_id, 0) + 1
        self.version += 1
        self._rulesets.pop(user_id, None)
        content = await self.account_data_content(user_id)
        pos = await self.account_data.set_global(user_id, PUSH_RULES_TYPE, content)
        self.notifier.notify("account_data", pos, users=[user_id])
