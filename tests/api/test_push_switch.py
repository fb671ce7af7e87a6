"""The push switch, ``push: {enabled: ...}`` as Synapse spells it. Over HTTP on both engines: on
by default (a mention notifies and highlights); off, nothing is evaluated, so a mention makes no
notification and /sync counts nothing, while the push rules API keeps working. Also how the key
is parsed."""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import pytest

from homeserver.config import ConfigError, parse_config
from tests.harness import Client, ServerProcess

PATH = "/etc/hearth/homeserver.yaml"


def setup_room(server: ServerProcess) -> tuple[Client, Client, str]:
    a, b = server.users(2)
    r = a.post("createRoom", {"preset": "public_chat"})
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    assert b.post(f"join/{room}").status_code == 200
    return a, b, room


def mention(sender: Client, room: str, target: Client) -> str:
    r = sender.put(f"rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
                   {"msgtype": "m.text", "body": f"hey {target.user_id}",
                    "m.mentions": {"user_ids": [target.user_id]}})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def notifications(c: Client) -> list[dict[str, Any]]:
    r = c.get("notifications")
    assert r.status_code == 200, r.text
    return r.json()["notifications"]


def room_counts(c: Client, room: str) -> dict[str, Any]:
    r = c.get("sync", params={"timeout": "0"})
    assert r.status_code == 200, r.text
    return r.json()["rooms"]["join"][room].get("unread_notifications", {})


def test_push_is_on_by_default(server: ServerProcess) -> None:
    a, b, room = setup_room(server)
    ev = mention(a, room, b)
    deadline = time.monotonic() + 10
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = [n for n in notifications(b) if n["event"]["event_id"] == ev]
        if got:
            break
        time.sleep(0.05)
    assert got, "the mention made no notification with the default config"
    assert {"set_tweak": "highlight"} in got[0]["actions"]
    counts = room_counts(b, room)
    assert counts.get("highlight_count", 0) >= 1 and counts.get("notification_count", 0) >= 1


def test_push_disabled_makes_no_notifications(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server({"push": {"enabled": False}})
    a, b, room = setup_room(server)
    ev = mention(a, room, b)
    mention(b, room, a)
    # Evaluation would run in the background: keep looking for a while (bounded).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert notifications(b) == [] and notifications(a) == []
        time.sleep(0.1)
    counts = room_counts(b, room)
    assert counts.get("notification_count", 0) == 0 and counts.get("highlight_count", 0) == 0
    # The event itself was delivered as usual, and the rules can still be read.
    r = b.get("sync", params={"timeout": "0"})
    assert ev in [e["event_id"] for e in r.json()["rooms"]["join"][room]["timeline"]["events"]]
    assert b.get("pushrules/").status_code == 200


# --- parsing ---------------------------------------------------------------------------------

def parse(extra: dict[str, Any]) -> Any:
    return parse_config({"server_name": "example.com", **extra}, PATH)


def test_config_on_by_default_and_off_when_asked() -> None:
    assert parse({}).push_enabled is True
    assert parse({"push": None}).push_enabled is True
    assert parse({"push": {}}).push_enabled is True
    assert parse({"push": {"enabled": True}}).push_enabled is True
    assert parse({"push": {"enabled": False}}).push_enabled is False


@pytest.mark.parametrize("value,message", [
    ({"enabled": "no"}, f"{PATH}: 'push.enabled': expected true or false"),
    ({"enable": False}, f"{PATH}: unknown key 'push.enable' (did you mean 'enabled'?)"),
    ("off", f"{PATH}: 'push': expected a mapping"),
])
def test_config_bad_values(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse({"push": value})
    assert str(e.value) == message
