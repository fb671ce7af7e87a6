"""State resolution: v1 (room version 1), v2 (versions 2-11) and v2.1 (version 12, MSC4297).

The entry point is ``resolve_state``: given the state maps of the branches being merged and a
batch event fetcher, it returns the resolved state map. Spec references are to the "State
resolution" sections of the room version pages (rooms/v1, the v2-state-res fragment, rooms/v12).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from crypto.room_versions import RoomVersion, StateResAlgorithm, get_room_version
from homeserver.rooms.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    get_power_level,
)
from homeserver.rooms.events import Event, StateKey

__all__ = [
    "StateMap",
    "EventFetcher",
    "AuthChainFetcher",
    "resolve_state",
    "lexicographical_topological_sort",
    "is_power_event",
]

logger = logging.getLogger(__name__)

StateMap = Mapping[StateKey, str]
# Fetches events by id in one batch; ids it does not know are left out of the result.
EventFetcher = Callable[[Iterable[str]], Awaitable[Mapping[str, Event]]]
# Returns the union of the auth chains of the given events (the given events themselves are
# included only if reachable from another one), e.g. from a storage-side chain index.
AuthChainFetcher = Callable[[Iterable[str]], Awaitable[Collection[str]]]
# Says whether an event was rejected (spec: rejected auth events are not used by the checks).
RejectedCheck = Callable[[str], bool]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")

N = TypeVar("N", bound=Hashable)


async def resolve_state(
    room_version: RoomVersion | str,
    state_sets: Sequence[StateMap],
    get_events: EventFetcher,
    get_auth_chain: AuthChainFetcher | None = None,
    *,
    is_rejected: RejectedCheck | None = None,
) -> dict[StateKey, str]:
    """Resolve the state maps of several branches into one, by the room version's algorithm."""
    rv = get_room_version(room_version)
    if not state_sets:
        return {}
    first = state_sets[0]
    if all(s == first for s in state_sets[1:]):
        return dict(first)
    events = _EventCache(get_events)
    rejected = is_rejected or (lambda _event_id: False)
    if rv.state_res is StateResAlgorithm.V1:
        return await _ResolverV1(rv, events, rejected).resolve(state_sets)
    return await _ResolverV2(rv, events, get_auth_chain, rejected).resolve(state_sets)


def is_power_event(event: Event) -> bool:
    """A "power event" (v2 "Definitions"): one that may take someone's abilities away."""
    if not event.is_state:
        return False
    if event.key in (POWER_LEVELS_KEY, JOIN_RULES_KEY):
        return True
    return (
        event.type == "m.room.member"
        and event.membership in ("leave", "ban")
        and event.sender != event.state_key
    )


def lexicographical_topological_sort(
    graph: Mapping[N, Iterable[N]], key: Callable[[N], Any]
) -> list[N]:
    """Kahn's algorithm over ``graph`` (node -> nodes it points at), pointed-at nodes first.

    Among the nodes whose edges are all satisfied, the one with the smallest ``key`` comes
    next; ``key`` should be unique per node for the order to be fully determined. Nodes that
    appear only as edge targets are included. Raises ValueError if the graph has a cycle.
    """
    pending: dict[N, int] = {}  # node -> number of its targets not yet emitted
    dependants: dict[N, list[N]] = {}
    for node, targets in graph.items():
        unique = set(targets)
        pending[node] = len(unique)
        for target in unique:
            dependants.setdefault(target, []).append(node)
            pending.setdefault(target, 0)
    order = {node: i for i, node in enumerate(pending)}
    heap = [(key(node), order[node]) for node, count in pending.items() if count == 0]
    nodes = list(pending)
    heapq.heapify(heap)
    result: list[N] = []
    while heap:
        _, index = heapq.heappop(heap)
        node = nodes[index]
        result.append(node)
        for dependant in dependants.get(node, ()):
            pending[dependant] -= 1
            if pending[dependant] == 0:
                heapq.heappush(heap, (key(dependant), order[dependant]))
    if len(result) != len(nodes):
        raise ValueError("the graph has a cycle")
    return result


# --- events -----------------------------------------------------------------------------------


class _EventCache:
    """Events fetched during one resolution, loaded in batches and never fetched twice."""

    def __init__(self, fetch: EventFetcher) -> None:
        self._fetch = fetch
        self._events: dict[str, Event] = {}
        self._missing: set[str] = set()

    async def load(self, event_ids: Iterable[str]) -> None:
        wanted = {
            e for e in event_ids if e not in self._events and e not in self._missing
        }
        if not wanted:
            return
        found = await self._fetch(wanted)
        for event_id in wanted:
            event = found.get(event_id)
            if event is None:
                self._missing.add(event_id)
                logger.warning("state resolution: event %s is unknown", event_id)
            else:
                self._events[event_id] = event

    def get(self, event_id: str) -> Event | None:
        return self._events.get(event_id)

    def __getitem__(self, event_id: str) -> Event:
        return self._events[event_id]

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    async def auth_chain(
        self, event_ids: Iterable[str], stop: Collection[str] = ()
    ) -> set[str]:
        """The union of the auth chains of ``event_ids``, walked one batch per generation.

        The walk neither enters nor returns events in ``stop``; callers pass a set closed under
        auth chains (everything below a member is a member), so nothing outside it is lost.
        """
        seen: set[str] = set()
        frontier = list(dict.fromkeys(event_ids))
        while frontier:
            await self.load(frontier)
            next_frontier: list[str] = []
            for event_id in frontier:
                event = self._events.get(event_id)
                if event is None:
                    continue
                for auth_id in event.auth_event_ids:
                    if auth_id not in seen and auth_id not in stop:
                        seen.add(auth_id)
                        next_frontier.append(auth_id)
            frontier = next_frontier
        return seen


def _split_v2(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Unconflicted state map and conflicted state (v2 "Definitions").

    A key is unconflicted only if every state map has it with the same event; a key missing
    from some map is conflicted.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    keys: set[StateKey] = set()
    for state in state_sets:
        keys.update(state)
    for key in keys:
        values = {state.get(key) for state in state_sets}
        if len(values) == 1 and None not in values:
            unconflicted[key] = values.pop()  # type: ignore[assignment]
        else:
            values.discard(None)
            conflicted[key] = values  # type: ignore[assignment]
    return unconflicted, conflicted


# --- v2 and v2.1 ------------------------------------------------------------------------------


class _ResolverV2:
    """One run of state resolution v2 (rooms v2-v11) or v2.1 (room v12, MSC4297)."""

    def __init__(
        self,
        room_version: RoomVersion,
        events: _EventCache,
        get_auth_chain: AuthChainFetcher | None,
        rejected: RejectedCheck,
    ) -> None:
        self.rv = room_version
        self.events = events
        self._get_auth_chain = get_auth_chain
        self.rejected = rejected
        self.v2_1 = room_version.state_res is StateResAlgorithm.V2_1
        self.create_event: Event | None = None
        self._pl_parent: dict[str, str | None] = {}

    async def resolve(self, state_sets: Sequence[StateMap]) -> dict[StateKey, str]:
        unconflicted, conflicted = _split_v2(state_sets)
        if not conflicted:
            return unconflicted
        conflicted_ids = set().union(*conflicted.values())

        full_conflicted = await self._full_conflicted_set(
            state_sets, unconflicted, conflicted_ids
        )
        await self.events.load(full_conflicted)
        # Events we cannot fetch, and non-state events, can take no part.
        full_conflicted = {
            e for e in full_conflicted if e in self.events and self.events[e].is_state
        }
        self.create_event = await self._room_create_event(unconflicted, conflicted_ids)

        # Step 1: the power events and their conflicted auth ancestors, power-ordered.
        power_order = await self._reverse_topological_power_order(full_conflicted)

        # Step 2: iterative auth checks; v2.1 starts from an empty map (MSC4297 change 1).
        base: Mapping[StateKey, str] = {} if self.v2_1 else unconflicted
        partial = await self._iterative_auth_checks(power_order, base)

        # Steps 3 and 4: the rest in mainline order of the resolved power levels, then checked.
        in_power_order = set(power_order)
        rest = [e for e in full_conflicted if e not in in_power_order]
        rest = await self._mainline_order(rest, partial.get(POWER_LEVELS_KEY))
        resolved = await self._iterative_auth_checks(rest, partial)

        # Step 5: the unconflicted state map always wins.
        resolved.update(unconflicted)
        return resolved

    # --- the full conflicted set ----------------------------------------------------------------

    async def _chain(self, event_ids: Iterable[str], stop: Collection[str] = ()) -> set[str]:
        if self._get_auth_chain is None:
            return await self.events.auth_chain(event_ids, stop)
        ids = list(event_ids)
        if not ids:
            return set()
        chain = set(await self._get_auth_chain(ids))
        return chain.difference(stop) if stop else chain

    async def _full_conflicted_set(
        self,
        state_sets: Sequence[StateMap],
        unconflicted: Mapping[StateKey, str],
        conflicted_ids: set[str],
    ) -> set[str]:
        """Conflicted state set + auth difference (+ conflicted state subgraph in v2.1)."""
        # The full auth chain C_i of a state S_i is taken to hold S_i's own events as well as
        # their auth chains. The spec's wording ("the union of the auth chains for each event
        # in S_i") leaves them out, but Synapse and conduwuit count them, and the difference
        # decides which events are replayed, so we compute what the deployed servers compute:
        # with it, an unconflicted event is never in the auth difference.
        #
        # C_i = U | D_i, where U is the unconflicted events and their auth chains (common to
        # every S_i) and D_i is S_i's conflicted events and their auth chains. Hence
        # union(C_i) - intersection(C_i) = union(D_i - U) - intersection(D_i - U): only the
        # conflicted events need walking below U, and as U is closed under auth chains the
        # walks may stop at it.
        shared = set(unconflicted.values())
        shared |= await self._chain(shared)
        per_set: list[set[str]] = []
        for state in state_sets:
            mine = {e for e in state.values() if e in conflicted_ids}
            per_set.append((mine | await self._chain(mine, stop=shared)) - shared)
        auth_difference = set().union(*per_set) - set.intersection(*per_set)
        full = conflicted_ids | auth_difference
        if self.v2_1:
            full |= await self._conflicted_subgraph(conflicted_ids)
        return full

    async def _conflicted_subgraph(self, conflicted_ids: set[str]) -> set[str]:
        """Events on an auth_events path between two conflicted events (rooms/v12 "Definitions").

        An event below some conflicted event is on such a path exactly when another
        conflicted event is below it.
        """
        below = await self._chain(conflicted_ids)
        if not below & conflicted_ids:
            return set()  # no conflicted event is below another: no paths at all
        await self.events.load(below)
        reaches: dict[str, bool] = {}
        entered: set[str] = set()  # also guards against auth cycles (forged v1/v2 event ids)
        for start in below:
            # Iterative post-order walk: auth chains can be far deeper than the stack.
            stack: list[tuple[str, bool]] = [(start, False)]
            while stack:
                event_id, children_done = stack.pop()
                event = self.events.get(event_id)
                auth_ids = event.auth_event_ids if event is not None else []
                if children_done:
                    reaches[event_id] = any(
                        a in conflicted_ids or reaches.get(a, False) for a in auth_ids
                    )
                elif event_id not in entered:
                    entered.add(event_id)
                    stack.append((event_id, True))
                    stack.extend((a, False) for a in auth_ids if a not in entered)
        return {e for e in below if reaches[e]} | (below & conflicted_ids)

    async def _room_create_event(
        self, unconflicted: Mapping[StateKey, str], conflicted_ids: set[str]
    ) -> Event | None:
        """The room's create event; v12 needs it apart, as it is never an auth event."""
        if not self.rv.room_id_is_create_event_hash:
            return None
        # rooms/v12 auth rule 2: the room id is the create event's id with '!' for '$'.
        create_id = unconflicted.get(CREATE_KEY)
        if create_id is None:
            for event_id in conflicted_ids:
                event = self.events.get(event_id)
                if event is not None:
                    create_id = "$" + event.room_id[1:]
                    break
        if create_id is None:
            return None
        await self.events.load([create_id])
        return self.events.get(create_id)

    # --- step 1: reverse topological power ordering ---------------------------------------------

    async def _reverse_topological_power_order(self, full_conflicted: set[str]) -> list[str]:
        """Power events of the full conflicted set plus their auth chains within it, sorted."""
        # The graph is walked through full-conflicted events only. In v2.1 this reaches every
        # full-conflicted event in a power event's auth chain: any path between two of them
        # runs through the auth difference or the conflicted state subgraph. In v2 a
        # conflicted event reachable only through non-conflicted events is left out, as the
        # deployed servers (Synapse, Conduit) do.
        graph: dict[str, list[str]] = {}
        stack = [e for e in full_conflicted if is_power_event(self.events[e])]
        while stack:
            event_id = stack.pop()
            if event_id in graph:
                continue
            edges = [a for a in self.events[event_id].auth_event_ids if a in full_conflicted]
            graph[event_id] = edges
            stack.extend(a for a in edges if a not in graph)

        await self.events.load(a for e in graph for a in self.events[e].auth_event_ids)
        sort_key: dict[str, tuple[float, int, str]] = {}
        for event_id in graph:
            event = self.events[event_id]
            # x < y if x's sender has the greater power (by x's auth events), then the
            # earlier origin_server_ts, then the smaller event id.
            sort_key[event_id] = (
                -self._sender_power(event), event.origin_server_ts, event_id
            )
        return lexicographical_topological_sort(graph, key=sort_key.__getitem__)

    def _sender_power(self, event: Event) -> int | float:
        """The sender's power level according to the event's own auth events."""
        power_levels: Event | None = None
        create: Event | None = self.create_event
        for auth_id in event.auth_event_ids:
            auth_event = self.events.get(auth_id)
            if auth_event is None or not auth_event.is_state:
                continue
            if auth_event.key == POWER_LEVELS_KEY:
                power_levels = auth_event
            elif auth_event.key == CREATE_KEY and create is None:
                create = auth_event
        return get_power_level(event.sender, power_levels, create)

    # --- steps 2 and 4: iterative auth checks ---------------------------------------------------

    async def _iterative_auth_checks(
        self, event_ids: Sequence[str], base: Mapping[StateKey, str]
    ) -> dict[StateKey, str]:
        """Apply each event in order if the auth rules allow it against the state so far."""
        state = dict(base)
        needed_keys: set[StateKey] = set()
        auth_ids: set[str] = set()
        for event_id in event_ids:
            event = self.events[event_id]
            needed_keys |= self._auth_types(event)
            auth_ids.update(event.auth_event_ids)
        await self.events.load(
            [state[k] for k in needed_keys if k in state] + list(auth_ids)
        )

        for event_id in event_ids:
            event = self.events[event_id]
            # A key the rules need but the state lacks comes from the event's own auth
            # events, unless that auth event was rejected.
            auth_events: dict[StateKey, Event] = {}
            for auth_id in event.auth_event_ids:
                auth_event = self.events.get(auth_id)
                if auth_event is not None and auth_event.is_state and not self.rejected(auth_id):
                    auth_events[auth_event.key] = auth_event
            for key in self._auth_types(event):
                state_id = state.get(key)
                if state_id is None:
                    continue
                state_event = self.events.get(state_id)
                if state_event is not None and not self.rejected(state_id):
                    auth_events[key] = state_event
            try:
                check_auth(event, auth_events, create_event=self.create_event)
            except AuthError as e:
                logger.debug("state resolution: %s fails auth: %s", event_id, e)
                continue
            state[event.key] = event_id
        return state

    def _auth_types(self, event: Event) -> set[StateKey]:
        return auth_types_for_event(
            event.type, event.sender, event.state_key, event.content, self.rv
        )

    # --- step 3: mainline ordering --------------------------------------------------------------

    async def _power_levels_parent(self, event_id: str) -> str | None:
        """The m.room.power_levels event among an event's auth events, if any."""
        if event_id in self._pl_parent:
            return self._pl_parent[event_id]
        await self.events.load([event_id])
        event = self.events.get(event_id)
        parent: str | None = None
        if event is not None:
            await self.events.load(event.auth_event_ids)
            for auth_id in event.auth_event_ids:
                auth_event = self.events.get(auth_id)
                if auth_event is not None and auth_event.is_state and (
                    auth_event.key == POWER_LEVELS_KEY
                ):
                    parent = auth_id
                    break
        self._pl_parent[event_id] = parent
        return parent

    async def _mainline_order(
        self, event_ids: list[str], power_levels_id: str | None
    ) -> list[str]:
        """Sort by mainline position (greatest first), origin_server_ts, event id."""
        if not event_ids:
            return []
        # The mainline of P0: P0, then the power levels event in each one's auth events.
        position: dict[str, float] = {}
        index = 0
        current = power_levels_id
        while current is not None and current not in position:
            position[current] = index
            index += 1
            current = await self._power_levels_parent(current)
        mainline = dict(position)

        await self.events.load(
            a for e in event_ids for a in self.events[e].auth_event_ids
        )

        async def position_of(event_id: str) -> float:
            # The first power levels event in e's chain (e itself excluded) that is on the
            # mainline gives the position; none at all gives infinity.
            walked: dict[str, None] = {}  # ordered set; also stops at forged cycles
            current = await self._power_levels_parent(event_id)
            found = math.inf
            while current is not None and current not in walked:
                if current in position:
                    found = position[current]
                    break
                walked[current] = None
                current = await self._power_levels_parent(current)
            for pl_id in walked:
                if pl_id not in mainline:
                    position[pl_id] = found  # memoised: later walks stop here
            return found

        keys: dict[str, tuple[float, int, str]] = {}
        for event_id in event_ids:
            event = self.events[event_id]
            keys[event_id] = (-(await position_of(event_id)), event.origin_server_ts, event_id)
        return sorted(event_ids, key=keys.__getitem__)


# --- v1 ---------------------------------------------------------------------------------------


class _ResolverV1:
    """Room version 1 state resolution (rooms/v1 "State resolution")."""

    def __init__(
        self, room_version: RoomVersion, events: _EventCache, rejected: RejectedCheck
    ) -> None:
        self.rv = room_version
        self.events = events
        self.rejected = rejected

    async def resolve(self, state_sets: Sequence[StateMap]) -> dict[StateKey, str]:
        # v1: a conflict is two states naming different events for a key; a key missing from
        # some states is not a conflict. R starts as the union without the conflicted keys.
        resolved: dict[StateKey, str] = {}
        conflicted: dict[StateKey, set[str]] = {}
        for state in state_sets:
            for key, event_id in state.items():
                if key in conflicted:
                    conflicted[key].add(event_id)
                elif key in resolved and resolved[key] != event_id:
                    conflicted[key] = {resolved.pop(key), event_id}
                else:
                    resolved[key] = event_id
        await self.events.load(set().union(*conflicted.values()) if conflicted else ())
        candidates: dict[StateKey, list[Event]] = {}
        for key, ids in conflicted.items():
            found = [self.events[e] for e in ids if e in self.events]
            if found:
                candidates[key] = found
        needed = {k for evs in candidates.values() for ev in evs for k in self._auth_types(ev)}
        await self.events.load(resolved[k] for k in needed if k in resolved)

        # Passes in order: power levels, join rules, memberships, then everything else. Each
        # pass resolves its keys against R as it stood when the pass began, so the result
        # does not depend on the order of keys within a pass.
        passes: list[Callable[[StateKey], bool]] = [
            lambda k: k == POWER_LEVELS_KEY,
            lambda k: k[0] == "m.room.join_rules",
            lambda k: k[0] == "m.room.member",
        ]
        done: set[StateKey] = set()
        for in_pass in passes:
            snapshot = dict(resolved)
            for key in [k for k in candidates if k not in done and in_pass(k)]:
                resolved[key] = self._resolve_auth_key(key, candidates[key], snapshot)
                done.add(key)
        snapshot = dict(resolved)
        for key in [k for k in candidates if k not in done]:
            resolved[key] = self._resolve_other_key(candidates[key], snapshot)
        return resolved

    def _resolve_auth_key(
        self, key: StateKey, events: list[Event], state: Mapping[StateKey, str]
    ) -> str:
        # Ascending depth, then descending sha1(event_id); the first is taken unchecked and
        # each later one must be allowed by R (updated as we go), else the pass stops.
        ordered = sorted(events, key=lambda e: (-e.depth, _sha1(e.event_id)), reverse=True)
        local = dict(state)
        local[key] = ordered[0].event_id
        for event in ordered[1:]:
            if not self._allowed(event, local):
                break
            local[key] = event.event_id
        return local[key]

    def _resolve_other_key(self, events: list[Event], state: Mapping[StateKey, str]) -> str:
        # The highest depth, then lowest sha1(event_id), that R allows. When none is allowed
        # the spec says nothing; like Synapse we keep the last candidate in that order.
        ordered = sorted(events, key=lambda e: (-e.depth, _sha1(e.event_id)))
        for event in ordered:
            if self._allowed(event, state):
                return event.event_id
        return ordered[-1].event_id

    def _allowed(self, event: Event, state: Mapping[StateKey, str]) -> bool:
        auth_events: dict[StateKey, Event] = {}
        for key in self._auth_types(event):
            event_id = state.get(key)
            auth_event = self.events.get(event_id) if event_id is not None else None
            if auth_event is not None and not self.rejected(auth_event.event_id):
                auth_events[key] = auth_event
        try:
            check_auth(event, auth_events)
        except AuthError:
            return False
        return True

    def _auth_types(self, event: Event) -> set[StateKey]:
        return auth_types_for_event(
            event.type, event.sender, event.state_key, event.content, self.rv
        )


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()

