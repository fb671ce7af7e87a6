"""POST /search: server-side search of room events (spec "Server Side Search")."""

from __future__ import annotations

from typing import Any

from homeserver.http.errors import MatrixError, bad_json, invalid_param
from homeserver.http.jsonbody import JsonObject
from homeserver.http.router import Router
from homeserver.http.site import HttpRequest
from homeserver.rooms.serialize import ClientSerializer
from homeserver.search.indexer import ALL_KEYS
from homeserver.search.room_events import (MAX_CONTEXT_LIMIT, ContextOptions, Criteria,
                                           RoomEventSearch, SearchResults)
from homeserver.search.tokens import GROUP_KEYS, decode_token
from homeserver.sync.filters import RoomEventFilter, check_filter_json
from storage.events import EventRow
from storage.search import ORDER_RANK, ORDER_RECENT

MAX_SEARCH_TERM = 1000
WHERE = "search_categories.room_events."


def _room_event_filter(value: Any) -> RoomEventFilter:
    if value is None:
        return RoomEventFilter()
    if not isinstance(value, dict):
        raise bad_json(f"'{WHERE}filter' must be an object")
    try:
        # The sync filter's checks, on the RoomEventFilter in the position they know.
        check_filter_json({"room": {"timeline": value}})
    except MatrixError as e:
        raise bad_json(f"'{WHERE}filter' is not a valid RoomEventFilter: "
                       + e.message.replace("room.timeline.", "")) from None
    return RoomEventFilter.from_json(value)


def _context_options(value: Any) -> ContextOptions | None:
    if value is None:
        return None
    obj = JsonObject(value)
    opts = {}
    for name in ("before_limit", "after_limit"):
        n = obj.int(name)
        if n is not None:
            if n < 0:
                raise invalid_param(f"'{WHERE}event_context.{name}' must not be negative")
            opts[name] = min(n, MAX_CONTEXT_LIMIT)
    include_profile = obj.bool("include_profile", default=False)
    return ContextOptions(**opts, include_profile=include_profile)


def _group_by(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    group_by = JsonObject(value).list("group_by", default=[])
    keys = []
    for item in group_by:
        key = item.get("key") if isinstance(item, dict) else None
        if key not in GROUP_KEYS:
            raise invalid_param(f"'{WHERE}groupings.group_by' keys must be one of {', '.join(GROUP_KEYS)}")
        keys.append(key)
    return tuple(dict.fromkeys(keys))


def parse_criteria(room_events: dict[str, Any]) -> Criteria:
    obj = JsonObject(room_events)
    search_term = obj.str("search_term", required=True, max_length=MAX_SEARCH_TERM)
    keys = obj.str_list("keys")
    if keys is not None:
        unknown = [k for k in keys if k not in ALL_KEYS]
        if unknown:
            raise invalid_param(f"Unknown search key {unknown[0]!r}")
        keys = tuple(dict.fromkeys(keys))
    order = obj.str("order_by", default=ORDER_RANK)
    if order not in (ORDER_RANK, ORDER_RECENT):
        raise invalid_param("'order_by' must be 'rank' or 'recent'")
    return Criteria(search_term=search_term,
                    keys=ALL_KEYS if keys is None else keys,
                    filter=_room_event_filter(obj.data.get("filter")),
                    order=order,
                    context=_context_options(obj.dict("event_context")),
                    include_state=obj.bool("include_state", default=False),
                    group_by=_group_by(obj.dict("groupings")))


class SearchApi:
    def __init__(self, search: RoomEventSearch, serializer: ClientSerializer) -> None:
        self.search_service = search
        self.serializer = serializer

    def register(self, router: Router) -> None:
        router.client("POST", "/search", self.search)

    async def search(self, req: HttpRequest) -> tuple[int, Any]:
        assert req.requester is not None
        categories = JsonObject(req.json().dict("search_categories", required=True))
        room_events = categories.dict("room_events")
        if room_events is None:
            return 200, {"search_categories": {}}
        criteria = parse_criteria(room_events)
        token_text = req.query("next_batch")
        token = decode_token(token_text) if token_text is not None else None
        if token is not None and token.order != criteria.order:
            raise invalid_param("next_batch belongs to another order_by")
        user_id = req.requester.user_id
        found = await self.search_service.search(user_id, criteria, token)
        return 200, {"search_categories": {"room_events": await self._room_events_json(
            user_id, criteria, found)}}

    async def _room_events_json(self, user_id: str, criteria: Criteria,
                                found: SearchResults) -> dict[str, Any]:
        # One serializer pass for every timeline event of the response.
        rows: list[EventRow] = [r.row for r in found.results]
        for r in found.results:
            if r.context is not None:
                rows += r.context.before + r.context.after
        serialized = iter(await self.serializer.serialize(rows, user_id=user_id))
        results: list[dict[str, Any]] = [{"rank": r.rank, "result": next(serialized)}
                                         for r in found.results]
        for r, item in zip(found.results, results):
            if r.context is None:
                continue
            ctx: dict[str, Any] = {
                "start": r.context.start,
                "end": r.context.end,
                "events_before": [next(serialized) for _ in r.context.before],
                "events_after": [next(serialized) for _ in r.context.after],
            }
            if r.context.profiles is not None:
                ctx["profile_info"] = r.context.profiles
            item["context"] = ctx
        out: dict[str, Any] = {"count": found.count, "highlights": found.highlights,
                               "results": results}
        if found.next_batch is not None:
            out["next_batch"] = found.next_batch
        if criteria.group_by:
            out["groups"] = {
                key: {value: {"results": g.results, "order": g.order,
                              **({"next_batch": g.next_batch} if g.next_batch else {})}
                      for value, g in groups.items()}
                for key, groups in found.groups.items()}
        if found.state is not None:
            out["state"] = {room_id: await self.serializer.serialize(state_rows)
                            for room_id, state_rows in found.state.items()}
        return out
