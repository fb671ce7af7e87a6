"""Evaluation cost: users sharing the default rules are evaluated in one pass, so the number of
condition checks per event does not grow with rules x members."""

from __future__ import annotations

from typing import Any, Iterable

import pytest_twisted

from homeserver.push.evaluator import Condition, EventView
from homeserver.push.rule_service import PushRuleService
from homeserver.push.rules import DEFAULT_RULESET
from storage.push_rules import DefaultChange, UserRules


class CountingView(EventView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks = 0
        self.evaluated = 0

    def holds(self, cond: Condition) -> bool:
        self.checks += 1
        if cond not in self._memo:
            self.evaluated += 1
        return super().holds(cond)


EVENTS = [
    {"type": "m.room.message", "sender": "@s:hs", "content": {"msgtype": "m.text", "body": "hi"}},
    {"type": "m.room.message", "sender": "@s:hs", "content": {"msgtype": "m.notice", "body": "hi"}},
    {"type": "m.room.member", "state_key": "@u5:hs", "sender": "@s:hs",
     "content": {"membership": "invite"}},
    {"type": "org.example.nothing", "sender": "@s:hs", "content": {}},
    {"type": "m.room.message", "sender": "@s:hs",
     "content": {"body": "x", "m.mentions": {"user_ids": ["@u1:hs", "@u2:hs"], "room": True}}},
]


def checks_for(n_users: int, event: dict[str, Any]) -> tuple[int, int, int]:
    users = [f"@u{i}:hs" for i in range(n_users)]
    view = CountingView(event, member_count=n_users, sender_power=100)
    out = DEFAULT_RULESET.evaluate(view, users)
    return view.checks, view.evaluated, len(out)


def test_condition_checks_do_not_grow_with_members() -> None:
    for event in EVENTS:
        small = checks_for(10, event)
        large = checks_for(20_000, event)
        assert small[:2] == large[:2], event
        # Every condition is evaluated at most once per event.
        assert large[1] <= sum(len(r.independent) for r in DEFAULT_RULESET.rules)


class FakeRuleStore:
    def __init__(self, custom: dict[str, UserRules]) -> None:
        self.custom = custom
        self.loads: list[list[str]] = []

    async def get_rules(self, user_ids: Iterable[str]) -> dict[str, UserRules]:
        ids = list(user_ids)
        self.loads.append(ids)
        return {u: self.custom.get(u, UserRules()) for u in ids}


@pytest_twisted.ensureDeferred
async def test_users_with_default_rules_share_one_group_and_are_cached() -> None:
    users = [f"@u{i}:hs" for i in range(1000)]
    custom = UserRules(defaults={("override", ".m.rule.master"): DefaultChange(True, None)})
    store = FakeRuleStore({users[3]: custom})
    service = PushRuleService(store, None, None)  # type: ignore[arg-type]
    groups = await service.rulesets_for(users)
    assert len(groups) == 2
    assert sorted(len(v) for v in groups.values()) == [1, 999]
    assert groups[DEFAULT_RULESET] == [u for u in users if u != users[3]]
    again = await service.rulesets_for(users)
    assert again.keys() == groups.keys()
    assert len(store.loads) == 1  # the second call needed no database read
