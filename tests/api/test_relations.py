"""Event relationships on both engines: /relations, /threads and bundled aggregations
(threads, edits, references), reactions, pagination, recursion and visibility."""

from __future__ import annotations

import uuid
from typing import Any

from tests.harness import Client, ServerProcess

V1 = "/_matrix/client/v1"




def public_room(a: Client, *others: Client, history: str = "shared") -> str:
    r = a.post("createRoom", {"preset": "public_chat", "initial_state": [
        {"type": "m.room.history_visibility", "content": {"history_visibility": history}}]})
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    for c in others:
        assert c.post(f"join/{room}").status_code == 200
    return room


def send(c: Client, room: str, content: dict[str, Any], etype: str = "m.room.message") -> str:
    r = c.put(f"rooms/{room}/send/{etype}/{uuid.uuid4().hex}", content)
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def msg(c: Client, room: str, body: str) -> str:
    return send(c, room, {"msgtype": "m.text", "body": body})


def rel(c: Client, room: str, parent: str, rel_type: str, body: str = "x",
        etype: str = "m.room.message", **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": body,
               "m.relates_to": {"rel_type": rel_type, "event_id": parent}, **extra}
    return send(c, room, content, etype)


def thread_reply(c: Client, room: str, root: str, body: str) -> str:
    return rel(c, room, root, "m.thread", body)


def edit(c: Client, room: str, original: str, body: str, etype: str = "m.room.message",
         new_content: bool = True) -> str:
    extra = {"m.new_content": {"msgtype": "m.text", "body": body}} if new_content else {}
    return rel(c, room, original, "m.replace", "* " + body, etype, **extra)


def relations(c: Client, room: str, event_id: str, *path: str, **params: Any) -> dict[str, Any]:
    suffix = "".join("/" + p for p in path)
    r = c.get(f"{V1}/rooms/{room}/relations/{event_id}{suffix}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in page["chunk"]]


def threads(c: Client, room: str, **params: Any) -> dict[str, Any]:
    r = c.get(f"{V1}/rooms/{room}/threads", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def bundle(event: dict[str, Any]) -> dict[str, Any]:
    return event["unsigned"].get("m.relations", {})


def latest_edit(c: Client, room: str, *edit_ids: str) -> str:
    """The spec's "most recent" replacement: by origin_server_ts, then the larger event id."""
    events = [c.get(f"rooms/{room}/event/{i}").json() for i in edit_ids]
    return max(events, key=lambda e: (e["origin_server_ts"], e["event_id"]))["event_id"]


# --- threads -----------------------------------------------------------------------------------

def test_thread_relations_and_aggregation(server: ServerProcess) -> None:
    a, b, c = server.users(3)
    room = public_room(a, b, c)
    root = msg(a, room, "root")
    replies = [thread_reply(b, room, root, "r1"), thread_reply(a, room, root, "r2"),
               thread_reply(b, room, root, "r3")]
    unrelated = msg(a, room, "unrelated")

    assert ids(relations(a, room, root)) == replies[::-1]
    assert ids(relations(a, room, root, "m.thread")) == replies[::-1]
    assert ids(relations(a, room, root, "m.thread", "m.room.message")) == replies[::-1]
    assert ids(relations(a, room, root, "m.thread", "m.reaction")) == []
    assert ids(relations(a, room, root, "m.reference")) == []
    assert ids(relations(a, room, unrelated)) == []

    page = threads(a, room)
    assert ids(page) == [root] and "next_batch" not in page
    summary = bundle(page["chunk"][0])["m.thread"]
    assert summary["count"] == 3
    assert summary["latest_event"]["event_id"] == replies[-1]
    assert summary["latest_event"]["content"]["body"] == "r3"
    assert summary["latest_event"]["room_id"] == room
    assert summary["current_user_participated"] is True
    # b replied in the thread; c only reads it.
    assert bundle(threads(b, room)["chunk"][0])["m.thread"]["current_user_participated"] is True
    assert bundle(threads(c, room)["chunk"][0])["m.thread"]["current_user_participated"] is False
    assert ids(threads(b, room, include="participated")) == [root]
    assert ids(threads(c, room, include="participated")) == []
    # Thread replies themselves carry no thread aggregation.
    assert all("m.thread" not in bundle(e) for e in relations(a, room, root)["chunk"])


def test_threads_ordered_by_latest_activity_and_paginated(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = public_room(a, b)
    roots = [msg(a, room, f"root{i}") for i in range(3)]
    for root in roots:
        thread_reply(b, room, root, "reply")
    page = threads(a, room)
    assert ids(page) == roots[::-1]
    thread_reply(a, room, roots[0], "bump")  # the oldest thread becomes the most active
    assert ids(threads(a, room)) == [roots[0], roots[2], roots[1]]

    seen: list[str] = []
    token = None
    for _ in range(5):
        page = threads(a, room, limit=1, **({"from": token} if token else {}))
        seen += ids(page)
        token = page.get("next_batch")
        if token is None:
            break
    assert seen == [roots[0], roots[2], roots[1]]
    # b replied in every thread; a newcomer in none.
    assert ids(threads(b, room, include="participated")) == [roots[0], roots[2], roots[1]]
    d = server.client()
    d.register()
    assert d.post(f"join/{room}").status_code == 200
    assert ids(threads(d, room, include="participated")) == []


def test_events_with_relations_are_not_thread_roots(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = public_room(a)
    root = msg(a, room, "root")
    child = rel(a, room, root, "m.reference", "ref")
    thread_reply(a, room, root, "ok")
    # A thread off an event that has a relation breaks the rules: refused when sent here (a
    # remote server's would be ignored by the reads).
    r = a.put(f"rooms/{room}/send/m.room.message/nested", {
        "msgtype": "m.text", "body": "nested",
        "m.relates_to": {"rel_type": "m.thread", "event_id": child}})
    assert r.status_code == 400
    assert ids(threads(a, room)) == [root]
    ref = relations(a, room, root, "m.reference")["chunk"][0]
    assert "m.thread" not in bundle(ref)


# --- edits ---------------------------------------------------------------------------------------

def test_edits_valid_and_invalid(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = public_room(a, b)
    root = msg(a, room, "original")
    thread_reply(b, room, root, "reply")  # so that /threads serves the root with its bundle
    e1 = edit(a, room, root, "first edit")
    e2 = edit(a, room, root, "second edit")
    newest = latest_edit(a, room, e1, e2)
    # Invalid replacements: another sender, another type, no m.new_content, an edit of an edit.
    invalid = [edit(b, room, root, "not yours"),
               edit(a, room, root, "other type", etype="org.example.custom"),
               edit(a, room, root, "no new content", new_content=False),
               edit(a, room, e1, "edit of an edit")]
    listed = relations(a, room, root, "m.replace")
    assert set(ids(listed)) == {e1, e2, *invalid[:3]}  # listing shows every child
    root_event = threads(a, room)["chunk"][0]
    assert root_event["content"]["body"] == "original"  # content is never replaced
    replacement = bundle(root_event)["m.replace"]
    assert replacement["event_id"] == newest
    assert replacement["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": root}
    assert replacement["sender"] == a.user_id and replacement["room_id"] == room
    # An edit cannot itself be edited: no bundle on e1 despite the edit pointing at it.
    by_id = {e["event_id"]: e for e in listed["chunk"]}
    assert "m.relations" not in by_id[e1]["unsigned"]

    # Redacting the newest edit falls back to the other one.
    older = e1 if newest == e2 else e2
    r = a.put(f"rooms/{room}/redact/{newest}/{uuid.uuid4().hex}", {})
    assert r.status_code == 200, r.text
    assert bundle(threads(a, room)["chunk"][0])["m.replace"]["event_id"] == older
    assert newest not in ids(relations(a, room, root, "m.replace"))

    # A redacted original has no m.replace bundle, but keeps its thread.
    r = a.put(f"rooms/{room}/redact/{root}/{uuid.uuid4().hex}", {})
    assert r.status_code == 200, r.text
    root_event = threads(a, room)["chunk"][0]
    assert "m.replace" not in bundle(root_event)
    assert bundle(root_event)["m.thread"]["count"] == 1


def test_edit_of_thread_reply_is_bundled_in_latest_event(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = public_room(a, b)
    root = msg(a, room, "root")
    reply = thread_reply(b, room, root, "typo")
    fix = edit(b, room, reply, "fixed")
    summary = bundle(threads(a, room)["chunk"][0])["m.thread"]
    assert summary["count"] == 1  # the edit is an m.replace, not a thread event
    latest = summary["latest_event"]
    assert latest["event_id"] == reply
    assert bundle(latest)["m.replace"]["event_id"] == fix
    assert ids(relations(a, room, reply)) == [fix]
    assert bundle(relations(a, room, root)["chunk"][0])["m.replace"]["event_id"] == fix


# --- reactions and references ------------------------------------------------------------------

def test_reactions_are_listed_not_aggregated(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = public_room(a, b)
    root = msg(a, room, "react to me")
    thread_reply(a, room, root, "reply")
    reactions = [send(c, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root,
                                                  "key": "👍"}}, "m.reaction") for c in (a, b)]
    assert ids(relations(a, room, root, "m.annotation")) == reactions[::-1]
    assert ids(relations(a, room, root, "m.annotation", "m.reaction")) == reactions[::-1]
    assert ids(relations(a, room, root, "m.annotation", "m.room.message")) == []
    assert set(bundle(threads(a, room)["chunk"][0])) == {"m.thread"}


def test_references_are_aggregated(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = public_room(a, b)
    root = msg(a, room, "root")
    thread_reply(a, room, root, "reply")
    refs = [rel(a, room, root, "m.reference", "ref1"), rel(b, room, root, "m.reference", "ref2")]
    chunk = bundle(threads(a, room)["chunk"][0])["m.reference"]["chunk"]
    assert sorted(e["event_id"] for e in chunk) == sorted(refs)
    # A child that is itself referenced carries its own bundle when listed.
    sub = rel(b, room, refs[0], "m.reference", "sub")
    listed = {e["event_id"]: e for e in relations(a, room, root, "m.reference")["chunk"]}
    assert bundle(listed[refs[0]])["m.reference"] == {"chunk": [{"event_id": sub}]}
    assert "m.relations" not in listed[refs[1]]["unsigned"]


# --- pagination and recursion -------------------------------------------------------------------

def test_relations_pagination(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = public_room(a)
    root = msg(a, room, "root")
    replies = [thread_reply(a, room, root, f"r{i}") for i in range(5)]

    p1 = relations(a, room, root, limit=2)
    assert ids(p1) == [replies[4], replies[3]] and "prev_batch" not in p1
    p2 = relations(a, room, root, limit=2, **{"from": p1["next_batch"]})
    assert ids(p2) == [replies[2], replies[1]] and p2["prev_batch"] == p1["next_batch"]
    p3 = relations(a, room, root, limit=2, **{"from": p2["next_batch"]})
    assert ids(p3) == [replies[0]] and "next_batch" not in p3
    # from page 1 to page 2 covers page 2 again.
    again = relations(a, room, root, limit=10, **{"from": p1["next_batch"], "to": p2["next_batch"]})
    assert ids(again) == ids(p2)
    # The other way round is empty.
    assert ids(relations(a, room, root, **{"from": p2["next_batch"], "to": p1["next_batch"]})) == []

    f1 = relations(a, room, root, dir="f", limit=3)
    assert ids(f1) == replies[:3]
    f2 = relations(a, room, root, dir="f", limit=3, **{"from": f1["next_batch"]})
    assert ids(f2) == replies[3:] and "next_batch" not in f2
    # An exactly full last page has no next_batch either.
    assert "next_batch" not in relations(a, room, root, limit=5)


def test_relations_recursion(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = public_room(a)
    root = msg(a, room, "root")
    chain = []
    parent = root
    for i in range(4):
        parent = rel(a, room, parent, "m.reference", f"hop{i + 1}")
        chain.append(parent)
    reaction = send(a, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root,
                                               "key": "x"}}, "m.reaction")
    behind_reaction = rel(a, room, reaction, "m.reference", "behind a reaction")

    direct = relations(a, room, root)
    assert ids(direct) == [reaction, chain[0]] and "recursion_depth" not in direct
    assert relations(a, room, root, recurse="false")["recursion_depth"] == 1
    deep = relations(a, room, root, recurse="true")
    assert deep["recursion_depth"] == 3
    assert set(ids(deep)) == {reaction, behind_reaction, *chain[:3]}
    assert ids(deep) == [behind_reaction, reaction, chain[2], chain[1], chain[0]]
    # The rel_type filter applies at every hop: nothing is reached through the reaction.
    filtered = relations(a, room, root, "m.reference", recurse="true")
    assert ids(filtered) == [chain[2], chain[1], chain[0]]
    assert ids(relations(a, room, root, "m.reference", "m.room.message", recurse="true",
                         dir="f", limit=2)) == chain[:2]


# --- visibility ---------------------------------------------------------------------------------

def test_user_who_left_does_not_see_later_relations(server: ServerProcess) -> None:
    a, b = server.users(2)
    room = public_room(a, b)
    root = msg(a, room, "root")
    early = thread_reply(a, room, root, "before leave")
    other_root = msg(a, room, "other root")
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    late = thread_reply(a, room, root, "after leave")
    edit(a, room, root, "edited after leave")
    rel(a, room, root, "m.reference", "ref after leave")
    send(a, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "x"}},
         "m.reaction")
    thread_reply(a, room, other_root, "thread started after leave")
    late_root = msg(a, room, "posted after leave")

    assert len(ids(relations(a, room, root))) == 5
    assert ids(relations(b, room, root)) == [early]
    assert ids(relations(b, room, root, recurse="true")) == [early]
    page = threads(b, room)
    assert ids(page) == [root]  # the thread on other_root began after b left
    root_event = page["chunk"][0]
    assert set(bundle(root_event)) == {"m.thread"}
    assert bundle(root_event)["m.thread"]["count"] == 1
    assert bundle(root_event)["m.thread"]["latest_event"]["event_id"] == early
    for_a = {e["event_id"]: bundle(e) for e in threads(a, room)["chunk"]}
    assert set(for_a) == {root, other_root}
    assert for_a[root]["m.thread"]["latest_event"]["event_id"] == late
    assert set(for_a[root]) == {"m.thread", "m.replace", "m.reference"}
    r = b.get(f"{V1}/rooms/{room}/relations/{late_root}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


def test_outsiders_and_unknown_events(server: ServerProcess) -> None:
    a, c = server.users(2)
    room = public_room(a)
    other = public_room(a)
    root = msg(a, room, "root")
    thread_reply(a, room, root, "reply")
    r = c.get(f"{V1}/rooms/{room}/relations/{root}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    r = c.get(f"{V1}/rooms/{room}/threads")
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = a.get(f"{V1}/rooms/{other}/relations/{root}")  # the event is in another room
    assert r.status_code == 404
    r = a.get(f"{V1}/rooms/{room}/relations/$nonexistent")
    assert r.status_code == 404
    r = a.get(f"{V1}/rooms/!nowhere:test.local/threads")
    assert r.status_code == 403


def test_world_readable_room_threads_for_non_members(server: ServerProcess) -> None:
    a, c = server.users(2)
    room = public_room(a, history="world_readable")
    root = msg(a, room, "root")
    reply = thread_reply(a, room, root, "reply")
    assert ids(threads(c, room)) == [root]
    assert ids(relations(c, room, root)) == [reply]


def test_bad_parameters(server: ServerProcess) -> None:
    (a,) = server.users(1)
    room = public_room(a)
    root = msg(a, room, "root")
    for params in ({"dir": "x"}, {"from": "garbage"}, {"to": "garbage"}, {"limit": "-1"},
                   {"limit": "ten"}, {"recurse": "maybe"}):
        r = a.get(f"{V1}/rooms/{room}/relations/{root}", params=params)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM"), params
    for params in ({"include": "some"}, {"limit": "0"}, {"from": "garbage"}):
        r = a.get(f"{V1}/rooms/{room}/threads", params=params)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM"), params
    # Large limits are capped, not refused.
    assert relations(a, room, root, limit=100000)["chunk"] == []


def test_thread_cannot_start_from_an_event_with_a_relation(server) -> None:
    a = server.client()
    a.register()
    room = a.post("createRoom", {}).json()["room_id"]
    root = a.put(f"rooms/{room}/send/m.room.message/r", {"msgtype": "m.text", "body": "root"}).json()["event_id"]
    reply = a.put(f"rooms/{room}/send/m.room.message/t", {
        "msgtype": "m.text", "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root}}).json()["event_id"]
    r = a.put(f"rooms/{room}/send/m.room.message/bad", {
        "msgtype": "m.text", "body": "nested",
        "m.relates_to": {"rel_type": "m.thread", "event_id": reply}})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_UNKNOWN")
