"""Room state stored as chains of deltas (state groups), read back through a bounded cache.

A state group is either a snapshot (prev_group NULL) or the changes over its prev_group. Every
``SNAPSHOT_EVERY`` deltas a new snapshot starts, so reading one state touches a bounded number of
groups, and storage grows with the number of state changes rather than with rooms x events.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Mapping

from storage.database import Transaction
from storage.ids import IdGenerator

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

SNAPSHOT_EVERY = 50


class StateGroupCache:
    """An LRU of full state maps by group id; state groups never change once written."""

    def __init__(self, size: int = 2000) -> None:
        self._size = size
        self._maps: OrderedDict[int, StateMap] = OrderedDict()
        self._lock = threading.Lock()  # used from database threads and the reactor

    def get(self, group: int) -> StateMap | None:
        with self._lock:
            m = self._maps.get(group)
            if m is not None:
                self._maps.move_to_end(group)
            return m

    def put(self, group: int, state: StateMap) -> None:
        with self._lock:
            self._maps[group] = state
            self._maps.move_to_end(group)
            while len(self._maps) > self._size:
                self._maps.popitem(last=False)


class StateGroups:
    """Transaction-level functions; callers hold the transaction (events are persisted with it)."""

    def __init__(self, cache: StateGroupCache, ids: IdGenerator) -> None:
        self.cache = cache
        self.ids = ids

    def store(self, txn: Transaction, room_id: str, new_state: Mapping[StateKey, str],
              prev_group: int | None) -> int:
        """Write a group for ``new_state``; as a delta over ``prev_group`` when that is cheap."""
        group = self.ids.next()
        prev_state: StateMap | None = None
        depth = 0
        if prev_group is not None:
            row = txn.query_one("SELECT delta_depth FROM state_groups WHERE id = ?", (prev_group,))
            if row is not None and row[0] + 1 < SNAPSHOT_EVERY:
                prev_state = self.load(txn, prev_group)
                depth = row[0] + 1
        if prev_state is not None:
            changes: list[tuple[str, str, str | None]] = [
                (t, k, eid) for (t, k), eid in new_state.items() if prev_state.get((t, k)) != eid]
            changes += [(t, k, None) for (t, k) in prev_state if (t, k) not in new_state]
            txn.execute("INSERT INTO state_groups (id, room_id, prev_group, delta_depth)"
                        " VALUES (?, ?, ?, ?)", (group, room_id, prev_group, depth))
        else:
            changes = [(t, k, eid) for (t, k), eid in new_state.items()]
            txn.execute("INSERT INTO state_groups (id, room_id, prev_group, delta_depth)"
                        " VALUES (?, ?, NULL, 0)", (group, room_id))
        txn.executemany("INSERT INTO state_group_entries (state_group, type, state_key, event_id)"
                        " VALUES (?, ?, ?, ?)", [(group, t, k, e) for t, k, e in changes])
        state = dict(new_state)
        txn.call_after_commit(lambda: self.cache.put(group, state))
        return group

    def load(self, txn: Transaction, group: int) -> StateMap:
        """The full state map of a group, walking deltas back to the nearest snapshot."""
        cached = self.cache.get(group)
        if cached is not None:
            return dict(cached)
        chain: list[int] = []
        base: StateMap = {}
        g: int | None = group
        while g is not None:
            hit = self.cache.get(g)
            if hit is not None:
                base = dict(hit)
                break
            chain.append(g)
            row = txn.query_one("SELECT prev_group FROM state_groups WHERE id = ?", (g,))
            if row is None:
                raise KeyError(f"unknown state group {g}")
            g = row[0]
        state = base
        for cg in reversed(chain):
            for t, k, eid in txn.query("SELECT type, state_key, event_id FROM state_group_entries"
                                       " WHERE state_group = ?", (cg,)):
                if eid is None:
                    state.pop((t, k), None)
                else:
                    state[(t, k)] = eid
        self.cache.put(group, dict(state))
        return state
