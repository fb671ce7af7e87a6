"""Events as clients see them (spec "ClientEvent"), with redactions applied and unsigned data.

Given the reading user, events also carry bundled aggregations in ``unsigned["m.relations"]``
(spec "Aggregations of child events"), computed for the whole batch at once and limited to the
child events that user may see.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from crypto.redaction import redact_event
from homeserver.rooms.relations import REFERENCE, REPLACE, THREAD, Aggregations, Bundle
from homeserver.rooms.visibility import Visibility
from storage.events import EventRow, EventStore
from storage.relations import RelationStore

# Bundles nest once: a thread's latest event carries its own edits and references, and the
# events inside those bundles carry none.
_MAX_BUNDLE_DEPTH = 2


class ClientSerializer:
    def __init__(self, store: EventStore, clock_ms: Any,
                 aggregations: Aggregations | None = None) -> None:
        self.store = store
        self._now = clock_ms
        self.aggregations = aggregations or Aggregations(RelationStore(store.db, store),
                                                         Visibility(store))

    async def serialize(self, rows: Iterable[EventRow], *, include_room_id: bool = True,
                        txn_ids: dict[str, str] | None = None, user_id: str | None = None,
                        _bundle_depth: int = 0) -> list[dict[str, Any]]:
        """Client events for ``rows``; with ``user_id`` (the reader), bundled aggregations too."""
        rows = list(rows)
        redactions = await self.store.get_redactions(r.event.event_id for r in rows)
        redacting_ids = [rid for ids in redactions.values() for rid in ids]
        redacting = await self.store.get_rows(redacting_ids) if redacting_ids else {}
        bundles: dict[str, Bundle] = {}
        if user_id is not None and _bundle_depth < _MAX_BUNDLE_DEPTH:
            bundles = await self.aggregations.bundles(user_id, rows)
        relations = await self._serialize_bundles(bundles, include_room_id, user_id,
                                                  _bundle_depth + 1)
        now = self._now()
        out = []
        for r in rows:
            ev = r.event
            pdu: Mapping[str, Any] = ev.pdu  # not copied: only read (redaction makes a new one)
            unsigned: dict[str, Any] = {"age": max(0, now - ev.origin_server_ts)}
            valid = [redacting[i] for i in redactions.get(ev.event_id, []) if i in redacting
                     and self._redaction_applies(redacting[i], r)]
            if valid:
                pdu = redact_event(pdu, ev.room_version)
                unsigned["redacted_because"] = (await self.serialize([valid[0]]))[0]
            client: dict[str, Any] = {
                "content": pdu.get("content", {}),
                "event_id": ev.event_id,
                "origin_server_ts": ev.origin_server_ts,
                "sender": ev.sender,
                "type": ev.type,
            }
            if include_room_id:
                client["room_id"] = ev.room_id
            if ev.is_state:
                client["state_key"] = ev.state_key
            if ev.type == "m.room.redaction" and ev.redacts:
                client["redacts"] = ev.redacts
            if txn_ids and ev.event_id in txn_ids:
                unsigned["transaction_id"] = txn_ids[ev.event_id]
            rel = dict(relations.get(ev.event_id, {}))
            if valid:
                # Edits are not bundled with a redacted original (spec "Event replacements").
                rel.pop(REPLACE, None)
            if rel:
                unsigned["m.relations"] = rel
            unsigned.update({k: v for k, v in ev.unsigned.items() if k not in unsigned})
            client["unsigned"] = unsigned
            out.append(client)
        return out

    async def _serialize_bundles(self, bundles: dict[str, Bundle], include_room_id: bool,
                                 user_id: str | None, depth: int) -> dict[str, dict[str, Any]]:
        """event id -> its ``m.relations`` object; the events inside are serialized in batches."""
        if not bundles:
            return {}
        latest_rows = [b.thread.latest for b in bundles.values() if b.thread]
        latest = {e["event_id"]: e for e in await self.serialize(
            latest_rows, include_room_id=include_room_id, user_id=user_id, _bundle_depth=depth)}
        edit_rows = [b.replace for b in bundles.values() if b.replace]
        edits = {e["event_id"]: e for e in await self.serialize(
            edit_rows, include_room_id=include_room_id)}
        out: dict[str, dict[str, Any]] = {}
        for event_id, b in bundles.items():
            rel: dict[str, Any] = {}
            if b.thread:
                rel[THREAD] = {"latest_event": latest[b.thread.latest.event.event_id],
                               "count": b.thread.count,
                               "current_user_participated": b.thread.participated}
            if b.replace:
                rel[REPLACE] = edits[b.replace.event.event_id]
            if b.references:
                rel[REFERENCE] = {"chunk": [{"event_id": i} for i in b.references]}
            out[event_id] = rel
        return out

    @staticmethod
    def _redaction_applies(redaction: EventRow, target: EventRow) -> bool:
        """A redaction applies if it was accepted and (v3+) its sender shares the target's domain
        or was allowed to redact others when it was sent (checked when the redaction was created)."""
        return not redaction.rejected and not redaction.soft_failed
