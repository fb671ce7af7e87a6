"""POST /user_directory/search on both engines: who may be found, by what, and who never is."""

from __future__ import annotations

import uuid
from typing import Any

from tests.harness import Client, ServerProcess

PW = "correct horse battery"


def user(server: ServerProcess, localpart: str | None = None, displayname: str | None = None) -> Client:
    c = server.client()
    c.register(localpart or "u" + uuid.uuid4().hex[:10], PW)
    if displayname is not None:
        r = c.put(f"profile/{c.user_id}/displayname", {"displayname": displayname})
        assert r.status_code == 200, r.text
    return c


def tag() -> str:
    return uuid.uuid4().hex[:8]


def create(c: Client, **body: Any) -> str:
    r = c.post("createRoom", body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def join(c: Client, room: str) -> None:
    r = c.post(f"join/{room}")
    assert r.status_code == 200, r.text


def search(c: Client, term: str, **body: Any) -> dict[str, Any]:
    r = c.post("user_directory/search", {"search_term": term, **body})
    assert r.status_code == 200, r.text
    return r.json()


def ids(c: Client, term: str, **body: Any) -> list[str]:
    return [u["user_id"] for u in search(c, term, **body)["results"]]


def test_shared_private_room(server: ServerProcess) -> None:
    t = tag()
    a = user(server, f"alpha{t}")
    b = user(server, f"bravo{t}")
    c = user(server, f"charlie{t}")
    room = create(a, invite=[b.user_id])
    join(b, room)
    create(c)  # c is alone in a private room
    assert ids(a, f"bravo{t}") == [b.user_id]
    assert ids(b, f"alpha{t}") == [a.user_id]
    assert ids(a, f"charlie{t}") == []
    assert ids(c, f"alpha{t}") == []
    # Invited is not sharing: the directory counts joined members.
    d = user(server, f"delta{t}")
    r = a.post(f"rooms/{room}/invite", {"user_id": d.user_id})
    assert r.status_code == 200, r.text
    assert ids(a, f"delta{t}") == []
    # Leaving ends it.
    assert b.post(f"rooms/{room}/leave", {}).status_code == 200
    assert ids(a, f"bravo{t}") == []
    assert ids(b, f"alpha{t}") == []


def test_public_rooms(server: ServerProcess) -> None:
    t = tag()
    outsider = user(server)
    pub = user(server, f"pub{t}")
    create(pub, preset="public_chat")
    listed = user(server, f"listed{t}")
    room = create(listed)  # invite-only, but published in the room directory
    r = listed.put(f"directory/list/room/{room}", {"visibility": "public"})
    assert r.status_code == 200, r.text
    readable = user(server, f"readable{t}")
    create(readable, initial_state=[{"type": "m.room.history_visibility",
                                     "content": {"history_visibility": "world_readable"}}])
    hidden = user(server, f"hidden{t}")
    create(hidden)
    assert ids(outsider, f"pub{t}") == [pub.user_id]
    assert ids(outsider, f"listed{t}") == [listed.user_id]
    assert ids(outsider, f"readable{t}") == [readable.user_id]
    assert ids(outsider, f"hidden{t}") == []
    # The join rule is read from the room's current state, and follows its changes.
    late = user(server, f"late{t}")
    pub_room = create(pub, preset="public_chat")
    join(late, pub_room)
    assert ids(outsider, f"late{t}") == [late.user_id]
    assert pub.put(f"rooms/{pub_room}/state/m.room.join_rules/", {"join_rule": "invite"}).status_code == 200
    assert ids(outsider, f"late{t}") == []
    assert ids(pub, f"late{t}") == [late.user_id]  # still sharing the room


def test_display_name_search(server: ServerProcess) -> None:
    t = tag()
    a = user(server)
    b = user(server, displayname=f"Zébulon Quux{t}")
    r = b.put(f"profile/{b.user_id}/avatar_url", {"avatar_url": "mxc://test.local/zeb"})
    assert r.status_code == 200, r.text
    room = create(a, preset="public_chat")
    join(b, room)
    expected = {"user_id": b.user_id, "display_name": f"Zébulon Quux{t}",
                "avatar_url": "mxc://test.local/zeb"}
    for term in (f"quux{t}", f"QUUX{t}", f"zéb quux{t[:4]}", f"ZÉBULON quux{t}", f"Zébulon Quux{t}"):
        assert search(a, term)["results"] == [expected], term
    assert ids(a, f"ulon quux{t}") == []  # words match from their start
    assert ids(a, f"quux{t} nobody") == []  # every word must match
    # By user id too: the whole id, its start, or words of the localpart.
    assert ids(a, b.user_id) == [b.user_id]
    assert ids(a, b.user_id[:9]) == [b.user_id]
    assert ids(a, b.user_id.split(":")[0][1:].upper()) == [b.user_id]
    # A profile change is searchable at once; the old name is gone.
    r = b.put(f"profile/{b.user_id}/displayname", {"displayname": f"Renamed{t}"})
    assert r.status_code == 200, r.text
    assert ids(a, f"renamed{t}") == [b.user_id]
    assert ids(a, f"quux{t}") == []


def test_ranking_and_limit(server: ServerProcess) -> None:
    t = tag()
    a = user(server)
    room = create(a, preset="public_chat")
    exact = user(server, displayname=f"kiwi{t}")
    starts = user(server, displayname=f"kiwi{t} fruit")
    word = user(server, displayname=f"green kiwi{t}")
    for c in (word, starts, exact):
        join(c, room)
    out = search(a, f"kiwi{t}")
    assert [u["user_id"] for u in out["results"]] == [exact.user_id, starts.user_id, word.user_id]
    assert out["limited"] is False
    out = search(a, f"kiwi{t}", limit=2)
    assert [u["user_id"] for u in out["results"]] == [exact.user_id, starts.user_id]
    assert out["limited"] is True


def test_deactivated_users_disappear(server: ServerProcess) -> None:
    t = tag()
    a = user(server)
    b = user(server, f"gone{t}", displayname=f"Gone{t}")
    room = create(a, preset="public_chat")
    join(b, room)
    assert ids(a, f"gone{t}") == [b.user_id]
    r = b.post("account/deactivate", {"auth": b.password_auth(PW)})
    assert r.status_code == 200, r.text
    assert ids(a, f"gone{t}") == []
    assert ids(a, b.user_id) == []


def test_bad_requests(server: ServerProcess) -> None:
    a = user(server)
    for body, code in [({}, "M_MISSING_PARAM"), ({"search_term": 1}, "M_INVALID_PARAM"),
                       ({"search_term": "x", "limit": "3"}, "M_INVALID_PARAM"),
                       ({"search_term": "x", "limit": -1}, "M_INVALID_PARAM")]:
        r = a.post("user_directory/search", body)
        assert r.status_code == 400, r.text
        assert r.json()["errcode"] == code
    assert search(a, "   ") == {"results": [], "limited": False}
    assert a.post("user_directory/search", {"search_term": "x"}, token=None).status_code == 401
