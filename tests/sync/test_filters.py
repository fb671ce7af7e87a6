"""Filters: validation, every field's matching rule, event_fields, inline JSON and stored ids."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from crypto.room_versions import get_room_version
from homeserver.http.errors import MatrixError
from homeserver.rooms.events import Event
from homeserver.sync.filters import (DEFAULT_FILTER, DEFAULT_LIMIT, MAX_LIMIT, EventFilter,
                                     FilterService, RoomEventFilter, SyncFilter,
                                     canonical_filter_json, check_filter_json, is_inline_filter,
                                     select_fields, split_field_path, type_matches)


def ev(type_: str = "m.room.message", sender: str = "@a:x", room_id: str | None = "!r:x",
       **content: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "sender": sender, "content": content,
                           "event_id": "$e", "origin_server_ts": 1}
    if room_id is not None:
        out["room_id"] = room_id
    return out


def errcode(value: Any) -> str:
    with pytest.raises(MatrixError) as e:
        SyncFilter.from_json(value)
    assert e.value.status == 400
    return e.value.errcode


# --- validation ----------------------------------------------------------------------------------

def test_valid_filters_pass_and_are_returned_unchanged() -> None:
    spec_example = {
        "room": {"state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
                 "timeline": {"limit": 10, "types": ["m.room.message"],
                              "not_rooms": ["!726s6s6q:example.com"],
                              "not_senders": ["@spam:example.com"]},
                 "ephemeral": {"types": ["m.receipt", "m.typing"]},
                 "account_data": {"types": ["m.tag"]}, "include_leave": True,
                 "rooms": ["!a:x"], "not_rooms": []},
        "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
        "account_data": {"limit": 5},
        "event_format": "client", "event_fields": ["type", "content", "sender"],
        "some_future_key": {"anything": 1},
    }
    assert check_filter_json(spec_example) is spec_example
    assert check_filter_json({}) == {}
    # null counts as absent
    assert SyncFilter.from_json({"room": None, "event_fields": None}) == DEFAULT_FILTER


@pytest.mark.parametrize("bad", [
    [], "x", 1, None,
    {"event_fields": "type"}, {"event_fields": [1]},
    {"event_format": "xml"}, {"event_format": 1},
    {"presence": []}, {"presence": {"limit": "10"}}, {"presence": {"limit": True}},
    {"presence": {"limit": 1.5}}, {"presence": {"limit": -1}},
    {"account_data": {"types": "m.tag"}}, {"account_data": {"not_types": [None]}},
    {"presence": {"senders": ["alice"]}}, {"presence": {"not_senders": [1]}},
    {"room": []}, {"room": {"rooms": "!a:x"}}, {"room": {"not_rooms": ["a:x"]}},
    {"room": {"include_leave": "true"}},
    {"room": {"timeline": "x"}}, {"room": {"timeline": {"limit": "5"}}},
    {"room": {"state": {"lazy_load_members": 1}}},
    {"room": {"state": {"include_redundant_members": "yes"}}},
    {"room": {"timeline": {"contains_url": "true"}}},
    {"room": {"timeline": {"unread_thread_notifications": 0}}},
    {"room": {"ephemeral": {"rooms": ["@not-a-room:x"]}}},
    {"room": {"account_data": {"not_rooms": [3]}}},
    {"room": {"timeline": {"senders": ["!room:x"]}}},
])
def test_malformed_filters_are_bad_json(bad: Any) -> None:
    assert errcode(bad) == "M_BAD_JSON"


def test_error_names_the_offending_field() -> None:
    with pytest.raises(MatrixError) as e:
        check_filter_json({"room": {"timeline": {"limit": "5"}}})
    assert "room.timeline.limit" in e.value.message


# --- types, senders, rooms ----------------------------------------------------------------------

def test_type_wildcards() -> None:
    assert type_matches("m.room.message", ["m.*"])
    assert type_matches("m.room.message", ["*"])
    assert type_matches("m.room.message", ["m.room.message"])
    assert type_matches("m.room.message", ["m.*.message"])
    assert type_matches("m.room.message", ["*.message"])
    assert not type_matches("m.room.message", ["m.room"])
    assert not type_matches("m.room.message", ["m.room.messages"])
    assert not type_matches("mxroom.message", ["m.room.*"])  # '.' is literal, not a regex
    assert not type_matches("m.room.message", ["m.room.mess?ge"])
    assert type_matches("m.room.mess?ge", ["m.room.mess?ge"])
    assert not type_matches("m.room.message", [])
    assert type_matches("a\nb", ["a*b"])
    assert type_matches("m.room.message", ["m.room.message", "x.*"])
    assert not type_matches("a", ["a*a"]) and type_matches("aa", ["a*a"])
    assert type_matches("abcabc", ["a*c*c"]) and not type_matches("abcab", ["a*c*c"])
    assert type_matches("", ["*"]) and type_matches("x", ["**"])


def test_type_wildcards_do_not_backtrack_exponentially() -> None:
    import time
    start = time.monotonic()
    pattern = "*a" * 200 + "*b"
    assert not type_matches("a" * 250, [pattern])
    assert type_matches("a" * 250 + "b", [pattern])
    assert time.monotonic() - start < 1.0


def test_types_and_not_types() -> None:
    f = EventFilter.from_json({"types": ["m.room.*", "org.example"]})
    assert f.matches(ev("m.room.message")) and f.matches(ev("org.example"))
    assert not f.matches(ev("m.reaction")) and not f.matches(ev("org.example.other"))
    # not_types beats types, wildcards included
    f = EventFilter.from_json({"types": ["m.*"], "not_types": ["m.room.member", "m.call.*"]})
    assert f.matches(ev("m.room.message"))
    assert not f.matches(ev("m.room.member"))
    assert not f.matches(ev("m.call.invite"))
    assert not EventFilter.from_json({"types": ["m.room.message"],
                                      "not_types": ["*"]}).matches(ev())
    # absent types: everything; empty types: nothing
    assert EventFilter.from_json({}).matches(ev("anything"))
    assert not EventFilter.from_json({"types": []}).matches(ev())
    assert EventFilter.from_json({"not_types": []}).matches(ev())


def test_senders_and_not_senders() -> None:
    f = EventFilter.from_json({"senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"]})
    assert f.matches(ev(sender="@a:x"))
    assert not f.matches(ev(sender="@b:x"))  # not_senders beats senders
    assert not f.matches(ev(sender="@c:x"))
    assert not EventFilter.from_json({"senders": []}).matches(ev())
    f = EventFilter.from_json({"not_senders": ["@spam:x"]})
    assert f.matches(ev(sender="@a:x")) and not f.matches(ev(sender="@spam:x"))
    # events without a sender (account data) are kept unless senders are listed
    assert f.matches({"type": "m.tag", "content": {}})
    assert not EventFilter.from_json({"senders": ["@a:x"]}).matches({"type": "m.tag", "content": {}})


def test_presence_filter() -> None:
    f = SyncFilter.from_json({"presence": {"not_senders": ["@a:x"]}}).presence
    assert not f.matches({"type": "m.presence", "sender": "@a:x", "content": {}})
    assert f.matches({"type": "m.presence", "sender": "@b:x", "content": {}})
    # the old shape, with the user in content.user_id
    assert not f.matches({"type": "m.presence", "content": {"user_id": "@a:x"}})
    f = SyncFilter.from_json({"presence": {"types": []}}).presence
    assert not f.allows_type("m.presence")
    assert SyncFilter.from_json({"presence": {"senders": ["@a:x"]}}).presence.allows_sender("@a:x")


def test_account_data_filters() -> None:
    flt = SyncFilter.from_json({"account_data": {"not_types": ["m.push_rules"]},
                                "room": {"account_data": {"types": ["m.tag"],
                                                          "not_rooms": ["!no:x"]}}})
    assert not flt.account_data.matches({"type": "m.push_rules", "content": {}})
    assert flt.account_data.allows_type("m.direct")
    room_ad = flt.room_account_data
    tag = {"type": "m.tag", "content": {"tags": {}}}
    assert room_ad.matches(tag, room_id="!yes:x")
    assert not room_ad.matches(tag, room_id="!no:x")
    assert not room_ad.matches({"type": "m.fully_read", "content": {}}, room_id="!yes:x")
    assert room_ad.filter([tag, {"type": "other", "content": {}}], room_id="!yes:x") == [tag]


def test_room_event_filter_rooms() -> None:
    f = RoomEventFilter.from_json({"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"]})
    assert f.matches(ev(room_id="!a:x"))
    assert not f.matches(ev(room_id="!b:x"))
    assert not f.matches(ev(room_id="!c:x"))
    # an explicit room id stands in for events that carry none (ephemeral, room account data)
    assert f.matches({"type": "m.typing", "content": {}}, room_id="!a:x")
    assert not f.matches({"type": "m.typing", "content": {}})
    assert not RoomEventFilter.from_json({"rooms": []}).matches(ev())


def test_contains_url() -> None:
    with_url, without = ev(url="mxc://x/y", msgtype="m.image"), ev(body="hi")
    only = RoomEventFilter.from_json({"contains_url": True})
    assert only.matches(with_url) and not only.matches(without)
    never = RoomEventFilter.from_json({"contains_url": False})
    assert not never.matches(with_url) and never.matches(without)
    either = RoomEventFilter.from_json({})
    assert either.contains_url is None and either.matches(with_url) and either.matches(without)


def test_matches_event_objects() -> None:
    rv = get_room_version("10")
    pdu = {"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "event_id": "$1:x",
           "content": {"body": "hi"}, "depth": 1, "origin_server_ts": 1, "prev_events": [],
           "auth_events": [], "hashes": {}, "signatures": {}}
    event = Event("$1", rv, pdu)
    f = RoomEventFilter.from_json({"types": ["m.room.*"], "senders": ["@a:x"], "rooms": ["!r:x"],
                                   "contains_url": False})
    assert f.matches(event)
    assert not RoomEventFilter.from_json({"not_senders": ["@a:x"]}).matches(event)
    assert not RoomEventFilter.from_json({"not_rooms": ["!r:x"]}).matches(event)
    assert not RoomEventFilter.from_json({"contains_url": True}).matches(event)


def test_room_allowed_and_include_leave() -> None:
    flt = SyncFilter.from_json({"room": {"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"],
                                         "include_leave": True}})
    assert flt.room_allowed("!a:x")
    assert not flt.room_allowed("!b:x")  # not_rooms beats rooms
    assert not flt.room_allowed("!c:x")
    assert flt.include_leave
    assert DEFAULT_FILTER.room_allowed("!anything:x") and not DEFAULT_FILTER.include_leave
    assert not SyncFilter.from_json({"room": {"rooms": []}}).room_allowed("!a:x")


def test_sections_are_separate() -> None:
    flt = SyncFilter.from_json({"room": {"timeline": {"types": ["m.room.message"]},
                                         "state": {"types": ["m.room.name"]},
                                         "ephemeral": {"types": ["m.receipt"]}}})
    assert flt.timeline.matches(ev("m.room.message"))
    assert not flt.timeline.matches(ev("m.room.name"))
    assert flt.state.matches(ev("m.room.name")) and not flt.state.matches(ev("m.room.message"))
    assert flt.ephemeral.matches({"type": "m.receipt", "content": {}}, room_id="!r:x")
    assert not flt.ephemeral.matches({"type": "m.typing", "content": {}}, room_id="!r:x")
    assert flt.room_account_data.matches({"type": "m.tag", "content": {}}, room_id="!r:x")
    assert flt.timeline.filter([ev("m.room.message"), ev("m.room.name")]) == [ev("m.room.message")]


# --- limits and flags ----------------------------------------------------------------------------

def test_limits() -> None:
    assert DEFAULT_LIMIT == 10
    assert DEFAULT_FILTER.timeline.limit == 10
    assert SyncFilter.from_json({"room": {"timeline": {}}}).timeline.limit == 10
    assert SyncFilter.from_json({"room": {"timeline": {"limit": 3}}}).timeline.limit == 3
    assert SyncFilter.from_json({"room": {"timeline": {"limit": 0}}}).timeline.limit == 0
    huge = SyncFilter.from_json({"room": {"timeline": {"limit": 10 ** 30}}})
    assert huge.timeline.limit == MAX_LIMIT == 100
    assert SyncFilter.from_json({"presence": {"limit": 7}}).presence.limit == 7
    assert SyncFilter.from_json({"room": {"state": {"limit": 4}}}).timeline.limit == 10


def test_lazy_loading_flags() -> None:
    assert not DEFAULT_FILTER.lazy_load_members and not DEFAULT_FILTER.include_redundant_members
    flt = SyncFilter.from_json({"room": {"state": {"lazy_load_members": True}}})
    assert flt.state.lazy_load_members and flt.lazy_load_members
    assert not flt.include_redundant_members
    flt = SyncFilter.from_json({"room": {"state": {"lazy_load_members": True,
                                                   "include_redundant_members": True}}})
    assert flt.include_redundant_members and flt.state.include_redundant_members
    # include_redundant_members does not apply without lazy_load_members
    flt = SyncFilter.from_json({"room": {"state": {"include_redundant_members": True}}})
    assert not flt.include_redundant_members
    flt = SyncFilter.from_json({"room": {"timeline": {"lazy_load_members": True}}})
    assert flt.timeline.lazy_load_members and not flt.lazy_load_members


def test_unread_thread_notifications_and_event_format() -> None:
    assert not DEFAULT_FILTER.unread_thread_notifications
    flt = SyncFilter.from_json({"room": {"timeline": {"unread_thread_notifications": True}},
                                "event_format": "federation"})
    assert flt.unread_thread_notifications and flt.timeline.unread_thread_notifications
    assert flt.event_format == "federation"
    assert DEFAULT_FILTER.event_format == "client"


def test_filters_are_immutable_and_hashable() -> None:
    flt = SyncFilter.from_json({"room": {"timeline": {"types": ["a"], "senders": ["@a:x"]}}})
    with pytest.raises(AttributeError):
        flt.include_leave = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        flt.timeline.limit = 5  # type: ignore[misc]
    assert hash(flt) == hash(SyncFilter.from_json(
        {"room": {"timeline": {"senders": ["@a:x"], "types": ["a"]}}}))


# --- event_fields --------------------------------------------------------------------------------

def test_split_field_path() -> None:
    assert split_field_path("content.body") == ("content", "body")
    assert split_field_path("type") == ("type",)
    assert split_field_path(r"content.m\.relates_to") == ("content", "m.relates_to")
    assert split_field_path(r"content.m\\foo") == ("content", "m\\foo")
    assert split_field_path(r"content.m\\.foo") == ("content", "m\\", "foo")
    assert split_field_path(r"content.\x") == ("content", "\\x")  # other escapes stay as they are
    assert split_field_path("content.a\\") == ("content", "a\\")


def test_apply_event_fields() -> None:
    event = {"type": "m.room.message", "sender": "@a:x", "event_id": "$e",
             "content": {"body": "hi", "msgtype": "m.text",
                         "m.relates_to": {"rel_type": "m.thread", "event_id": "$t"},
                         "m\\foo": 1},
             "unsigned": {"age": 5}}
    assert DEFAULT_FILTER.apply_event_fields(event) == event
    flt = SyncFilter.from_json({"event_fields": ["type", "content.body", "unsigned.missing",
                                                 "nope", "type.deeper"]})
    assert flt.apply_event_fields(event) == {"type": "m.room.message", "content": {"body": "hi"}}
    flt = SyncFilter.from_json({"event_fields": [r"content.m\.relates_to.rel_type",
                                                 r"content.m\\foo", "event_id"]})
    assert flt.apply_event_fields(event) == {
        "event_id": "$e", "content": {"m.relates_to": {"rel_type": "m.thread"}, "m\\foo": 1}}
    # overlapping paths: the whole object wins, in either order
    for fields in (["content", "content.body"], ["content.body", "content"]):
        out = SyncFilter.from_json({"event_fields": fields}).apply_event_fields(event)
        assert out == {"content": event["content"]}
    # an empty list keeps nothing
    assert SyncFilter.from_json({"event_fields": []}).apply_event_fields(event) == {}
    # the result is a copy: changing it leaves the event alone
    out = SyncFilter.from_json({"event_fields": ["content"]}).apply_event_fields(event)
    out["content"]["m.relates_to"]["rel_type"] = "changed"
    assert event["content"]["m.relates_to"]["rel_type"] == "m.thread"
    assert select_fields(event, [("sender",)]) == {"sender": "@a:x"}


# --- inline JSON and stored filters --------------------------------------------------------------

def test_inline_filters() -> None:
    assert is_inline_filter('{"room":{}}') and not is_inline_filter("12")
    flt = SyncFilter.from_inline('{"room": {"timeline": {"limit": 2, "types": ["m.*"]}}}')
    assert flt.timeline.limit == 2 and flt.timeline.types == ("m.*",)
    with pytest.raises(MatrixError) as e:
        SyncFilter.from_inline('{"room": ')
    assert (e.value.status, e.value.errcode) == (400, "M_NOT_JSON")
    with pytest.raises(MatrixError) as e:
        SyncFilter.from_inline('{"room": {"timeline": {"limit": "x"}}}')
    assert (e.value.status, e.value.errcode) == (400, "M_BAD_JSON")


def test_canonical_json_is_key_order_independent() -> None:
    a = canonical_filter_json({"room": {"timeline": {"limit": 1, "types": ["x"]}}, "b": "\u0000é"})
    b = canonical_filter_json({"b": "\u0000é", "room": {"timeline": {"types": ["x"], "limit": 1}}})
    assert a == b and a.isascii() and " " not in a


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], str] = {}
        self.reads = 0

    async def add_filter(self, user_id: str, filter_json: str) -> int:
        for (uid, fid), text in self.rows.items():
            if uid == user_id and text == filter_json:
                return fid
        fid = sum(1 for uid, _ in self.rows if uid == user_id)
        self.rows[(user_id, fid)] = filter_json
        return fid

    async def get_filter(self, user_id: str, filter_id: int) -> str | None:
        self.reads += 1
        return self.rows.get((user_id, filter_id))


@pytest_twisted.ensureDeferred
async def test_filter_service() -> None:
    store = FakeStore()
    svc = FilterService(store)  # type: ignore[arg-type]
    fid = await svc.create("@a:x", {"room": {"timeline": {"limit": 4}}})
    assert fid == "0" and not fid.startswith("{")
    assert await svc.create("@a:x", {"room": {"timeline": {"limit": 4}}}) == fid
    assert await svc.create("@a:x", {}) == "1"
    assert await svc.get_json("@a:x", fid) == {"room": {"timeline": {"limit": 4}}}
    assert await svc.get_json("@b:x", fid) is None
    assert await svc.get_json("@a:x", "x1") is None
    assert await svc.get_json("@a:x", "9" * 40) is None
    with pytest.raises(MatrixError) as e:
        await svc.create("@a:x", {"room": []})
    assert e.value.errcode == "M_BAD_JSON"

    assert await svc.resolve("@a:x", None) is DEFAULT_FILTER
    assert await svc.resolve("@a:x", "") is DEFAULT_FILTER
    assert (await svc.resolve("@a:x", fid)).timeline.limit == 4
    reads = store.reads
    assert (await svc.resolve("@a:x", fid)).timeline.limit == 4
    assert store.reads == reads  # parsed filters are cached
    assert (await svc.resolve("@a:x", '{"room":{"timeline":{"limit":2}}}')).timeline.limit == 2
    for unknown in ("7", "abc"):
        with pytest.raises(MatrixError) as e:
            await svc.resolve("@a:x", unknown)
        assert (e.value.status, e.value.errcode) == (404, "M_NOT_FOUND")
    with pytest.raises(MatrixError) as e:
        await svc.resolve("@b:x", fid)
    assert e.value.status == 404
