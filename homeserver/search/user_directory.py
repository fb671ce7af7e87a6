"""The user directory (spec "User directory"): whom a user may find, and how well each matches.

Who: users joined to a room the searcher is joined to, or to a room anyone may look into —
published in the room directory, public join rule, or world_readable history — as the spec's
minimum asks. Deactivated users never appear. Local users show their global profile (read at
query time, so a profile change is visible at once); remote users the profile of their latest
join. ``DirectoryIndexer`` keeps the room flags and remote profiles current from the events.

How: case-insensitively (Unicode case folding) on the display name and the user id. Every
word of the search term must be the start of a word of the display name or of the user id's
localpart ("ali smi" finds "Alice Smith"); a term that is the start of the whole user id
("@alice:ex") matches too. Results are ranked: exact matches, then matches at the start,
then word matches; within a rank users with a display name and avatar come first.

Matching runs in Python over the users the searcher may find, so it is identical on both
engines and for any script; its cost grows with the number of users the searcher may find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from homeserver.rooms.events import Event
from storage.database import Transaction
from storage.user_directory import DirectoryEntry, UserDirectoryStore

DEFAULT_LIMIT = 10
MAX_LIMIT = 100

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class DirectoryResults:
    results: list[DirectoryEntry]
    limited: bool


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class DirectoryIndexer:
    """Persist hook: room flags from join rules and history visibility, profiles from joins."""

    def __init__(self, store: UserDirectoryStore) -> None:
        self.store = store

    def on_persist(self, txn: Transaction, event: Event, stream_ordering: int) -> None:
        if event.type == "m.room.member" and event.state_key:
            if event.membership == "join":
                self.store.set_room_profile_txn(txn, event.state_key,
                                                _str(event.content.get("displayname")),
                                                _str(event.content.get("avatar_url")),
                                                stream_ordering)
            return
        if event.state_key != "" or event.type not in ("m.room.join_rules",
                                                        "m.room.history_visibility"):
            return
        # Only a change that became the room's current state counts (not, say, an old
        # state event fetched to fill a gap).
        if not self.store.is_current_state_txn(txn, event.room_id, event.type, "", event.event_id):
            return
        if event.type == "m.room.join_rules":
            self.store.set_public_join_txn(txn, event.room_id,
                                           event.content.get("join_rule") == "public")
        else:
            self.store.set_world_readable_txn(
                txn, event.room_id, event.content.get("history_visibility") == "world_readable")


def _localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0]


def match_rank(entry: DirectoryEntry, term: str) -> int | None:
    """0 exact, 1 at the start, 2 every word found; None: no match. ``term`` is case-folded."""
    user_id = entry.user_id.casefold()
    localpart = _localpart(user_id)
    name = (entry.display_name or "").casefold()
    if term in (user_id, localpart, name):
        return 0
    if user_id.startswith(term) or localpart.startswith(term) or (name and name.startswith(term)):
        return 1
    wanted = _WORD.findall(term)
    if not wanted:
        return None
    have = _WORD.findall(name) + _WORD.findall(localpart)
    if all(any(h.startswith(w) for h in have) for w in wanted):
        return 2
    return None


class UserDirectory:
    def __init__(self, store: UserDirectoryStore) -> None:
        self.store = store

    async def search(self, user_id: str, search_term: str, limit: int) -> DirectoryResults:
        term = search_term.strip().casefold()
        if not term:
            return DirectoryResults([], False)
        ranked = []
        for entry in await self.store.visible_users(user_id):
            rank = match_rank(entry, term)
            if rank is not None:
                ranked.append(((rank, entry.display_name is None, entry.avatar_url is None,
                                (entry.display_name or _localpart(entry.user_id)).casefold(),
                                entry.user_id), entry))
        ranked.sort(key=lambda pair: pair[0])
        return DirectoryResults([entry for _, entry in ranked[:limit]], len(ranked) > limit)
