"""POST /search on both engines: what is found, what must never be, ordering, paging, extras.

Every test searches for words made up for it, so tests sharing a server do not see each
other's events.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.harness import Client, ServerProcess


def users(server: ServerProcess, n: int) -> list[Client]:
    out = []
    for _ in range(n):
        c = server.client()
        c.register()
        out.append(c)
    return out


def word() -> str:
    return "w" + uuid.uuid4().hex[:10]


def create(c: Client, **body: Any) -> str:
    r = c.post("createRoom", body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def send(c: Client, room: str, body: str, **content: Any) -> str:
    r = c.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
              {"msgtype": "m.text", "body": body, **content})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def search(c: Client, term: str, next_batch: str | None = None, status: int = 200,
           **criteria: Any) -> dict[str, Any]:
    r = c.post("search", {"search_categories": {"room_events": {"search_term": term, **criteria}}},
               params={"next_batch": next_batch} if next_batch else None)
    assert r.status_code == status, r.text
    return r.json()["search_categories"]["room_events"] if status == 200 else r.json()


def found(c: Client, term: str, **criteria: Any) -> list[str]:
    return [x["result"]["event_id"] for x in search(c, term, **criteria)["results"]]


def test_finds_own_rooms_only(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    room_a = create(a)
    room_b = create(b)  # private: a was never in it
    mine = send(a, room_a, f"the quick {w} jumps")
    send(b, room_b, f"a secret {w} elsewhere")
    out = search(a, w)
    assert [x["result"]["event_id"] for x in out["results"]] == [mine]
    hit = out["results"][0]
    assert hit["result"]["room_id"] == room_a and hit["result"]["content"]["body"] == f"the quick {w} jumps"
    assert isinstance(hit["rank"], (int, float)) and hit["rank"] > 0
    assert out["count"] == 1
    assert out["highlights"] == [w]
    assert "next_batch" not in out
    assert len(found(b, w)) == 1 and found(b, w) != [mine]


def test_query_syntax(server: ServerProcess) -> None:
    (a,) = users(server, 1)
    room = create(a)
    w, x, y = word(), word(), word()
    both = send(a, room, f"{w}ians and {x} together")
    only_w = send(a, room, f"{w}ians alone, {y}")
    # A word matches the start of words, case-insensitively; side by side, all must match.
    assert set(found(a, w.upper())) == {both, only_w}
    assert found(a, f"{w} {x}") == [both]
    assert found(a, f"{w} -{x}") == [only_w]
    assert set(found(a, f"{x} OR {y}")) == {both, only_w}
    # A quoted phrase matches exactly and in order.
    assert found(a, f'"and {x}"') == [both]
    assert found(a, f'"{x} and"') == []
    assert found(a, f'"{w}"') == []
    # Punctuation and stray operators are no syntax errors.
    assert found(a, f'({w}* AND "') == [both]
    assert search(a, '"" - OR * :')["results"] == []
    assert search(a, "")["results"] == []


def test_searched_keys_and_types(server: ServerProcess) -> None:
    (a,) = users(server, 1)
    n, t, m, rich = word(), word(), word(), word()
    room = create(a, name=f"Room {n}", topic=f"About {t}")
    msg = send(a, room, f"talking about {m}")
    r = a.put(f"rooms/{room}/state/m.room.topic/", {
        "topic": f"plain {rich}",
        "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<b>html</b>"},
                               {"body": f"plain {rich}"}]}})
    assert r.status_code == 200, r.text
    topic_id = r.json()["event_id"]
    name_ids = found(a, n)
    assert len(name_ids) == 1
    assert found(a, n, keys=["content.body"]) == []
    assert found(a, n, keys=["content.name"]) == name_ids
    assert len(found(a, t, keys=["content.topic"])) == 1
    assert found(a, rich) == [topic_id]
    assert found(a, m, keys=["content.body", "content.topic"]) == [msg]
    assert found(a, m, filter={"types": ["m.room.name"]}) == []
    assert found(a, m, filter={"not_types": ["m.room.*"]}) == []
    assert found(a, m, filter={"types": ["m.room.mess*"]}) == [msg]


def test_filter_rooms_senders_and_urls(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    r1 = create(a, preset="public_chat")
    r2 = create(a)
    assert b.post(f"join/{r1}").status_code == 200
    e1 = send(a, r1, f"{w} one")
    e2 = send(b, r1, f"{w} two")
    e3 = send(a, r2, f"{w} three", url="mxc://test.local/abc")
    assert set(found(a, w)) == {e1, e2, e3}
    assert set(found(a, w, filter={"rooms": [r1]})) == {e1, e2}
    assert found(a, w, filter={"not_rooms": [r1]}) == [e3]
    assert found(a, w, filter={"senders": [b.user_id]}) == [e2]
    assert set(found(a, w, filter={"not_senders": [b.user_id]})) == {e1, e3}
    assert found(a, w, filter={"contains_url": True}) == [e3]
    assert set(found(a, w, filter={"contains_url": False})) == {e1, e2}
    assert found(b, w) == found(a, w, filter={"rooms": [r1]})


def test_history_visibility_and_leaving(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    room = create(a, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
    send(a, room, f"{w} before b joined")
    assert b.post(f"join/{room}").status_code == 200
    seen = send(a, room, f"{w} while b is here")
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    send(a, room, f"{w} after b left")
    assert len(found(a, w)) == 3
    assert found(b, w) == [seen]
    out = search(b, w)
    assert out["count"] == 1
    # Forgetting the room takes it out of search altogether.
    assert b.post(f"rooms/{room}/forget", {}).status_code == 200
    assert found(b, w) == []


def test_shared_history_and_world_readable(server: ServerProcess) -> None:
    a, b, c = users(server, 3)
    w = word()
    shared = create(a, preset="public_chat")  # history_visibility shared
    early = send(a, shared, f"{w} early")
    assert b.post(f"join/{shared}").status_code == 200
    assert early in found(b, w)
    readable = create(a, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
    send(a, readable, f"{w} readable")
    # c has never been in either room: search covers rooms one is or was in.
    assert found(c, w) == []


def test_invited_is_not_a_member(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    room = create(a, initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "invited"}}])
    r = a.post(f"rooms/{room}/invite", {"user_id": b.user_id})
    assert r.status_code == 200, r.text
    send(a, room, f"{w} while b is invited")
    assert found(b, w) == []
    assert b.post(f"join/{room}").status_code == 200
    assert len(found(b, w)) == 1


def test_redacted_events_drop_out(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    room = create(a, preset="public_chat")
    assert b.post(f"join/{room}").status_code == 200
    keep = send(a, room, f"{w} keep")
    gone = send(b, room, f"{w} gone")
    assert set(found(a, w)) == {keep, gone}
    r = b.put(f"rooms/{room}/redact/{gone}/{uuid.uuid4().hex}", {"reason": "oops"})
    assert r.status_code == 200, r.text
    assert found(a, w) == [keep]
    assert found(b, w) == [keep]
    r = a.put(f"rooms/{room}/redact/{keep}/{uuid.uuid4().hex}", {})
    assert r.status_code == 200, r.text
    assert found(a, w) == []


def test_encrypted_rooms_are_not_searched(server: ServerProcess) -> None:
    (a,) = users(server, 1)
    w = word()
    room = create(a, initial_state=[{"type": "m.room.encryption",
                                     "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    send(a, room, f"{w} sent in the clear by a confused client")
    r = a.put(f"rooms/{room}/send/m.room.encrypted/{uuid.uuid4().hex}",
              {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": w, "sender_key": "k",
               "device_id": "D", "session_id": "s"})
    assert r.status_code == 200, r.text
    assert found(a, w) == []


def test_order_rank_and_recent(server: ServerProcess) -> None:
    (a,) = users(server, 1)
    w = word()
    room = create(a)
    strong = send(a, room, f"{w} {w} {w}")
    weak = send(a, room, f"{w} appears once in this much longer message about other things entirely")
    by_rank = search(a, w, order_by="rank")["results"]
    assert [x["result"]["event_id"] for x in by_rank] == [strong, weak]
    assert by_rank[0]["rank"] > by_rank[1]["rank"]
    assert found(a, w) == [strong, weak]  # rank is the default
    assert found(a, w, order_by="recent") == [weak, strong]


@pytest.mark.parametrize("order", ["recent", "rank"])
def test_pagination(server: ServerProcess, order: str) -> None:
    (a,) = users(server, 1)
    w = word()
    room = create(a)
    sent = [send(a, room, f"{w} " + "filler " * i) for i in range(7)]
    pages: list[list[str]] = []
    token = None
    counts = []
    while True:
        out = search(a, w, next_batch=token, order_by=order, filter={"limit": 3})
        pages.append([x["result"]["event_id"] for x in out["results"]])
        counts.append(out["count"])
        token = out.get("next_batch")
        if token is None:
            break
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [e for p in pages for e in p]
    assert sorted(flat) == sorted(sent)
    if order == "recent":
        assert flat == sent[::-1]
    assert counts[-1] == 7
    # A token is bound to its order, and garbage is refused.
    other = "rank" if order == "recent" else "recent"
    first = search(a, w, order_by=order, filter={"limit": 3})["next_batch"]
    err = search(a, w, next_batch=first, status=400, order_by=other)
    assert err["errcode"] == "M_INVALID_PARAM"
    err = search(a, w, next_batch="not-a-token!", status=400, order_by=order)
    assert err["errcode"] == "M_INVALID_PARAM"


def test_event_context_and_profiles(server: ServerProcess) -> None:
    a, b = users(server, 2)
    assert a.put(f"profile/{a.user_id}/displayname", {"displayname": "Alice A"}).status_code == 200
    assert a.put(f"profile/{a.user_id}/avatar_url",
                 {"avatar_url": "mxc://test.local/alice"}).status_code == 200
    w = word()
    room = create(a, preset="public_chat")
    assert b.post(f"join/{room}").status_code == 200
    m1 = send(a, room, "one")
    m2 = send(b, room, "two")
    hit = send(a, room, f"three {w}")
    m4 = send(b, room, "four")
    send(a, room, "five")
    out = search(a, w, event_context={"before_limit": 2, "after_limit": 1, "include_profile": True})
    (res,) = out["results"]
    assert res["result"]["event_id"] == hit
    ctx = res["context"]
    assert [e["event_id"] for e in ctx["events_before"]] == [m2, m1]
    assert [e["event_id"] for e in ctx["events_after"]] == [m4]
    assert ctx["profile_info"][a.user_id] == {"displayname": "Alice A",
                                              "avatar_url": "mxc://test.local/alice"}
    assert b.user_id in ctx["profile_info"]
    # The tokens page the room's timeline from the edges of the context.
    r = a.get(f"rooms/{room}/messages", params={"from": ctx["start"], "dir": "b", "limit": 1})
    assert r.status_code == 200, r.text
    (before_m1,) = r.json()["chunk"]
    assert (before_m1["type"], before_m1["state_key"]) == ("m.room.member", b.user_id)
    r = a.get(f"rooms/{room}/messages", params={"from": ctx["end"], "dir": "f", "limit": 1})
    assert r.status_code == 200, r.text
    assert [e["content"].get("body") for e in r.json()["chunk"]] == ["five"]
    # Defaults: five either side, no profiles; no context unless asked.
    res = search(a, w, event_context={})["results"][0]
    assert len(res["context"]["events_before"]) == 5 and len(res["context"]["events_after"]) == 2
    assert "profile_info" not in res["context"]
    assert "context" not in search(a, w)["results"][0]


def test_context_respects_visibility(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    room = create(a, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
    hidden = send(a, room, "before b joined")
    assert b.post(f"join/{room}").status_code == 200
    hit = send(a, room, f"{w} hello b")
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    after = send(a, room, "after b left")
    (res,) = search(b, w, event_context={"before_limit": 10, "after_limit": 10})["results"]
    assert res["result"]["event_id"] == hit
    ids = [e["event_id"] for e in res["context"]["events_before"] + res["context"]["events_after"]]
    assert hidden not in ids and after not in ids


def test_groupings(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    r1 = create(a, preset="public_chat")
    r2 = create(a)
    assert b.post(f"join/{r1}").status_code == 200
    e1 = send(a, r1, f"{w} a in r1")
    e2 = send(b, r1, f"{w} b in r1")
    e3 = send(a, r2, f"{w} a in r2")
    out = search(a, w, order_by="recent",
                 groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]})
    by_room = out["groups"]["room_id"]
    assert by_room[r2]["results"] == [e3] and by_room[r1]["results"] == [e2, e1]
    assert by_room[r2]["order"] < by_room[r1]["order"]
    by_sender = out["groups"]["sender"]
    assert by_sender[a.user_id]["results"] == [e3, e1] and by_sender[b.user_id]["results"] == [e2]
    assert all("next_batch" not in g for g in [*by_room.values(), *by_sender.values()])
    # A group's next_batch continues that group only.
    out = search(a, w, order_by="recent", filter={"limit": 1}, groupings={"group_by": [{"key": "room_id"}]})
    assert found_ids(out) == [e3]
    assert "next_batch" in out
    page = search(a, w, order_by="recent", filter={"limit": 1}, next_batch=out["next_batch"],
                  groupings={"group_by": [{"key": "room_id"}]})
    assert found_ids(page) == [e2]
    out = search(a, w, order_by="recent", filter={"limit": 1, "rooms": [r1]},
                 groupings={"group_by": [{"key": "room_id"}]})
    assert found_ids(out) == [e2]
    token = out["groups"]["room_id"][r1]["next_batch"]
    page = search(a, w, order_by="recent", filter={"limit": 1}, next_batch=token,
                  groupings={"group_by": [{"key": "room_id"}]})
    assert found_ids(page) == [e1]


def found_ids(out: dict[str, Any]) -> list[str]:
    return [x["result"]["event_id"] for x in out["results"]]


def test_include_state(server: ServerProcess) -> None:
    a, b = users(server, 2)
    w = word()
    room = create(a, preset="public_chat", name="Stateful")
    assert b.post(f"join/{room}").status_code == 200
    send(a, room, f"{w} here")
    out = search(b, w, include_state=True)
    state = out["state"][room]
    assert {(e["type"], e["state_key"]) for e in state} >= {
        ("m.room.create", ""), ("m.room.name", ""), ("m.room.member", b.user_id)}
    # After leaving, the state is the one at the leave, not later changes.
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    assert a.put(f"rooms/{room}/state/m.room.name/", {"name": "Renamed"}).status_code == 200
    state = search(b, w, include_state=True)["state"][room]
    names = [e["content"].get("name") for e in state if e["type"] == "m.room.name"]
    assert names == ["Stateful"]
    assert "state" not in search(b, w)


def test_bad_requests(server: ServerProcess) -> None:
    (a,) = users(server, 1)
    def post(body: Any) -> dict[str, Any]:
        r = a.post("search", body)
        assert r.status_code == 400, r.text
        return r.json()
    assert post({})["errcode"] == "M_MISSING_PARAM"
    assert post({"search_categories": {"room_events": {}}})["errcode"] == "M_MISSING_PARAM"
    base = {"search_term": "x"}
    for extra, code in [({"order_by": "oldest"}, "M_INVALID_PARAM"),
                        ({"keys": ["content.msgtype"]}, "M_INVALID_PARAM"),
                        ({"keys": "content.body"}, "M_INVALID_PARAM"),
                        ({"filter": {"limit": "ten"}}, "M_BAD_JSON"),
                        ({"filter": {"rooms": ["not-a-room"]}}, "M_BAD_JSON"),
                        ({"event_context": {"before_limit": -1}}, "M_INVALID_PARAM"),
                        ({"groupings": {"group_by": [{"key": "type"}]}}, "M_INVALID_PARAM"),
                        ({"search_term": 5}, "M_INVALID_PARAM")]:
        assert post({"search_categories": {"room_events": {**base, **extra}}})["errcode"] == code, extra
    # No category asked for: nothing to answer.
    r = a.post("search", {"search_categories": {}})
    assert r.status_code == 200 and r.json() == {"search_categories": {}}
    assert a.post("search", {"search_categories": {}}, token=None).status_code == 401
