"""Push rules per user: their own rules (ordered within each kind) and what they changed in the
server-default rules (enabled, actions). The defaults themselves live in code, not here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from twisted.internet import defer

from storage.database import Database, Transaction

_CHUNK = 200


@dataclass(frozen=True)
class StoredRule:
    """A user-defined rule. ``conditions`` for override/underride, ``pattern`` for content."""
    kind: str
    rule_id: str
    priority: int
    conditions: list[Any] | None
    pattern: str | None
    actions: list[Any]
    enabled: bool


@dataclass(frozen=True)
class DefaultChange:
    """A user's change to a server-default rule; None leaves that part as defined."""
    enabled: bool | None
    actions: list[Any] | None


@dataclass
class UserRules:
    rules: list[StoredRule] = field(default_factory=list)  # by kind, most important first
    defaults: dict[tuple[str, str], DefaultChange] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.rules and not self.defaults


class RuleNotFound(Exception):
    """The ``before``/``after`` rule named for placing a rule does not exist."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PushRuleStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # One change at a time: placing a rule reads and renumbers its kind's priorities.
        self._lock = defer.DeferredLock()

    # --- reading -------------------------------------------------------------------------------

    async def get_rules(self, user_ids: Iterable[str]) -> dict[str, UserRules]:
        """user -> their rules and default changes (an empty UserRules for users with none)."""
        ids = sorted(set(user_ids))

        def fn(txn: Transaction) -> dict[str, UserRules]:
            out = {u: UserRules() for u in ids}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for (user_id, kind, rule_id, prio, conds, pattern, actions, enabled) in txn.query(
                        "SELECT user_id, kind, rule_id, priority, conditions_json, pattern,"
                        f" actions_json, enabled FROM push_rules WHERE user_id IN ({marks})"
                        " ORDER BY user_id, kind, priority DESC, rule_id", chunk):
                    out[user_id].rules.append(StoredRule(
                        kind, rule_id, prio, json.loads(conds) if conds is not None else None,
                        pattern, json.loads(actions), bool(enabled)))
                for user_id, kind, rule_id, enabled, actions in txn.query(
                        "SELECT user_id, kind, rule_id, enabled, actions_json FROM push_rule_defaults"
                        f" WHERE user_id IN ({marks})", chunk):
                    out[user_id].defaults[(kind, rule_id)] = DefaultChange(
                        None if enabled is None else bool(enabled),
                        None if actions is None else json.loads(actions))
            return out
        if not ids:
            return {}
        return await self.db.run("get_push_rules", fn)

    # --- writing -------------------------------------------------------------------------------

    async def put_rule(self, user_id: str, kind: str, rule_id: str, *, conditions: list[Any] | None,
                       pattern: str | None, actions: list[Any], before: str | None = None,
                       after: str | None = None) -> None:
        """Create or update a user rule. A new rule without before/after becomes the most
        important of its kind; an updated one keeps its place (and its enabled flag) unless
        before/after move it. ``before`` wins when both are given. Raises RuleNotFound."""

        def fn(txn: Transaction) -> None:
            order = [r[0] for r in txn.query(
                "SELECT rule_id FROM push_rules WHERE user_id = ? AND kind = ?"
                " ORDER BY priority DESC, rule_id", (user_id, kind))]
            exists = rule_id in order
            anchor = before if before is not None else after
            if anchor is not None and (anchor not in order or anchor == rule_id):
                raise RuleNotFound(anchor)
            if exists:
                txn.execute("UPDATE push_rules SET conditions_json = ?, pattern = ?, actions_json = ?"
                            " WHERE user_id = ? AND kind = ? AND rule_id = ?",
                            (_dump(conditions) if conditions is not None else None, pattern,
                             _dump(actions), user_id, kind, rule_id))
            else:
                txn.execute("INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions_json,"
                            " pattern, actions_json, enabled) VALUES (?, ?, ?, ?, ?, ?, ?, TRUE)",
                            (user_id, kind, rule_id, 0,
                             _dump(conditions) if conditions is not None else None, pattern,
                             _dump(actions)))
            if exists and anchor is None:
                return
            order = [r for r in order if r != rule_id]
            if anchor is None:
                pos = 0
            else:
                pos = order.index(anchor) + (0 if before is not None else 1)
            order.insert(pos, rule_id)
            n = len(order)
            txn.executemany("UPDATE push_rules SET priority = ? WHERE user_id = ? AND kind = ?"
                            " AND rule_id = ?", [(n - i, user_id, kind, r) for i, r in enumerate(order)])

        async with self._lock:
            await self.db.run("put_push_rule", fn)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        async with self._lock:
            return await self.db.execute(
                "DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (user_id, kind, rule_id)) > 0

    async def set_rule_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> bool:
        async with self._lock:
            return await self.db.execute(
                "UPDATE push_rules SET enabled = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (enabled, user_id, kind, rule_id)) > 0

    async def set_rule_actions(self, user_id: str, kind: str, rule_id: str, actions: list[Any]) -> bool:
        async with self._lock:
            return await self.db.execute(
                "UPDATE push_rules SET actions_json = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (_dump(actions), user_id, kind, rule_id)) > 0

    async def set_default_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        async with self._lock:
            await self.db.execute(
                "INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled, actions_json)"
                " VALUES (?, ?, ?, ?, NULL) ON CONFLICT (user_id, kind, rule_id) DO UPDATE"
                " SET enabled = excluded.enabled", (user_id, kind, rule_id, enabled))

    async def set_default_actions(self, user_id: str, kind: str, rule_id: str,
                                  actions: list[Any]) -> None:
        async with self._lock:
            await self.db.execute(
                "INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled, actions_json)"
                " VALUES (?, ?, ?, NULL, ?) ON CONFLICT (user_id, kind, rule_id) DO UPDATE"
                " SET actions_json = excluded.actions_json", (user_id, kind, rule_id, _dump(actions)))
