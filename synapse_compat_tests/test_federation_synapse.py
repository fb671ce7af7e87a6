"""Federation with a real Synapse 1.163.2: joins both ways (by id and by alias), messages and
state in order both ways, invites, typing, receipts, backfill, and what a server that was
never in a room cannot read. Both servers run on loopback with certificates from the test CA.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator
from urllib.parse import quote

import pytest

from synapse_compat_tests.federation_fixture import (
    FederationCA, SynapseServer, hearth_federation_server)
from tests.harness import Client, ServerProcess

pytestmark = pytest.mark.compat


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0,
             interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


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


@pytest.fixture(scope="module")
def hearth_fed(federation_ca: FederationCA) -> Iterator[ServerProcess]:
    srv = hearth_federation_server(federation_ca, "sqlite")
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
