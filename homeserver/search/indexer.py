"""Keeps the search index in step with the timeline: a persist hook on EventStore.

It runs inside the transaction that stores each timeline event, so an event is searchable
exactly when it is stored, and a redaction takes its target out of the index in the same
transaction that records the redaction.

What is indexed (spec "Server Side Search", ``room_events``): ``content.body`` of
m.room.message, ``content.name`` of m.room.name, and of m.room.topic ``content.topic`` with
the text/plain ``body`` of ``content["m.topic"]``. Encrypted rooms are not searched: once a
room has m.room.encryption in its state nothing more from it is indexed (m.room.encrypted
events never are — the server cannot read them anyway).
"""

from __future__ import annotations

from typing import Any

from homeserver.rooms.events import Event
from homeserver.search.text import index_text
from storage.database import Transaction
from storage.search import SearchEntry, SearchStore

KEY_BODY = "content.body"
KEY_NAME = "content.name"
KEY_TOPIC = "content.topic"
ALL_KEYS = (KEY_BODY, KEY_NAME, KEY_TOPIC)
# The event type each key is searched in.
KEY_TYPES = {KEY_BODY: "m.room.message", KEY_NAME: "m.room.name", KEY_TOPIC: "m.room.topic"}


def _topic_text(content: Any) -> str | None:
    parts = []
    topic = content.get("topic")
    if isinstance(topic, str):
        parts.append(topic)
    rich = content.get("m.topic")
    if isinstance(rich, dict) and isinstance(rich.get("m.text"), list):
        for rep in rich["m.text"]:
            if isinstance(rep, dict) and isinstance(rep.get("body"), str) \
                    and rep.get("mimetype", "text/plain") == "text/plain" and rep["body"] not in parts:
                parts.append(rep["body"])
    return "\n".join(parts) if parts else None


def searchable_text(event: Event) -> tuple[str, str] | None:
    """(key, text) of an event the index should hold, or None."""
    content = event.content
    if event.type == "m.room.message" and event.state_key is None:
        body = content.get("body")
        return (KEY_BODY, body) if isinstance(body, str) else None
    if event.type == "m.room.name" and event.state_key == "":
        name = content.get("name")
        return (KEY_NAME, name) if isinstance(name, str) else None
    if event.type == "m.room.topic" and event.state_key == "":
        topic = _topic_text(content)
        return (KEY_TOPIC, topic) if topic is not None else None
    return None


class SearchIndexer:
    def __init__(self, store: SearchStore) -> None:
        self.store = store

    def on_persist(self, txn: Transaction, event: Event, stream_ordering: int) -> None:
        if event.type == "m.room.redaction":
            if event.redacts:
                self.store.delete_txn(txn, event.redacts, event.room_id)
            return
        found = searchable_text(event)
        if found is None:
            return
        key, text = found
        words = index_text(text)
        if not words or self.store.room_is_encrypted_txn(txn, event.room_id) \
                or self.store.is_redacted_txn(txn, event.event_id):
            return
        self.store.index_txn(txn, SearchEntry(
            event_id=event.event_id, room_id=event.room_id, sender=event.sender,
            stream_ordering=stream_ordering, key=key,
            contains_url="url" in event.content, text=words))
