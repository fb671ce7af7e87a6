"""State resolution v1, v2 and v2.1 on small room DAGs (rooms/v1, rooms/v2, rooms/v12)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import pytest

from crypto.room_versions import RoomVersion, RoomVersions, StateResAlgorithm
from homeserver.rooms.auth_rules import AuthError, check_auth
from homeserver.rooms.events import StateKey
from homeserver.rooms.state_res import is_power_event, lexicographical_topological_sort
from tests.rooms.state_res_fixtures import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    JOIN,
    ZARA,
    Room,
    StateMap,
    eid,
)

T = TypeVar("T")

PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")
MEMBER = "m.room.member"

# Room v11 with the v2.1 algorithm: isolates the algorithm change from v12's other changes.
V11_WITH_V2_1 = dataclasses.replace(RoomVersions.V11, state_res=StateResAlgorithm.V2_1)

# Versions on which v2 and v2.1 agree for the scenario (v2 with old-style event references).
V2_FAMILY = [RoomVersions.V2, RoomVersions.V11, RoomVersions.V12]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never really waits (the fetchers are plain dict look-ups)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine waited on something")


def new_room(rv: RoomVersion) -> Room:
    room = Room(rv)
    room.start()
    return room


def authorised(room: Room, name: str) -> bool:
    """Whether the event passes the auth rules against its own auth events (fixture check)."""
    event = room[name]
    auth = {room.by_id(a).key: room.by_id(a) for a in event.auth_event_ids}
    create = room.by_id(eid("CREATE")) if room.rv.room_id_is_create_event_hash else None
    try:
        check_auth(event, auth, create_event=create)
    except AuthError:
        return False
    return True


def names(state: Mapping[StateKey, str]) -> dict[StateKey, str]:
    """Event names instead of ids, for readable failures."""
    return {k: v.split(":", 1)[0][1:] for k, v in state.items()}


def version_id(rv: RoomVersion) -> str:
    return f"v{rv.identifier}-{rv.state_res.value}"


# --- lexicographical_topological_sort ---------------------------------------------------------


def test_topological_sort_puts_pointed_at_nodes_first() -> None:
    graph = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    assert lexicographical_topological_sort(graph, key=lambda n: n) == ["d", "b", "c", "a"]
    rank = {"c": 0, "b": 1, "a": 2, "d": 3}
    assert lexicographical_topological_sort(graph, key=rank.__getitem__) == ["d", "c", "b", "a"]


def test_topological_sort_takes_the_smallest_available_node_each_step() -> None:
    graph = {"x": [], "y": [], "z": ["x"]}
    # z is smallest but must wait for x; y beats x, so x comes only after y.
    assert lexicographical_topological_sort(graph, key={"z": 0, "y": 1, "x": 2}.get) == [
        "y", "x", "z"]
    # Once x is out, z beats y.
    assert lexicographical_topological_sort(graph, key={"z": 0, "x": 1, "y": 2}.get) == [
        "x", "z", "y"]


def test_topological_sort_includes_edge_only_nodes_and_leaves_input_alone() -> None:
    graph = {"a": {"b"}, "c": {"b", "d"}}
    before = {k: set(v) for k, v in graph.items()}
    order = lexicographical_topological_sort(graph, key=lambda n: n)
    assert order == ["b", "a", "d", "c"]
    assert graph == before


def test_topological_sort_rejects_cycles() -> None:
    with pytest.raises(ValueError):
        lexicographical_topological_sort({"a": ["b"], "b": ["a"], "c": []}, key=lambda n: n)


def test_power_events() -> None:
    room = new_room(RoomVersions.V11)
    room.add("KICK", ALICE, MEMBER, BOB, {"membership": "leave"})
    room.add("LEAVE", CHARLIE, MEMBER, CHARLIE, {"membership": "leave"})
    room.add("BAN", ALICE, MEMBER, ZARA, {"membership": "ban"})
    room.add("TOPIC", ALICE, "m.room.topic", "", {"topic": "t"})
    assert [is_power_event(room[n]) for n in ("IPOWER", "IJR", "KICK", "BAN")] == [True] * 4
    assert [is_power_event(room[n]) for n in ("CREATE", "IMB", "LEAVE", "TOPIC")] == [False] * 4


# --- v2 and v2.1: scenarios where both agree --------------------------------------------------


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_identical_state_sets_resolve_without_fetching(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("T", ALICE, "m.room.topic", "", {"topic": "x"})
    state = room.state("T")
    assert run(room.resolve(state, dict(state))) == state
    assert room.fetched == []


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_key_missing_from_one_branch_is_kept_if_allowed(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("T", ALICE, "m.room.topic", "", {"topic": "x"}, prev=["IMZ"])
    room.add("BT", BOB, "m.room.topic", "", {"topic": "y"}, prev=["IMZ"])
    assert authorised(room, "T") and not authorised(room, "BT")
    no_topic = room.state("IMZ")
    assert names(run(room.resolve(no_topic, room.state("T"))))[TOPIC] == "T"
    # A key only one branch has is still conflicted: Bob's unauthorised topic drops out.
    assert TOPIC not in run(room.resolve(no_topic, room.state("BT")))


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_ban_vs_power_level_race(rv: RoomVersion) -> None:
    # Alice makes Bob a moderator. Bob bans Charlie on one branch while Alice demotes Bob on
    # another; the ban is later in time but loses: the demotion is ordered first.
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("PB", ALICE, "m.room.power_levels", "", room.power_content(), prev=["PA"])
    room.add("BAN", BOB, MEMBER, CHARLIE, {"membership": "ban"}, prev=["PA"])
    assert authorised(room, "BAN") and authorised(room, "PB")

    for order in (("PB", "BAN"), ("BAN", "PB")):
        resolved = names(run(room.merge(*order)))
        assert resolved[PL] == "PB"
        assert resolved[(MEMBER, CHARLIE)] == "IMC"
        assert resolved[(MEMBER, BOB)] == "IMB"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_topic_conflict_is_decided_by_mainline_not_timestamp(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("PB", ALICE, "m.room.power_levels", "", room.power_content(bob=50, charlie=50))
    room.add("TA", CHARLIE, "m.room.topic", "", {"topic": "charlie's"})
    # Bob's topic is the latest and has the larger id, but cites the older power levels.
    room.add("TB", BOB, "m.room.topic", "", {"topic": "bob's"}, prev=["PA"])
    assert authorised(room, "TA") and authorised(room, "TB")
    assert room["TB"].origin_server_ts > room["TA"].origin_server_ts

    resolved = names(run(room.merge("TB", "TA")))
    assert resolved[TOPIC] == "TA"
    assert resolved[PL] == "PB"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_same_mainline_position_orders_by_timestamp_then_event_id(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("TZ", ALICE, "m.room.topic", "", {"topic": "early"}, prev=["IMZ"])
    room.add("TA", ALICE, "m.room.topic", "", {"topic": "late"}, prev=["IMZ"])
    # Both cite IPOWER: the later one is applied last and wins, despite its smaller id.
    assert names(run(room.merge("TZ", "TA")))[TOPIC] == "TA"

    room.add("TQ", ALICE, "m.room.topic", "", {"topic": "q"}, prev=["IMZ"], ts=50)
    room.add("TP", ALICE, "m.room.topic", "", {"topic": "p"}, prev=["IMZ"], ts=50)
    # Equal timestamps: the larger event id is applied last and wins.
    assert names(run(room.merge("TP", "TQ")))[TOPIC] == "TQ"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_join_rules_conflict_rejects_join_that_evaded_them(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("JR", ALICE, "m.room.join_rules", "", {"join_rule": "invite"})
    room.add("ME", EVELYN, MEMBER, EVELYN, JOIN, prev=["IMZ"])
    assert authorised(room, "ME")  # the room was public on Evelyn's branch

    resolved = names(run(room.merge("ME", "JR")))
    assert resolved[JR] == "JR"
    assert (MEMBER, EVELYN) not in resolved


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_conflicted_power_levels_ordered_by_sender_power(rv: RoomVersion) -> None:
    # Alice (admin) and Bob (75) edit the power levels concurrently. Alice's edit is ordered
    # first because she has more power; Bob's, applied after it, wins although it is older.
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=75))
    room.add("PB", BOB, "m.room.power_levels", "", room.power_content(bob=75, charlie=50))
    room.add("PC", ALICE, "m.room.power_levels", "", room.power_content(bob=75, zara=50),
             prev=["PA"])
    assert authorised(room, "PB") and authorised(room, "PC")
    assert room["PB"].origin_server_ts < room["PC"].origin_server_ts

    assert names(run(room.merge("PB", "PC")))[PL] == "PB"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_event_failing_iterative_auth_checks_drops_out(rv: RoomVersion) -> None:
    # Bob's topic was allowed when sent, but Alice concurrently demoted him.
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("T0", ALICE, "m.room.topic", "", {"topic": "zero"})
    room.add("PB", ALICE, "m.room.power_levels", "", room.power_content())
    room.add("TB", BOB, "m.room.topic", "", {"topic": "bob's"}, prev=["T0"])
    assert authorised(room, "TB")

    resolved = names(run(room.merge("PB", "TB")))
    assert resolved[TOPIC] == "T0"
    assert resolved[PL] == "PB"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_kick_rejects_the_kicked_users_concurrent_topic(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("T1", ALICE, "m.room.topic", "", {"topic": "one"})
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("T2", BOB, "m.room.topic", "", {"topic": "two"})
    room.add("KICK", ALICE, MEMBER, BOB, {"membership": "leave"}, prev=["PA"], ts=1)
    assert authorised(room, "T2") and authorised(room, "KICK")

    merged = run(room.merge("T2", "KICK"))
    assert names(merged)[(MEMBER, BOB)] == "KICK"
    assert names(merged)[TOPIC] == "T1"
    # The merged state carries on: Alice's next topic is authorised against it.
    room.add("T3", ALICE, "m.room.topic", "", {"topic": "three"}, prev=["T2", "KICK"],
             state_before=merged)
    assert names(run(room.merge("T3", "T2")))[TOPIC] == "T3"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_auth_difference_is_replayed(rv: RoomVersion) -> None:
    # Bob, promoted by PA, edits the power levels (PB). The other branch never saw PA; PB
    # only passes the checks if PA (in the auth difference) is replayed before it.
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("PB", BOB, "m.room.power_levels", "", room.power_content(bob=50, charlie=50))
    room.add("T", ALICE, "m.room.topic", "", {"topic": "t"}, prev=["IMZ"])
    for use_index in (False, True):
        kwargs = {"get_auth_chain": room.get_auth_chain} if use_index else {}
        resolved = names(run(room.merge("PB", "T", **kwargs)))
        assert resolved[PL] == "PB"
        assert resolved[TOPIC] == "T"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_three_branches(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("PB", ALICE, "m.room.power_levels", "", room.power_content(), prev=["PA"])
    room.add("BAN", BOB, MEMBER, CHARLIE, {"membership": "ban"}, prev=["PA"])
    room.add("T", ZARA, "m.room.topic", "", {"topic": "zara's"}, prev=["PA"])
    room.add("T2", ALICE, "m.room.topic", "", {"topic": "alice's"}, prev=["PA"])
    resolved = names(run(room.merge("PB", "BAN", "T", "T2")))
    assert resolved[PL] == "PB"
    assert resolved[TOPIC] == "T2"
    assert resolved[(MEMBER, CHARLIE)] == "IMC"


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_each_event_is_fetched_once(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("PB", ALICE, "m.room.power_levels", "", room.power_content(), prev=["PA"])
    room.add("BAN", BOB, MEMBER, CHARLIE, {"membership": "ban"}, prev=["PA"])
    run(room.merge("PB", "BAN"))
    assert room.fetched
    assert len(room.fetched) == len(set(room.fetched))


@pytest.mark.parametrize("rv", V2_FAMILY, ids=version_id)
def test_unknown_events_drop_out(rv: RoomVersion) -> None:
    room = new_room(rv)
    room.add("T", ALICE, "m.room.topic", "", {"topic": "t"})
    ghost = {**room.state("T"), TOPIC: "$GHOST:example.com"}
    assert names(run(room.resolve(ghost, room.state("T"))))[TOPIC] == "T"


# --- where v2 and v2.1 differ (MSC4297) -------------------------------------------------------


def _stale_join_rules_room(rv: RoomVersion) -> tuple[Room, StateMap, StateMap]:
    # Alice changes the join rules twice and leaves. One state set (from a faulty /state
    # answer) still has the first change: only the join rules are conflicted, while both
    # sets agree that Alice has left.
    room = new_room(rv)
    room.add("JR1", ALICE, "m.room.join_rules", "", {"join_rule": "invite"})
    room.add("JR2", ALICE, "m.room.join_rules", "", {"join_rule": "public"})
    room.add("LA", ALICE, MEMBER, ALICE, {"membership": "leave"})
    good = room.state("LA")
    stale = {**good, JR: eid("JR1")}
    return room, good, stale


def test_v2_resets_join_rules_checked_against_unconflicted_state() -> None:
    room, good, stale = _stale_join_rules_room(RoomVersions.V11)
    resolved = run(room.resolve(good, stale))
    # v2 replays JR1 and JR2 over the unconflicted state, where Alice has left: both fail.
    assert JR not in resolved
    assert names(resolved)[(MEMBER, ALICE)] == "LA"


@pytest.mark.parametrize("rv", [RoomVersions.V12, V11_WITH_V2_1], ids=version_id)
def test_v2_1_replays_from_empty_state_and_keeps_join_rules(rv: RoomVersion) -> None:
    room, good, stale = _stale_join_rules_room(rv)
    for sets in ((good, stale), (stale, good)):
        resolved = names(run(room.resolve(*sets)))
        assert resolved[JR] == "JR2"
        assert resolved[(MEMBER, ALICE)] == "LA"  # the unconflicted state still wins


@pytest.mark.parametrize("rv", [RoomVersions.V12, V11_WITH_V2_1], ids=version_id)
def test_v2_1_does_not_use_rejected_auth_events(rv: RoomVersion) -> None:
    room, good, stale = _stale_join_rules_room(rv)
    # The join rules are only allowed through Alice's join among their auth events.
    resolved = run(room.resolve(good, stale, is_rejected=lambda e: e == eid("IMA")))
    assert JR not in resolved


def _stale_power_levels_room(rv: RoomVersion) -> tuple[Room, StateMap, StateMap]:
    # Alice promotes Bob (P1), Bob promotes Charlie (P2), Charlie sets the topic. One state
    # set wrongly has the original power levels; both agree on the topic, whose auth chain
    # holds P1 and P2, so neither is in the auth difference.
    room = new_room(rv)
    room.add("P1", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("P2", BOB, "m.room.power_levels", "", room.power_content(bob=50, charlie=50))
    room.add("T", CHARLIE, "m.room.topic", "", {"topic": "charlie's"})
    good = room.state("T")
    stale = {**good, PL: eid("IPOWER")}
    return room, good, stale


def test_v2_resets_power_levels_missing_the_events_in_between() -> None:
    room, good, stale = _stale_power_levels_room(RoomVersions.V11)
    for use_index in (False, True):
        kwargs = {"get_auth_chain": room.get_auth_chain} if use_index else {}
        assert names(run(room.resolve(good, stale, **kwargs)))[PL] == "IPOWER"


@pytest.mark.parametrize("rv", [RoomVersions.V12, V11_WITH_V2_1], ids=version_id)
def test_v2_1_replays_the_conflicted_state_subgraph(rv: RoomVersion) -> None:
    room, good, stale = _stale_power_levels_room(rv)
    for use_index in (False, True):
        kwargs = {"get_auth_chain": room.get_auth_chain} if use_index else {}
        resolved = names(run(room.resolve(stale, good, **kwargs)))
        assert resolved[PL] == "P2"
        assert resolved[TOPIC] == "T"


@pytest.mark.parametrize(
    ("rv", "winner"), [(RoomVersions.V11, "PC"), (RoomVersions.V12, "PB")], ids=["v11", "v12"]
)
def test_v12_creators_outrank_everyone_in_power_ordering(rv: RoomVersion, winner: str) -> None:
    # Bob is given 100. In v11 Alice and Bob tie at 100 and the older edit (Bob's) goes first,
    # so Alice's wins; in v12 Alice, the creator, has infinite power and goes first.
    room = new_room(rv)
    # Bob's invite keeps his join out of the auth difference (it is in the shared auth
    # chain), so that only the power ordering separates PB and PC.
    room.add("IE", BOB, MEMBER, EVELYN, {"membership": "invite"})
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=100))
    room.add("PB", BOB, "m.room.power_levels", "", room.power_content(bob=100, charlie=50))
    room.add("PC", ALICE, "m.room.power_levels", "", room.power_content(bob=100, zara=50),
             prev=["PA"])
    assert authorised(room, "PB") and authorised(room, "PC")
    assert names(run(room.merge("PB", "PC")))[PL] == winner


# --- v1 ---------------------------------------------------------------------------------------


def test_v1_other_events_take_the_deepest() -> None:
    room = new_room(RoomVersions.V1)
    room.add("T1", ALICE, "m.room.topic", "", {"topic": "1"}, prev=["IMZ"])
    room.add("T2", ALICE, "m.room.topic", "", {"topic": "2"})
    room.add("T3", ALICE, "m.room.topic", "", {"topic": "3"}, prev=["IMZ"], ts=1000)
    assert names(run(room.merge("T3", "T2")))[TOPIC] == "T2"


def test_v1_equal_depth_takes_the_lowest_sha1() -> None:
    room = new_room(RoomVersions.V1)
    room.add("TX", ALICE, "m.room.topic", "", {"topic": "x"}, prev=["IMZ"])
    room.add("TY", ALICE, "m.room.topic", "", {"topic": "y"}, prev=["IMZ"])
    expected = min(("TX", "TY"), key=lambda n: hashlib.sha1(eid(n).encode()).hexdigest())
    assert names(run(room.merge("TX", "TY")))[TOPIC] == expected


def test_v1_ban_vs_power_level_race() -> None:
    room = new_room(RoomVersions.V1)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("PB", ALICE, "m.room.power_levels", "", room.power_content(), prev=["PA"])
    room.add("BAN", BOB, MEMBER, CHARLIE, {"membership": "ban"}, prev=["PA"])
    resolved = names(run(room.merge("BAN", "PB")))
    assert resolved[PL] == "PB"
    assert resolved[(MEMBER, CHARLIE)] == "IMC"


def test_v1_power_levels_stop_at_the_first_unauthorised_one() -> None:
    # Three branches each end in a power levels event, of depths 8 (Alice's PA), 9 (Zara's
    # PZ, which she may not send) and 10 (Alice's PC). Ascending depth: PA is taken, PZ fails,
    # and the pass stops there, so PC is never considered.
    room = new_room(RoomVersions.V1)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50), prev=["IMZ"])
    room.add("X1", ALICE, "m.room.topic", "", {"topic": "x1"}, prev=["IMZ"])
    room.add("PZ", ZARA, "m.room.power_levels", "", room.power_content(zara=100),
             auth=["CREATE", "IPOWER", "IMZ"])
    room.add("Y1", ALICE, "m.room.topic", "", {"topic": "y1"}, prev=["IMZ"])
    room.add("Y2", ALICE, "m.room.topic", "", {"topic": "y2"})
    room.add("PC", ALICE, "m.room.power_levels", "", room.power_content(charlie=50))
    assert [room[n].depth for n in ("PA", "PZ", "PC")] == [8, 9, 10]

    assert names(run(room.merge("PC", "PA")))[PL] == "PC"
    for order in (("PA", "PZ", "PC"), ("PC", "PZ", "PA")):
        assert names(run(room.merge(*order)))[PL] == "PA"


def test_v1_resolves_power_levels_before_memberships() -> None:
    # Bob, promoted by PA on his branch, bans Charlie; the other branch never saw PA. The
    # power levels are resolved first (PA, the deeper one, is allowed), so the ban holds.
    room = new_room(RoomVersions.V1)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=50))
    room.add("BAN", BOB, MEMBER, CHARLIE, {"membership": "ban"})
    room.add("T", ALICE, "m.room.topic", "", {"topic": "t"}, prev=["IMZ"])
    resolved = names(run(room.merge("T", "BAN")))
    assert resolved[PL] == "PA"
    assert resolved[(MEMBER, CHARLIE)] == "BAN"
    assert resolved[TOPIC] == "T"


def test_v1_power_levels_of_equal_depth_end_on_the_lowest_sha1() -> None:
    # Same depth: sorted by descending sha1, so the lowest sha1 is applied last and wins.
    room = new_room(RoomVersions.V1)
    room.add("PX", ALICE, "m.room.power_levels", "", room.power_content(bob=10), prev=["IMZ"])
    room.add("PY", ALICE, "m.room.power_levels", "", room.power_content(bob=20), prev=["IMZ"])
    expected = min(("PX", "PY"), key=lambda n: hashlib.sha1(eid(n).encode()).hexdigest())
    assert names(run(room.merge("PX", "PY")))[PL] == expected
    assert names(run(room.merge("PY", "PX")))[PL] == expected


def test_unconflicted_events_are_never_in_the_auth_difference() -> None:
    # Alice and Bob, both at 100, edit the power levels concurrently; Bob's edit is older.
    # Bob's join is in PB's auth chain only, but it is in both state sets, so (as Synapse
    # computes the auth difference) it is not replayed and cannot hold PB back: PB goes
    # first on its timestamp, and Alice's PC, applied after it, wins.
    room = new_room(RoomVersions.V11)
    room.add("PA", ALICE, "m.room.power_levels", "", room.power_content(bob=100))
    room.add("PB", BOB, "m.room.power_levels", "", room.power_content(bob=100, charlie=50))
    room.add("PC", ALICE, "m.room.power_levels", "", room.power_content(bob=100, zara=50),
             prev=["PA"])
    for use_index in (False, True):
        kwargs = {"get_auth_chain": room.get_auth_chain} if use_index else {}
        assert names(run(room.merge("PB", "PC", **kwargs)))[PL] == "PC"
