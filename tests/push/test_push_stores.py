"""The push stores on both engines: rule ordering, notifications and their read state, pushers."""

from __future__ import annotations

import pytest
import pytest_twisted

from storage.database import Database
from storage.notifications import UNTHREADED, NewNotification, NotificationStore
from storage.push_rules import PushRuleStore, RuleNotFound
from storage.pushers import Pusher, PusherStore

A, B = "@a:hs", "@b:hs"
ROOM, OTHER = "!r:hs", "!o:hs"


# --- push rules --------------------------------------------------------------------------------

async def order(store: PushRuleStore, kind: str = "content", user: str = A) -> list[str]:
    return [r.rule_id for r in (await store.get_rules([user]))[user].rules if r.kind == kind]


@pytest_twisted.ensureDeferred
async def test_rule_placement(db: Database) -> None:
    store = PushRuleStore(db)

    async def put(rid: str, before: str | None = None, after: str | None = None) -> None:
        await store.put_rule(A, "content", rid, conditions=None, pattern=rid, actions=["notify"],
                             before=before, after=after)
    await put("a")
    await put("b")
    assert await order(store) == ["b", "a"]
    await put("c", after="a")
    await put("d", before="b")
    assert await order(store) == ["d", "b", "a", "c"]
    await put("d", after="c")
    assert await order(store) == ["b", "a", "c", "d"]
    for bad in ("zzz", "d"):
        with pytest.raises(RuleNotFound):
            await put("d", before=bad)
    with pytest.raises(RuleNotFound):
        await put("new", after="zzz")
    assert await order(store) == ["b", "a", "c", "d"]
    # Kinds and users are separate orderings.
    await store.put_rule(A, "override", "a", conditions=[], pattern=None, actions=[])
    await store.put_rule(B, "content", "x", conditions=None, pattern="x", actions=[])
    assert await order(store) == ["b", "a", "c", "d"]
    assert await order(store, "override") == ["a"]
    assert await order(store, user=B) == ["x"]


@pytest_twisted.ensureDeferred
async def test_rule_fields_enabled_and_delete(db: Database) -> None:
    store = PushRuleStore(db)
    cond = [{"kind": "event_match", "key": "type", "pattern": "ü*"}]
    await store.put_rule(A, "override", "r", conditions=cond, pattern=None, actions=["notify"])
    rule = (await store.get_rules([A]))[A].rules[0]
    assert (rule.conditions, rule.pattern, rule.actions, rule.enabled) == (cond, None, ["notify"], True)
    assert await store.set_rule_enabled(A, "override", "r", False)
    assert await store.set_rule_actions(A, "override", "r", [])
    await store.put_rule(A, "override", "r", conditions=[], pattern=None, actions=["notify"])
    rule = (await store.get_rules([A]))[A].rules[0]
    assert (rule.conditions, rule.actions, rule.enabled) == ([], ["notify"], False)
    assert not await store.set_rule_enabled(A, "content", "r", True)
    assert not await store.set_rule_actions(B, "override", "r", [])
    assert not await store.delete_rule(A, "content", "r")
    assert await store.delete_rule(A, "override", "r")
    assert (await store.get_rules([A]))[A].empty


@pytest_twisted.ensureDeferred
async def test_default_rule_changes(db: Database) -> None:
    store = PushRuleStore(db)
    await store.set_default_enabled(A, "override", ".m.rule.master", True)
    await store.set_default_actions(A, "override", ".m.rule.master", ["notify"])
    await store.set_default_actions(A, "underride", ".m.rule.message", [])
    await store.set_default_enabled(A, "override", ".m.rule.master", False)
    rules = await store.get_rules([A, B])
    d = rules[A].defaults
    assert (d[("override", ".m.rule.master")].enabled, d[("override", ".m.rule.master")].actions) == (
        False, ["notify"])
    assert (d[("underride", ".m.rule.message")].enabled, d[("underride", ".m.rule.message")].actions) == (
        None, [])
    assert rules[B].empty
    many = [f"@u{i}:hs" for i in range(450)]
    assert len(await store.get_rules(many)) == 450


# --- notifications -----------------------------------------------------------------------------

def n(user: str, highlight: bool = False) -> NewNotification:
    return NewNotification(user, ["notify"] + ([{"set_tweak": "highlight"}] if highlight else []),
                           highlight)


@pytest_twisted.ensureDeferred
async def test_counts_and_receipts(db: Database) -> None:
    store = NotificationStore(db)
    assert await store.add(ROOM, "main", "$1", 1, 100, [n(A), n(B, True)]) == [A, B]
    assert await store.add(ROOM, "$root", "$2", 2, 100, [n(A, True)]) == [A]
    assert await store.add(ROOM, "main", "$3", 3, 100, [n(A)]) == [A]
    assert await store.add(OTHER, "main", "$4", 4, 100, [n(A)]) == [A]
    # The same event twice stores nothing more.
    await store.add(ROOM, "main", "$3", 3, 100, [n(A)])
    assert await store.unread_counts(A, [ROOM, OTHER, "!none:hs"]) == {
        (ROOM, "main"): (2, 0), (ROOM, "$root"): (1, 1), (OTHER, "main"): (1, 0)}
    assert await store.unread_counts(B, [ROOM]) == {(ROOM, "main"): (1, 1)}
    assert await store.unread_total(A, [ROOM, OTHER]) == 4
    # A threaded receipt clears only its thread.
    assert await store.mark_read(A, ROOM, "main", 3) == 2
    assert await store.unread_counts(A, [ROOM]) == {(ROOM, "$root"): (1, 1)}
    # An unthreaded one clears every thread up to its event.
    assert await store.mark_read(A, ROOM, UNTHREADED, 2) == 1
    assert await store.unread_counts(A, [ROOM]) == {}
    assert await store.mark_read(A, ROOM, UNTHREADED, 1) == 0
    # A notification stored after the receipt that passed it is born read.
    assert await store.add(ROOM, "$root", "$late", 2, 100, [n(A), n(B)]) == [B]
    assert await store.add(ROOM, "main", "$5", 5, 100, [n(A)]) == [A]
    assert await store.unread_counts(A, [ROOM]) == {(ROOM, "main"): (1, 0)}
    assert await store.unread_counts(A, []) == {}


@pytest_twisted.ensureDeferred
async def test_listing_and_pruning(db: Database) -> None:
    store = NotificationStore(db)
    for i in range(1, 8):
        await store.add(ROOM, "main", f"${i}", i, 1000 + i, [n(A, highlight=i % 2 == 0)])
    got = await store.list(A, [ROOM], None, 3)
    assert [x.event_id for x in got] == ["$7", "$6", "$5"]
    assert got[1].highlight and got[1].unread and got[1].actions[1] == {"set_tweak": "highlight"}
    assert [x.event_id for x in await store.list(A, [ROOM], 5, 3)] == ["$4", "$3", "$2"]
    assert [x.event_id for x in await store.list(A, [ROOM], None, 10, only_highlight=True)] == ["$6", "$4", "$2"]
    assert await store.list(B, [ROOM], None, 10) == []
    await store.mark_read(A, ROOM, UNTHREADED, 3)
    assert [x.event_id for x in await store.unread_after(A, [ROOM], 0, 2)] == ["$4", "$5"]
    assert [x.event_id for x in await store.unread_after(A, [ROOM], 5, 10)] == ["$6", "$7"]
    assert await store.delete_read_before(1003) == 2   # $1 and $2: read and old
    assert [x.event_id for x in await store.list(A, [ROOM], None, 10)][-1] == "$3"


# --- pushers -----------------------------------------------------------------------------------

def pusher(user: str = A, pushkey: str = "k", device: str | None = "DEV", last: int = 0) -> Pusher:
    return Pusher(user, "app", pushkey, device, "http", "App", "Phone", None, "en",
                  {"url": "https://gw/_matrix/push/v1/notify", "ü": 1}, 1000, last, None)


@pytest_twisted.ensureDeferred
async def test_pushers(db: Database) -> None:
    store = PusherStore(db)
    assert await store.upsert(pusher(last=5), replace_other_users=True) == []
    await store.set_progress(A, "app", "k", 9, 1234)
    # An update changes the description but keeps the progress.
    await store.upsert(pusher(last=0, device="OTHER"), replace_other_users=True)
    got = await store.get(A, "app", "k")
    assert got is not None and got.device_id == "OTHER" and got.last_stream_ordering == 9
    assert got.failing_since == 1234 and got.data["ü"] == 1
    await store.upsert(pusher(user=B), replace_other_users=False)
    assert len(await store.all()) == 2
    assert sorted(await store.upsert(pusher(user="@c:hs"), replace_other_users=True)) == [
        (A, "app", "k"), (B, "app", "k")]
    assert [p.user_id for p in await store.all()] == ["@c:hs"]
    await store.upsert(pusher(pushkey="k2", device="D1"), replace_other_users=True)
    await store.upsert(pusher(pushkey="k3", device="D2"), replace_other_users=True)
    assert await store.delete_for_devices(A, ["D1", "nope"]) == [(A, "app", "k2")]
    assert [p.pushkey for p in await store.for_user(A)] == ["k3"]
    assert await store.delete(A, "app", "k3")
    assert not await store.delete(A, "app", "k3")
    assert await store.delete_for_devices(A, []) == []
