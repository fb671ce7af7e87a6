"""matrix-nio with its Olm/Megolm support against Hearth: an end-to-end encrypted conversation.

Two nio clients, each with its own crypto store, upload device and one-time keys, meet in a
room created with m.room.encryption, and talk. nio claims the other's one-time key, shares its
Megolm session over an Olm-encrypted to-device message, and encrypts the room messages; each
side must decrypt what the other sent. Then the database is read directly: the plaintext must
appear nowhere in it, and the stored ciphertext must be exactly what the sender produced and
what the receiver got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import secrets
import string
from typing import Any, AsyncIterator, Iterator

import nio
import psycopg2
import pytest

from synapse_compat_tests.nio_helpers import mxid, ok, raw_body
from tests.harness import PG, ServerProcess

pytestmark = pytest.mark.compat

PASSWORD = "an encrypted conversation's password"
MEGOLM = "m.megolm.v1.aes-sha2"
OLM = "m.olm.v1.curve25519-aes-sha2"


def e2e_config() -> nio.AsyncClientConfig:
    # No retries on timeouts or 429s (a stuck server fails the test); encryption on, and the
    # sync token kept in the store as a long-running client would.
    return nio.AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30,
                                 encryption_enabled=True, store_sync_tokens=True)






@contextlib.asynccontextmanager
async def e2e_users(server: ServerProcess, store_root: str,
                    *localparts: str) -> AsyncIterator[list[nio.AsyncClient]]:
    """One registered nio client per localpart, each with its own crypto store directory."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for lp in localparts:
            store = os.path.join(store_root, lp)
            os.makedirs(store)
            client = nio.AsyncClient(server.base_url, lp, store_path=store, config=e2e_config())
            stack.push_async_callback(client.close)
            reg = ok(await client.register(lp, PASSWORD, device_name=f"{lp}'s nio"),
                     nio.RegisterResponse)
            assert reg.user_id == mxid(lp)
            # registering loaded the store: nio has an Olm account for this device
            assert client.olm is not None and client.should_upload_keys
            clients.append(client)
        yield clients


async def sync(client: nio.AsyncClient, timeout: int = 0) -> nio.SyncResponse:
    resp = ok(await client.sync(timeout=timeout), nio.SyncResponse)
    return resp


async def query_keys_if_needed(client: nio.AsyncClient) -> None:
    if client.should_query_keys:
        ok(await client.keys_query(), nio.KeysQueryResponse)


def timeline_raw(resp: nio.SyncResponse, room_id: str) -> dict[str, dict[str, Any]]:
    """event_id -> the event as the server sent it in this sync's joined-room timeline."""
    events = raw_body(resp).get("rooms", {}).get("join", {}).get(room_id, {}).get(
        "timeline", {}).get("events", [])
    return {e["event_id"]: e for e in events}


def timeline(resp: nio.SyncResponse, room_id: str) -> list[Any]:
    info = resp.rooms.join.get(room_id)
    return info.timeline.events if info else []


# ---- the database, read behind the server's back -------------------------------------------


class Database:
    """Read-only access to the server's database, whichever the engine."""

    def __init__(self, server: ServerProcess) -> None:
        self.engine = server.engine
        if server.engine == "sqlite":
            path = server.config["database"]["args"]["database"]
            self.conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            self.conn = psycopg2.connect(dbname=server.pg_name, **PG)
            self.conn.autocommit = True  # every query sees the latest committed data

    def close(self) -> None:
        self.conn.close()

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.engine == "postgres":
            sql = sql.replace("?", "%s")
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def text_dump(self) -> Iterator[tuple[str, str]]:
        """(table, value) for every non-null value of every column of every table, as text."""
        if self.engine == "sqlite":
            tables = [r[0] for r in self.rows(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                for row in self.rows(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            yield table, value.decode("utf-8", "replace")
                        elif value is not None:
                            yield table, str(value)
        else:
            tables = [r[0] for r in self.rows(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name")]
            assert tables
            for table in tables:
                cols = self.rows("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_schema = 'public' AND table_name = ? "
                                 "ORDER BY ordinal_position", table)
                exprs = [f"encode(\"{c}\", 'escape')" if t == "bytea" else f'"{c}"::text'
                         for c, t in cols]
                for row in self.rows(f'SELECT {", ".join(exprs)} FROM "{table}"'):
                    for value in row:
                        if value is not None:
                            yield table, value

    def tables_containing(self, needle: str) -> set[str]:
        needle = needle.lower()
        return {table for table, value in self.text_dump() if needle in value.lower()}


@contextlib.contextmanager
def database(server: ServerProcess) -> Iterator[Database]:
    db = Database(server)
    try:
        yield db
    finally:
        db.close()


# --------------------------------------------------------------------------------------------


def test_encrypted_room_conversation_is_decrypted_and_never_stored_in_clear(
        hearth: ServerProcess, tmp_path: Any) -> None:
    # Every plaintext carries a random lower-case token: the search index lower-cases and splits
    # words, so looking for the token alone also catches a body that was indexed.
    # Letters only: a search index's tokenizer may split hex strings at digit runs (PostgreSQL's
    # parser reads e.g. "9e3" as a number), and the scan must find the whole token.
    tokens = {name: "".join(secrets.choice(string.ascii_lowercase) for _ in range(24))
              for name in ("alice1", "bob1", "alice2", "control")}
    texts = {
        "alice1": f"Alice's first secret {tokens['alice1']}",
        "bob1": f"Bob's encrypted reply {tokens['bob1']}",
        "alice2": f"Alice's second secret {tokens['alice2']}",
    }
    control_text = f"not a secret {tokens['control']}"

    async def scenario() -> None:
        async with e2e_users(hearth, str(tmp_path), "alice", "bob") as (alice, bob):
            # ---- device keys and one-time keys
            upload_counts = {}
            for client in (alice, bob):
                up = ok(await client.keys_upload(), nio.KeysUploadResponse)
                assert up.signed_curve25519_count > 0, up
                assert not client.should_upload_keys  # the server acknowledged every key
                upload_counts[client.user_id] = up.signed_curve25519_count

            # ---- an encrypted room, and a plain one for the control message
            room = ok(await alice.room_create(
                preset=nio.RoomPreset.private_chat, name="Encrypted", invite=[bob.user_id],
                initial_state=[{"type": "m.room.encryption", "state_key": "",
                                "content": {"algorithm": MEGOLM}}]),
                nio.RoomCreateResponse).room_id
            plain_room = ok(await alice.room_create(preset=nio.RoomPreset.private_chat),
                            nio.RoomCreateResponse).room_id

            first = await sync(alice)
            assert first.device_key_count.signed_curve25519 == upload_counts[alice.user_id]
            assert alice.rooms[room].encrypted, "nio did not see m.room.encryption in /sync"
            assert not alice.rooms[plain_room].encrypted

            ok(await bob.join(room), nio.JoinResponse)
            bob_first = await sync(bob)
            assert bob_first.device_key_count.signed_curve25519 == upload_counts[bob.user_id]
            assert bob.rooms[room].encrypted
            assert set(bob.rooms[room].users) == {alice.user_id, bob.user_id}

            second = await sync(alice)
            assert set(alice.rooms[room].users) == {alice.user_id, bob.user_id}
            # Spec (/sync device_lists.changed): users "who now share an encrypted room with the
            # client since the previous sync response".
            assert bob.user_id in second.device_list.changed, second.device_list

            # ---- device keys through /keys/query, as nio stores them
            await query_keys_if_needed(alice)
            await query_keys_if_needed(bob)
            bob_device = alice.device_store[bob.user_id][bob.device_id]
            assert bob_device.curve25519 == bob.olm.account.identity_keys["curve25519"]
            assert bob_device.ed25519 == bob.olm.account.identity_keys["ed25519"]
            alice_device = bob.device_store[alice.user_id][alice.device_id]
            assert alice_device.curve25519 == alice.olm.account.identity_keys["curve25519"]

            # record the encrypted contents each nio client puts on the wire, and its claims
            sent: dict[str, list[dict[str, Any]]] = {alice.user_id: [], bob.user_id: []}
            claims: dict[str, list[nio.KeysClaimResponse]] = {alice.user_id: [], bob.user_id: []}
            for client in (alice, bob):
                async def recording_claim(user_set: Any, _orig=client.keys_claim,
                                          _out=claims[client.user_id]) -> Any:
                    resp = ok(await _orig(user_set), nio.KeysClaimResponse)
                    _out.append(resp)
                    return resp
                client.keys_claim = recording_claim  # type: ignore[method-assign]

                def recording(room_id: str, event_type: str, content: dict[str, Any],
                              _orig=client.encrypt, _out=sent[client.user_id]) -> Any:
                    new_type, new_content = _orig(room_id, event_type, content)
                    _out.append(json.loads(json.dumps(new_content)))
                    return new_type, new_content
                client.encrypt = recording  # type: ignore[method-assign]

            # ---- alice speaks: claims bob's one-time key, sends him the Megolm key over Olm
            a1 = ok(await alice.room_send(room, "m.room.message",
                                          {"msgtype": "m.text", "body": texts["alice1"]},
                                          ignore_unverified_devices=True),
                    nio.RoomSendResponse).event_id
            assert len(sent[alice.user_id]) == 1
            # one of bob's one-time keys, signed by his device
            assert len(claims[alice.user_id]) == 1
            claimed = claims[alice.user_id][0].one_time_keys[bob.user_id][bob.device_id]
            assert len(claimed) == 1 and next(iter(claimed)).startswith("signed_curve25519:"), claimed
            otk = next(iter(claimed.values()))
            assert set(otk["signatures"][bob.user_id]) == {f"ed25519:{bob.device_id}"}
            assert sent[alice.user_id][0]["algorithm"] == MEGOLM

            with database(hearth) as db:
                stored = db.rows("SELECT type, sender, json FROM events WHERE event_id = ?", a1)
                assert len(stored) == 1
                assert stored[0][:2] == ("m.room.encrypted", alice.user_id)
                # the room key waits in bob's inbox, Olm-encrypted to his device's key
                inbox = db.rows("SELECT sender, message_type, content_json FROM device_inbox "
                                "WHERE user_id = ? AND device_id = ? ORDER BY stream_id",
                                bob.user_id, bob.device_id)
                key_messages = [json.loads(c) for s, t, c in inbox
                                if (s, t) == (alice.user_id, "m.room.encrypted")]
                assert len(key_messages) == 1, inbox
                assert key_messages[0]["algorithm"] == OLM
                assert key_messages[0]["sender_key"] == alice.olm.account.identity_keys["curve25519"]
                assert set(key_messages[0]["ciphertext"]) == {bob_device.curve25519}
                # at this moment (to-device message undelivered) no plaintext is anywhere
                for name in ("alice1",):
                    assert db.tables_containing(tokens[name]) == set(), name
                    assert db.tables_containing(texts[name]) == set(), name

            # ---- bob decrypts
            got = await sync(bob)
            # nio claimed one of bob's one-time keys
            assert got.device_key_count.signed_curve25519 == upload_counts[bob.user_id] - 1
            raw_to_device = [e for e in raw_body(got).get("to_device", {}).get("events", [])
                             if e["sender"] == alice.user_id and e["type"] == "m.room.encrypted"]
            # delivered exactly as stored
            assert [e["content"] for e in raw_to_device] == key_messages
            room_keys = [e for e in got.to_device_events if isinstance(e, nio.RoomKeyEvent)]
            assert len(room_keys) == 1, got.to_device_events
            assert (room_keys[0].sender, room_keys[0].room_id) == (alice.user_id, room)
            assert room_keys[0].session_id == sent[alice.user_id][0]["session_id"]

            received: dict[str, dict[str, Any]] = dict(timeline_raw(got, room))
            events = [e for e in timeline(got, room) if getattr(e, "event_id", None) == a1]
            assert len(events) == 1, timeline(got, room)
            assert not isinstance(events[0], nio.MegolmEvent), "bob could not decrypt"
            assert isinstance(events[0], nio.RoomMessageText), events[0]
            assert (events[0].body, events[0].sender, events[0].decrypted) == (
                texts["alice1"], alice.user_id, True)

            # ---- bob answers: his own session, shared with alice's device
            await query_keys_if_needed(bob)
            b1 = ok(await bob.room_send(room, "m.room.message",
                                        {"msgtype": "m.text", "body": texts["bob1"]},
                                        ignore_unverified_devices=True),
                    nio.RoomSendResponse).event_id
            a_got = await sync(alice)
            # bob answers over the Olm session alice opened, or claims a key of hers first
            claimed_from_alice = sum(len(c.one_time_keys.get(alice.user_id, {}))
                                     for c in claims[bob.user_id])
            assert claimed_from_alice <= 1
            assert a_got.device_key_count.signed_curve25519 == (
                upload_counts[alice.user_id] - claimed_from_alice)
            assert any(isinstance(e, nio.RoomKeyEvent) and e.sender == bob.user_id
                       for e in a_got.to_device_events), a_got.to_device_events
            received.update(timeline_raw(a_got, room))
            replies = [e for e in timeline(a_got, room) if getattr(e, "event_id", None) == b1]
            assert len(replies) == 1, timeline(a_got, room)
            assert isinstance(replies[0], nio.RoomMessageText), replies[0]
            assert (replies[0].body, replies[0].sender, replies[0].decrypted) == (
                texts["bob1"], bob.user_id, True)
            assert sent[bob.user_id][0]["session_id"] != sent[alice.user_id][0]["session_id"]

            # ---- alice again, on the session bob already holds: no new key exchange
            a2 = ok(await alice.room_send(room, "m.room.message",
                                          {"msgtype": "m.text", "body": texts["alice2"]},
                                          ignore_unverified_devices=True),
                    nio.RoomSendResponse).event_id
            assert sent[alice.user_id][1]["session_id"] == sent[alice.user_id][0]["session_id"]
            got2 = await sync(bob)
            assert not [e for e in got2.to_device_events if isinstance(e, nio.RoomKeyEvent)]
            received.update(timeline_raw(got2, room))
            again = [e for e in timeline(got2, room) if getattr(e, "event_id", None) == a2]
            assert len(again) == 1 and isinstance(again[0], nio.RoomMessageText), timeline(got2, room)
            assert again[0].body == texts["alice2"]

            # the control message, in the clear
            ok(await alice.room_send(plain_room, "m.room.message",
                                     {"msgtype": "m.text", "body": control_text}),
               nio.RoomSendResponse)

            # ---- what the server keeps
            expected = {a1: (alice.user_id, sent[alice.user_id][0]),
                        b1: (bob.user_id, sent[bob.user_id][0]),
                        a2: (alice.user_id, sent[alice.user_id][1])}
            with database(hearth) as db:
                for event_id, (sender, content) in expected.items():
                    (etype, esender, text), = db.rows(
                        "SELECT type, sender, json FROM events WHERE event_id = ?", event_id)
                    assert (etype, esender) == ("m.room.encrypted", sender)
                    stored_content = json.loads(text)["content"]
                    # what the sender encrypted = what the server stored = what the peer got
                    assert stored_content == content, event_id
                    assert received[event_id]["content"] == content, event_id
                    assert received[event_id]["type"] == "m.room.encrypted"
                    assert stored_content["ciphertext"] == received[event_id]["content"]["ciphertext"]
                    # the ciphertext itself is found by the dump: the scan below is not blind
                    assert "events" in db.tables_containing(content["ciphertext"])

                # no event of the encrypted room carries a message in the clear
                clear = db.rows("SELECT event_id FROM events WHERE room_id = ? AND type = ?",
                                room, "m.room.message")
                assert clear == []
                for event_json, in db.rows("SELECT json FROM events WHERE room_id = ?", room):
                    for name, text in texts.items():
                        assert tokens[name] not in event_json, name
                for content_json, in db.rows("SELECT content_json FROM device_inbox"):
                    for name in texts:
                        assert tokens[name] not in content_json, name

                # the full dump: no table, no column holds a plaintext (or its search words)
                for name, text in texts.items():
                    assert db.tables_containing(tokens[name]) == set(), name
                    assert db.tables_containing(text) == set(), name
                # while the unencrypted control message is found, in the events and in the
                # search index (which keeps lower-cased words): the scan reaches both
                assert {"events", "event_search"} <= db.tables_containing(tokens["control"])
                assert "events" in db.tables_containing(control_text)

    asyncio.run(scenario())
