"""POST/GET /user/{userId}/filter on both engines."""

from __future__ import annotations

from urllib.parse import quote

from tests.harness import Client, ServerProcess

FILTER = {
    "room": {"state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"],
                       "lazy_load_members": True},
             "timeline": {"limit": 10, "types": ["m.room.message"],
                          "not_senders": ["@spam:example.com"]},
             "ephemeral": {"types": ["m.receipt", "m.typing"]},
             "include_leave": False},
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender", r"content.m\.relates_to"],
}


def path(c: Client, user_id: str | None = None) -> str:
    return f"user/{quote(user_id or c.user_id or '')}/filter"


def test_create_and_fetch(user: Client) -> None:
    r = user.post(path(user), FILTER)
    assert r.status_code == 200, r.text
    filter_id = r.json()["filter_id"]
    assert isinstance(filter_id, str) and filter_id and not filter_id.startswith("{")
    r = user.get(f"{path(user)}/{filter_id}")
    assert r.status_code == 200, r.text
    assert r.json() == FILTER

    other = user.post(path(user), {"room": {"timeline": {"limit": 1}}}).json()["filter_id"]
    assert other != filter_id
    assert user.get(f"{path(user)}/{other}").json() == {"room": {"timeline": {"limit": 1}}}
    # the same definition again (keys in another order) gets the same id back
    again = {"event_fields": FILTER["event_fields"], "event_format": "client",
             "presence": FILTER["presence"], "room": FILTER["room"]}
    assert user.post(path(user), again).json()["filter_id"] == filter_id
    empty = user.post(path(user), {})
    assert empty.status_code == 200 and user.get(f"{path(user)}/{empty.json()['filter_id']}").json() == {}


def test_unknown_filters_are_not_found(user: Client) -> None:
    for filter_id in ("12345", "nope", "9" * 40, "{}"):
        r = user.get(f"{path(user)}/{quote(filter_id)}")
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), filter_id


def test_other_users_filters(server: ServerProcess, user: Client) -> None:
    other = server.client()
    other.register()
    filter_id = user.post(path(user), FILTER).json()["filter_id"]
    # Reading someone else's filter looks the same as an unknown one.
    r = other.get(f"{path(other, user.user_id)}/{filter_id}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # Ids are per user: the other user's own namespace does not hold this filter.
    own = other.get(f"{path(other)}/{filter_id}")
    assert own.status_code == 404
    r = other.post(path(other, user.user_id), FILTER)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = other.post(path(other, "@someone:elsewhere.example"), FILTER)
    assert r.status_code == 403
    # each user counts from their own start and can read what they stored
    mine = other.post(path(other), {"presence": {"limit": 3}}).json()["filter_id"]
    assert other.get(f"{path(other)}/{mine}").json() == {"presence": {"limit": 3}}
    assert user.get(f"{path(user)}/{filter_id}").json() == FILTER


def test_bad_filters(user: Client) -> None:
    for body in ({"room": {"timeline": {"limit": "ten"}}}, {"event_fields": "type"},
                 {"event_format": "xml"}, {"room": {"rooms": ["not-a-room"]}},
                 {"presence": {"senders": [1]}}, {"room": {"state": {"lazy_load_members": "yes"}}},
                 [], "filter"):
        r = user.post(path(user), body)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON"), body
    r = user.post(path(user), data=b'{"room": ', headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_NOT_JSON")
    # nothing was stored by the failures: the first good filter gets the first id
    first = user.post(path(user), {}).json()["filter_id"]
    assert first == "0"


def test_requires_auth(user: Client) -> None:
    r = user.post(path(user), {}, token=None)
    assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    r = user.get(f"{path(user)}/0", token=None)
    assert r.status_code == 401
