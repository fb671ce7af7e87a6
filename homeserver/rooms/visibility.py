"""Who can see what: the one function that decides whether a user may see an event.

Spec: Client-Server API "History visibility" and Server-Server API "Authorization rules /
visibility". For each event the room's ``m.room.history_visibility`` and the reader's membership
are taken from the state *before* the event (for the reader's own membership event, from the
event itself, so one sees one's own join and leave):

- world_readable: anyone may see it;
- the reader was joined at the event: visible;
- shared: visible if the reader joined at some point after the event (so a member who left sees
  nothing sent after the leave, unless they join again);
- invited: visible if the reader was invited (or joined) at the event;
- joined: only the joined case above.

The reader is a local user id, or, for federation, any of a remote server's users
(``filter_events_for_server`` in the federation issue builds on ``visible_to``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence

from storage.events import EventRow, EventStore

VISIBILITY_VALUES = ("world_readable", "shared", "invited", "joined")


_MEMO_SIZE = 20_000


class Visibility:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        # (state group, reader) -> (history visibility, reader's membership) in that state:
        # state groups never change, so neither does this. Every /sync answer of every member
        # of a busy room asks it for the same group.
        self._memo: OrderedDict[tuple[int, str], tuple[str, str | None]] = OrderedDict()

    async def _at_groups(self, groups: set[int], user_id: str
                         ) -> dict[int, tuple[str, str | None]]:
        """group -> (history visibility, the reader's membership) in the group's state."""
        out: dict[int, tuple[str, str | None]] = {}
        wanted: dict[int, tuple[str | None, str | None]] = {}
        for g in groups:
            hit = self._memo.get((g, user_id))
            if hit is not None:
                self._memo.move_to_end((g, user_id))
                out[g] = hit
            else:
                state = await self.store.get_state_group(g, copy=False)
                wanted[g] = (state.get(("m.room.history_visibility", "")),
                             state.get(("m.room.member", user_id)))
        if not wanted:
            return out
        events = await self.store.get_events({i for pair in wanted.values() for i in pair if i})
        for g, (hv_id, member_id) in wanted.items():
            hv = events.get(hv_id) if hv_id else None
            mem = events.get(member_id) if member_id else None
            out[g] = (_visibility_value(hv.content.get("history_visibility")) if hv is not None
                      else "shared",
                      mem.membership if mem is not None else None)
            if (hv_id is None or hv is not None) and (member_id is None or mem is not None):
                # (not remembered while an event it names is missing: it may arrive)
                self._memo[(g, user_id)] = out[g]
        while len(self._memo) > _MEMO_SIZE:
            self._memo.popitem(last=False)
        return out

    async def _state_values(self, rows: Sequence[EventRow], user_id: str
                            ) -> dict[str, tuple[list[str], list[str | None]]]:
        """event id -> (history visibilities, reader's memberships) that may each grant access.

        Normally one of each, taken from the state before the event. A history visibility
        event also counts with its own new value, and the reader's own membership event with
        the membership it sets: the spec lets either side of such a change grant visibility
        (so one sees one's own leave, and the change to world_readable itself)."""
        at = await self._at_groups(
            {r.state_group_before for r in rows if r.state_group_before is not None}, user_id)
        out: dict[str, tuple[list[str], list[str | None]]] = {}
        for r in rows:
            vis, membership = at.get(r.state_group_before, ("shared", None)) \
                if r.state_group_before is not None else ("shared", None)
            ev = r.event
            visibilities, memberships = [vis], [membership]
            if ev.type == "m.room.history_visibility" and ev.state_key == "":
                visibilities.append(_visibility_value(ev.content.get("history_visibility")))
            if ev.type == "m.room.member" and ev.state_key == user_id:
                memberships.append(ev.membership)
            out[ev.event_id] = (visibilities, memberships)
        return out

    async def filter_for_user(self, user_id: str, rows: Iterable[EventRow]) -> list[EventRow]:
        """The events of ``rows`` (one room or many) that ``user_id`` may see, in order.

        A room the user forgot counts as one they were never in: only world_readable history.
        """
        rows = [r for r in rows if not r.rejected and not r.soft_failed]
        if not rows:
            return []
        values = await self._state_values(rows, user_id)
        room_ids = {r.event.room_id for r in rows}
        joins = await self.store.get_join_positions(user_id, room_ids)
        forgotten = await self.store.get_forgotten(user_id, room_ids)
        out = []
        for r in rows:
            visibilities, memberships = values[r.event.event_id]
            if r.event.room_id in forgotten:
                memberships, positions = [None], []
            else:
                positions = joins.get(r.event.room_id, [])
            if any(self.visible(v, m, r.stream_ordering, positions)
                   for v in visibilities for m in memberships):
                out.append(r)
        return out

    @staticmethod
    def visible(history_visibility: str, membership: str | None, stream: int,
                join_positions: list[int]) -> bool:
        if history_visibility == "world_readable":
            return True
        if membership == "join":
            return True
        if history_visibility == "shared":
            return any(pos > stream for pos in join_positions)
        if history_visibility == "invited":
            return membership == "invite"
        return False

    async def can_see(self, user_id: str, row: EventRow) -> bool:
        return bool(await self.filter_for_user(user_id, [row]))


def _visibility_value(value: object) -> str:
    return value if isinstance(value, str) and value in VISIBILITY_VALUES else "shared"
