"""The ``room_events`` search category (spec "Server Side Search").

Candidates come from the index (storage/search.py) already limited to rooms the user is or
was in and, for rooms they left, to events up to their leaving; every candidate then passes
through ``Visibility.filter_for_user`` — the one visibility function — before it can be a
result, a context event, or part of ``count``. Redacted events are out of the index.

Choices the spec leaves open:
- ``count`` is the number of visible results before this page plus those found while
  building it (a lower bound when the scan stopped early), never a count of events the
  user may not see.
- A group's ``next_batch`` is given when more visible results of that group were seen past
  the page, or the scan did not reach the end of the matches.
- Groups are ``order``-ed by their first result in the page, starting at 1.
- Pages continue after the last result handed out: its stream position in ``recent`` order,
  its (rank, stream position) in ``rank`` order. SQLite's bm25 ranks shift a little as new
  matching events arrive, so there a rank-ordered page boundary may repeat or skip a result
  if such events arrive between two pages.
- ``include_state`` gives, per room, the state the user may read: current while joined, as
  it was at their leaving otherwise.
- ``profile_info`` holds the senders of the result and its context events as the room state
  at the result event describes them (redacted member events contribute nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from homeserver.rooms.pagination import position_token
from homeserver.rooms.visibility import Visibility
from homeserver.search.indexer import ALL_KEYS, KEY_TYPES
from homeserver.search.query import highlights, parse_query
from homeserver.search.tokens import BatchToken, encode_token
from homeserver.sync.filters import RoomEventFilter
from storage.events import EventRow, EventStore
from storage.search import ORDER_RANK, SearchHit, SearchPosition, SearchScope, SearchStore

DEFAULT_CONTEXT_LIMIT = 5
MAX_CONTEXT_LIMIT = 100
# Candidates fetched per index query, and index queries per request at most: a page of
# results the user may not see (rare, as rooms they left are cut at their leaving) ends
# early with a next_batch rather than scanning without bound.
SCAN_SIZE = 100
MAX_SCANS = 10


@dataclass(frozen=True)
class ContextOptions:
    before_limit: int = DEFAULT_CONTEXT_LIMIT
    after_limit: int = DEFAULT_CONTEXT_LIMIT
    include_profile: bool = False


@dataclass(frozen=True)
class Criteria:
    search_term: str
    keys: tuple[str, ...] = ALL_KEYS
    filter: RoomEventFilter = RoomEventFilter()
    order: str = ORDER_RANK
    context: ContextOptions | None = None
    include_state: bool = False
    group_by: tuple[str, ...] = ()


@dataclass
class EventContext:
    before: list[EventRow]
    after: list[EventRow]
    start: str
    end: str
    profiles: dict[str, dict[str, str]] | None


@dataclass
class Result:
    row: EventRow
    rank: float
    context: EventContext | None = None


@dataclass
class Group:
    results: list[str]
    order: int
    next_batch: str | None = None


@dataclass
class SearchResults:
    results: list[Result]
    count: int
    highlights: list[str]
    next_batch: str | None = None
    groups: dict[str, dict[str, Group]] = field(default_factory=dict)
    state: dict[str, list[EventRow]] | None = None


def _intersect(allowed: frozenset[str] | None, only: str) -> tuple[str, ...]:
    return (only,) if allowed is None or only in allowed else ()


class RoomEventSearch:
    def __init__(self, index: SearchStore, events: EventStore, visibility: Visibility) -> None:
        self.index = index
        self.events = events
        self.visibility = visibility

    def _scope(self, user_id: str, criteria: Criteria, group: tuple[str, str] | None) -> SearchScope:
        flt = criteria.filter
        keys = tuple(k for k in criteria.keys if flt.allows_type(KEY_TYPES[k]))
        rooms = tuple(sorted(flt.rooms)) if flt.rooms is not None else None
        senders = tuple(sorted(flt.senders)) if flt.senders is not None else None
        if group is not None and group[0] == "room_id":
            rooms = _intersect(flt.rooms, group[1])
        elif group is not None and group[0] == "sender":
            senders = _intersect(flt.senders, group[1])
        return SearchScope(user_id=user_id, keys=keys, rooms=rooms,
                           not_rooms=tuple(sorted(flt.not_rooms)), senders=senders,
                           not_senders=tuple(sorted(flt.not_senders)),
                           contains_url=flt.contains_url)

    async def search(self, user_id: str, criteria: Criteria, token: BatchToken | None) -> SearchResults:
        query = parse_query(criteria.search_term)
        group = token.group if token else None
        scope = self._scope(user_id, criteria, group)
        limit = max(1, criteria.filter.limit)
        order = criteria.order
        after: SearchPosition | None = token.position if token else None
        delivered = token.delivered if token else 0

        page: list[tuple[SearchHit, EventRow]] = []
        extra: list[SearchHit] = []  # visible matches seen past the page
        exhausted = False
        for _ in range(MAX_SCANS):
            hits = await self.index.search(query, scope, order, after, SCAN_SIZE)
            rows = await self.events.get_rows(h.event_id for h in hits)
            visible = {r.event.event_id for r in await self.visibility.filter_for_user(
                user_id, [rows[h.event_id] for h in hits if h.event_id in rows])}
            for hit in hits:
                if hit.event_id not in visible:
                    continue
                if len(page) < limit:
                    page.append((hit, rows[hit.event_id]))
                else:
                    extra.append(hit)
            if len(hits) < SCAN_SIZE:
                exhausted = True
                break
            if len(page) >= limit:
                break
            # Past events the user may not see: the next scan starts after them.
            after = hits[-1].position(order)

        more = bool(extra) or not exhausted
        next_after = page[-1][0].position(order) if len(page) >= limit else after
        out = SearchResults(results=[Result(row, hit.rank) for hit, row in page],
                            count=delivered + len(page) + len(extra),
                            highlights=highlights(query))
        if more and next_after is not None:
            out.next_batch = encode_token(BatchToken(order, next_after, delivered + len(page), group))
        out.groups = self._groups(criteria, page, extra, exhausted, group, delivered)
        if criteria.context is not None:
            for result in out.results:
                result.context = await self._context(user_id, result.row, criteria.context)
        if criteria.include_state:
            out.state = {}
            for room_id in dict.fromkeys(hit.room_id for hit, _ in page):
                out.state[room_id] = await self._readable_state(user_id, room_id)
        return out

    def _groups(self, criteria: Criteria, page: list[tuple[SearchHit, EventRow]],
                extra: list[SearchHit], exhausted: bool, scope_group: tuple[str, str] | None,
                delivered: int) -> dict[str, dict[str, Group]]:
        out: dict[str, dict[str, Group]] = {}
        for key in dict.fromkeys(criteria.group_by):
            groups: dict[str, Group] = {}
            last: dict[str, SearchHit] = {}
            for hit, _ in page:
                value = hit.room_id if key == "room_id" else hit.sender
                if value not in groups:
                    groups[value] = Group(results=[], order=len(groups) + 1)
                groups[value].results.append(hit.event_id)
                last[value] = hit
            more_in = {h.room_id if key == "room_id" else h.sender for h in extra}
            for value, grp in groups.items():
                if value in more_in or not exhausted:
                    before = delivered if scope_group == (key, value) else 0
                    grp.next_batch = encode_token(BatchToken(
                        criteria.order, last[value].position(criteria.order),
                        before + len(grp.results), (key, value)))
            out[key] = groups
        return out

    async def _context(self, user_id: str, row: EventRow, opts: ContextOptions) -> EventContext:
        room_id = row.event.room_id
        pos = (row.event.depth, row.stream_ordering)
        before = await self.events.paginate(room_id, pos, True, opts.before_limit) \
            if opts.before_limit > 0 else []
        after = await self.events.paginate(room_id, pos, False, opts.after_limit) \
            if opts.after_limit > 0 else []
        before = await self.visibility.filter_for_user(user_id, before)
        after = await self.visibility.filter_for_user(user_id, after)
        first = before[-1] if before else row
        last = after[-1] if after else row
        profiles = None
        if opts.include_profile:
            senders = [r.event.sender for r in (row, *before, *after)]
            profiles = await self._profiles_at(row, senders)
        return EventContext(before, after,
                            start=position_token(first.event.depth, first.stream_ordering),
                            end=position_token(last.event.depth, last.stream_ordering),
                            profiles=profiles)

    async def _profiles_at(self, row: EventRow, senders: list[str]) -> dict[str, dict[str, str]]:
        """Display names and avatars of ``senders`` in the room state before ``row``."""
        if row.state_group_before is None:
            return {}
        state = await self.events.get_state_group(row.state_group_before)
        member_ids = {s: state[("m.room.member", s)] for s in dict.fromkeys(senders)
                      if ("m.room.member", s) in state}
        members = await self.events.get_events(member_ids.values())
        redacted = await self.events.get_redactions(member_ids.values())
        out: dict[str, dict[str, str]] = {}
        for sender, event_id in member_ids.items():
            ev = members.get(event_id)
            if ev is None or event_id in redacted:
                continue
            profile: dict[str, str] = {}
            name, avatar = ev.content.get("displayname"), ev.content.get("avatar_url")
            if isinstance(name, str):
                profile["displayname"] = name
            if isinstance(avatar, str) and avatar.startswith("mxc://"):
                profile["avatar_url"] = avatar
            out[sender] = profile
        return out

    async def _readable_state(self, user_id: str, room_id: str) -> list[EventRow]:
        membership = await self.events.get_membership(room_id, user_id)
        state: dict | None = None
        if membership and membership[0] == "join":
            state = await self.events.get_current_state_ids(room_id)
        elif membership and membership[0] in ("leave", "ban"):
            member_row = await self.events.get_event_row(membership[1])
            if member_row is not None and member_row.state_group_after is not None:
                state = await self.events.get_state_group(member_row.state_group_after)
        if not state:
            return []
        rows = await self.events.get_rows(state.values())
        return [rows[i] for i in state.values() if i in rows]
