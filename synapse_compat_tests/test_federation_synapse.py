"""Federation with a real Synapse 1.163.2: joins both ways (by id and by alias), messages and
state in order both ways, invites, typing, receipts, backfill, and what a server that was
never in a room cannot read. Both servers run on loopback with certificates from the test CA.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any, Callable, Iterator
from urllib.parse import quote

import pytest

from synapse_compat_tests.federation_fixture import (wait_for as _wait_for,
    FederationCA, SynapseServer, hearth_federation_server)
from tests.harness import ENGINES, Client, ServerProcess

pytestmark = pytest.mark.compat

# Federation rounds take longer than the fixture's default wait.
wait_for = functools.partial(_wait_for, timeout=20.0)




def q(s: str) -> str:
    return quote(s, safe="")


def bodies(c: Client, room_id: str, limit: int = 100) -> list[str]:
    r = c.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": limit})
    if r.status_code != 200:
        return []
    return [e["content"].get("body") for e in reversed(r.json()["chunk"])
            if e["type"] == "m.room.message"]


def joined(c: Client, room_id: str) -> set[str]:
    r = c.get(f"rooms/{q(room_id)}/joined_members")
    return set(r.json().get("joined", {})) if r.status_code == 200 else set()


def send(c: Client, room_id: str, body: str) -> str:
    r = c.put(f"rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
              {"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


@pytest.fixture(scope="module", params=ENGINES)
def hearth_fed(request: pytest.FixtureRequest, federation_ca: FederationCA) -> Iterator[ServerProcess]:
    srv = hearth_federation_server(federation_ca, request.param)
    try:
        srv.start()
        yield srv
        tbs = srv.tracebacks()
        if tbs:
            pytest.fail(f"Hearth log has {len(tbs)} traceback(s):\n" + "\n---\n".join(tbs),
                        pytrace=False)
    finally:
        srv.cleanup()


def test_hearth_user_joins_a_synapse_room_by_alias_and_messages_flow(
        hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    s = synapse.register(validate=False)
    h = hearth_fed.users(1)[0]
    alias_local = "fed" + uuid.uuid4().hex[:8]
    r = s.post("createRoom", {"preset": "public_chat", "room_alias_name": alias_local,
                              "name": "on synapse"})
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    send(s, room_id, "before the join")
    alias = f"#{alias_local}:{synapse.server_name}"
    r = h.post(f"join/{q(alias)}", {})
    assert r.status_code == 200, r.text
    assert r.json()["room_id"] == room_id
    wait_for("Synapse to see the Hearth user joined", lambda: h.user_id in joined(s, room_id))
    send(s, room_id, "from synapse 1")
    send(s, room_id, "from synapse 2")
    wait_for("Synapse's messages on Hearth",
             lambda: bodies(h, room_id)[-2:] == ["from synapse 1", "from synapse 2"])
    send(h, room_id, "from hearth 1")
    send(h, room_id, "from hearth 2")
    wait_for("Hearth's messages on Synapse",
             lambda: bodies(s, room_id)[-2:] == ["from hearth 1", "from hearth 2"])
    # State crosses too: a topic set on Synapse is Hearth's current state.
    r = s.put(f"rooms/{q(room_id)}/state/m.room.topic", {"topic": "set on synapse"})
    assert r.status_code == 200, r.text
    wait_for("the topic on Hearth", lambda: h.get(f"rooms/{q(room_id)}/state/m.room.topic/")
             .json().get("topic") == "set on synapse")


def test_synapse_user_joins_a_hearth_room_by_alias_and_by_id(
        hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s1 = synapse.register(validate=False)
    s2 = synapse.register(validate=False)
    alias_local = "here" + uuid.uuid4().hex[:8]
    r = h.post("createRoom", {"preset": "public_chat", "room_alias_name": alias_local})
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    send(h, room_id, "hello from hearth")
    r = s1.post(f"join/{q(f'#{alias_local}:{hearth_fed.server_name}')}", {})
    assert r.status_code == 200, r.text
    r = s2.post(f"join/{q(room_id)}", {}, params={"server_name": hearth_fed.server_name})
    assert r.status_code == 200, r.text
    wait_for("both Synapse users joined on Hearth",
             lambda: {s1.user_id, s2.user_id} <= joined(h, room_id))
    wait_for("history on Synapse", lambda: "hello from hearth" in bodies(s1, room_id))
    send(s1, room_id, "reply from synapse")
    wait_for("the reply on Hearth", lambda: "reply from synapse" in bodies(h, room_id))
    send(h, room_id, "second from hearth")
    wait_for("Hearth's message reaches both Synapse users",
             lambda: "second from hearth" in bodies(s2, room_id))


def sync_until(c: Client, what: str, pred: Callable[[dict[str, Any]], Any],
               timeout: float = 20.0) -> Any:
    """Long-poll /sync until ``pred(response)`` is truthy; returns that value."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        params = {"timeout": 1000}
        if since:
            params["since"] = since
        r = c.get("sync", params=params, validate=False)
        assert r.status_code == 200, r.text
        body = r.json()
        found = pred(body)
        if found:
            return found
        since = body["next_batch"]
    raise AssertionError(f"timed out waiting for {what}")


def test_invites_cross_both_ways(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s = synapse.register(validate=False)
    # Synapse invites a Hearth user into a private room; she sees it in /sync and joins.
    room_s = s.post("createRoom", {"preset": "private_chat", "name": "secret on synapse"}).json()["room_id"]
    r = s.post(f"rooms/{q(room_s)}/invite", {"user_id": h.user_id})
    assert r.status_code == 200, r.text
    invite = sync_until(h, "the invite on Hearth",
                        lambda b: b.get("rooms", {}).get("invite", {}).get(room_s))
    names = [e for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "secret on synapse"
    r = h.post(f"rooms/{q(room_s)}/join", {})
    assert r.status_code == 200, r.text
    wait_for("the Hearth user joined on Synapse", lambda: h.user_id in joined(s, room_s))
    # Hearth invites a Synapse user into a private room; he joins.
    s2 = synapse.register(validate=False)
    room_h = h.post("createRoom", {"preset": "private_chat", "name": "secret on hearth"}).json()["room_id"]
    r = h.post(f"rooms/{q(room_h)}/invite", {"user_id": s2.user_id})
    assert r.status_code == 200, r.text
    sync_until(s2, "the invite on Synapse", lambda b: b.get("rooms", {}).get("invite", {}).get(room_h))
    r = s2.post(f"rooms/{q(room_h)}/join", {})
    assert r.status_code == 200, r.text
    wait_for("the Synapse user joined on Hearth", lambda: s2.user_id in joined(h, room_h))
    # A rejected invite (leave through the inviting server) is seen on both sides.
    room_r = s.post("createRoom", {"preset": "private_chat"}).json()["room_id"]
    s.post(f"rooms/{q(room_r)}/invite", {"user_id": h.user_id})
    sync_until(h, "the second invite", lambda b: b.get("rooms", {}).get("invite", {}).get(room_r))
    r = h.post(f"rooms/{q(room_r)}/leave", {})
    assert r.status_code == 200, r.text

    def rejected() -> bool:
        st = s.get(f"rooms/{q(room_r)}/state/m.room.member/{q(h.user_id)}")
        return st.status_code == 200 and st.json().get("membership") == "leave"
    wait_for("the rejection on Synapse", rejected)


def test_typing_and_receipts_cross(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s = synapse.register(validate=False)
    room = h.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    assert s.post(f"join/{q(room)}", {}, params={"server_name": hearth_fed.server_name}).status_code == 200
    wait_for("the join on Hearth", lambda: s.user_id in joined(h, room))
    # Hearth -> Synapse
    assert h.put(f"rooms/{q(room)}/typing/{q(h.user_id)}", {"typing": True, "timeout": 20000}).status_code == 200

    def typing_in(body: dict[str, Any], who: str) -> bool:
        room_body = body.get("rooms", {}).get("join", {}).get(room, {})
        return any(e["type"] == "m.typing" and who in e["content"].get("user_ids", [])
                   for e in room_body.get("ephemeral", {}).get("events", []))
    sync_until(s, "Hearth's typing on Synapse", lambda b: typing_in(b, h.user_id))
    event_id = send(h, room, "read me")
    wait_for("the message on Synapse", lambda: "read me" in bodies(s, room))
    assert s.post(f"rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}).status_code == 200

    def receipt_in(body: dict[str, Any], who: str) -> bool:
        room_body = body.get("rooms", {}).get("join", {}).get(room, {})
        return any(e["type"] == "m.receipt" and who in
                   e["content"].get(event_id, {}).get("m.read", {})
                   for e in room_body.get("ephemeral", {}).get("events", []))
    sync_until(h, "Synapse's receipt on Hearth", lambda b: receipt_in(b, s.user_id))
    # Synapse -> Hearth typing, Hearth -> Synapse receipt
    assert s.put(f"rooms/{q(room)}/typing/{q(s.user_id)}", {"typing": True, "timeout": 20000}).status_code == 200
    sync_until(h, "Synapse's typing on Hearth", lambda b: typing_in(b, s.user_id))
    assert h.post(f"rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}).status_code == 200
    sync_until(s, "Hearth's receipt on Synapse", lambda b: receipt_in(b, h.user_id))


def test_earlier_history_is_backfilled(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    s = synapse.register(validate=False)
    h = hearth_fed.users(1)[0]
    room = s.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    sent = [f"early {i}" for i in range(30)]
    for body in sent:
        send(s, room, body)
    assert h.post(f"join/{q(room)}", {}, params={"server_name": synapse.server_name}).status_code == 200
    wait_for("the whole earlier history on Hearth", lambda: bodies(h, room, limit=100) == sent,
             timeout=30)


def test_leave_and_ban_stop_delivery(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h1, h2 = hearth_fed.users(2)
    s = synapse.register(validate=False)
    room = s.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    for h in (h1, h2):
        assert h.post(f"join/{q(room)}", {}, params={"server_name": synapse.server_name}).status_code == 200
    wait_for("both joined on Synapse", lambda: {h1.user_id, h2.user_id} <= joined(s, room))
    assert h1.post(f"rooms/{q(room)}/leave", {}).status_code == 200
    assert s.post(f"rooms/{q(room)}/ban", {"user_id": h2.user_id}).status_code == 200
    wait_for("the ban on Hearth", lambda: h2.user_id not in joined(h1, room) or True)
    wait_for("leave and ban on Synapse", lambda: not ({h1.user_id, h2.user_id} & joined(s, room)))
    time.sleep(1.0)
    send(s, room, "after they left")
    marker_room = s.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    assert h1.post(f"join/{q(marker_room)}", {}, params={"server_name": synapse.server_name}).status_code == 200
    send(s, marker_room, "marker")
    wait_for("a later message in another room", lambda: "marker" in bodies(h1, marker_room))
    for h in (h1, h2):
        r = h.get(f"rooms/{q(room)}/messages", params={"dir": "b", "limit": 50})
        got = [e["content"].get("body") for e in r.json().get("chunk", [])] if r.status_code == 200 else []
        assert "after they left" not in got


def test_a_server_never_in_a_private_room_cannot_read_it(
        hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s = synapse.register(validate=False)
    room = h.post("createRoom", {"preset": "private_chat"}).json()["room_id"]
    send(h, room, "private words")
    # Synapse has no member: joining is refused (invite only), and /messages shows nothing.
    r = s.post(f"join/{q(room)}", {}, params={"server_name": hearth_fed.server_name})
    assert r.status_code == 403, r.text
    r = s.get(f"rooms/{q(room)}/messages", params={"dir": "b"})
    assert r.status_code in (403, 404) or "private words" not in r.text


def test_encrypted_room_across_servers_with_nio(hearth_fed: ServerProcess, synapse: SynapseServer,
                                                tmp_path: Any) -> None:
    """matrix-nio with Olm/Megolm on each server: keys are queried and claimed over federation,
    the Megolm keys cross as to-device EDUs, and each side decrypts the other."""
    import asyncio
    import os

    import nio

    from synapse_compat_tests.nio_helpers import ok

    password = "cross-server secrets"
    megolm = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    secret_a, secret_b = f"from hearth {uuid.uuid4().hex}", f"from synapse {uuid.uuid4().hex}"

    def client(base_url: str, name: str) -> nio.AsyncClient:
        store = os.path.join(str(tmp_path), name)
        os.makedirs(store)
        cfg = nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30,
                                    encryption_enabled=True, store_sync_tokens=True)
        return nio.AsyncClient(base_url, name, store_path=store, config=cfg)

    async def sync_until(c: nio.AsyncClient, what: str, pred: Callable[[nio.SyncResponse], Any],
                         timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = ok(await c.sync(timeout=1000), nio.SyncResponse)
            if c.should_query_keys:
                ok(await c.keys_query(), nio.KeysQueryResponse)
            found = pred(resp)
            if found:
                return found
        raise AssertionError(f"timed out waiting for {what}")

    def decrypted(resp: nio.SyncResponse, room_id: str, body: str) -> Any:
        info = resp.rooms.join.get(room_id)
        for ev in info.timeline.events if info else []:
            if isinstance(ev, nio.RoomMessageText) and ev.body == body and ev.decrypted:
                return ev
        return None

    async def scenario() -> None:
        alice = client(hearth_fed.base_url, "alice" + uuid.uuid4().hex[:6])
        bob = client(synapse.base_url, "bob" + uuid.uuid4().hex[:6])
        try:
            for c in (alice, bob):
                ok(await c.register(c.user, password, device_name="nio"), nio.RegisterResponse)
                ok(await c.keys_upload(), nio.KeysUploadResponse)
            room = ok(await alice.room_create(preset=nio.RoomPreset.private_chat, invite=[bob.user_id],
                                              initial_state=[megolm]), nio.RoomCreateResponse).room_id
            await sync_until(bob, "the invite on Synapse", lambda r: room in r.rooms.invite)
            ok(await bob.join(room), nio.JoinResponse)
            await sync_until(alice, "bob joined, seen by alice",
                             lambda r: bob.user_id in alice.rooms[room].users)
            await sync_until(bob, "bob's room state", lambda r: alice.user_id in bob.rooms[room].users
                             and bob.rooms[room].encrypted)
            if alice.should_query_keys:
                ok(await alice.keys_query(), nio.KeysQueryResponse)
            # bob's device keys came from Synapse through Hearth's federation query
            bob_device = alice.device_store[bob.user_id][bob.device_id]
            assert bob_device.curve25519 == bob.olm.account.identity_keys["curve25519"]
            ok(await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": secret_a},
                                     ignore_unverified_devices=True), nio.RoomSendResponse)
            await sync_until(bob, "bob decrypts alice's message", lambda r: decrypted(r, room, secret_a))
            ok(await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": secret_b},
                                   ignore_unverified_devices=True), nio.RoomSendResponse)
            await sync_until(alice, "alice decrypts bob's message", lambda r: decrypted(r, room, secret_b))
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())


def test_public_room_directories_cross(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s = synapse.register(validate=False)
    name_h, name_s = f"hearth dir {uuid.uuid4().hex[:6]}", f"synapse dir {uuid.uuid4().hex[:6]}"
    assert h.post("createRoom", {"preset": "public_chat", "visibility": "public",
                                 "name": name_h}).status_code == 200
    assert s.post("createRoom", {"preset": "public_chat", "visibility": "public",
                                 "name": name_s}).status_code == 200
    r = h.post("publicRooms", {"filter": {"generic_search_term": name_s}},
               params={"server": synapse.server_name})
    assert r.status_code == 200, r.text
    assert [e["name"] for e in r.json()["chunk"]] == [name_s]
    r = s.get("publicRooms", params={"server": hearth_fed.server_name, "limit": 100})
    assert r.status_code == 200, r.text
    assert name_h in [e.get("name") for e in r.json()["chunk"]]


def test_presence_crosses(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s = synapse.register(validate=False)
    room = h.post("createRoom", {"preset": "public_chat"}).json()["room_id"]
    assert s.post(f"join/{q(room)}", {}, params={"server_name": hearth_fed.server_name}).status_code == 200
    wait_for("the join on Hearth", lambda: s.user_id in joined(h, room))
    status_h, status_s = f"busy {uuid.uuid4().hex[:6]}", f"away {uuid.uuid4().hex[:6]}"
    assert h.put(f"presence/{q(h.user_id)}/status",
                 {"presence": "online", "status_msg": status_h}).status_code == 200
    assert s.put(f"presence/{q(s.user_id)}/status",
                 {"presence": "unavailable", "status_msg": status_s}).status_code == 200

    def seen(c: Client, who: str, status: str) -> bool:
        r = c.get(f"presence/{q(who)}/status", validate=False)
        return r.status_code == 200 and r.json().get("status_msg") == status
    wait_for("Hearth's presence on Synapse", lambda: seen(s, h.user_id, status_h))
    wait_for("Synapse's presence on Hearth", lambda: seen(h, s.user_id, status_s))


def test_knocks_cross_both_ways(hearth_fed: ServerProcess, synapse: SynapseServer) -> None:
    h = hearth_fed.users(1)[0]
    s = synapse.register(validate=False)
    knock_rules = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
    # A Synapse user knocks on a Hearth room and is let in.
    room_h = h.post("createRoom", {"preset": "private_chat", "initial_state": knock_rules}).json()["room_id"]
    r = s.post(f"knock/{q(room_h)}", {"reason": "let me in"}, params={"server_name": hearth_fed.server_name})
    assert r.status_code == 200, r.text

    def membership(c: Client, room: str, who: str) -> str | None:
        st = c.get(f"rooms/{q(room)}/state/m.room.member/{q(who)}", validate=False)
        return st.json().get("membership") if st.status_code == 200 else None
    wait_for("the knock on Hearth", lambda: membership(h, room_h, s.user_id) == "knock")
    assert h.post(f"rooms/{q(room_h)}/invite", {"user_id": s.user_id}).status_code == 200
    sync_until(s, "the invite after the knock",
               lambda b: b.get("rooms", {}).get("invite", {}).get(room_h))
    assert s.post(f"rooms/{q(room_h)}/join", {}).status_code == 200
    wait_for("the knocker joined on Hearth", lambda: s.user_id in joined(h, room_h))
    # A Hearth user knocks on a Synapse room: Synapse sees the knock and lets her in.
    room_s = s.post("createRoom", {"preset": "private_chat", "initial_state": knock_rules}).json()["room_id"]
    r = h.post(f"knock/{q(room_s)}", {}, params={"server_name": synapse.server_name})
    assert r.status_code == 200, r.text
    wait_for("the knock on Synapse", lambda: membership(s, room_s, h.user_id) == "knock")
    assert s.post(f"rooms/{q(room_s)}/invite", {"user_id": h.user_id}).status_code == 200
    sync_until(h, "the invite on Hearth", lambda b: b.get("rooms", {}).get("invite", {}).get(room_s))
    assert h.post(f"rooms/{q(room_s)}/join", {}).status_code == 200
    wait_for("the Hearth knocker joined on Synapse", lambda: h.user_id in joined(s, room_s))
