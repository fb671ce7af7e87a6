"""Events as clients see them (spec "ClientEvent"), with redactions applied and unsigned data."""

from __future__ import annotations

from typing import Any, Iterable

from crypto.redaction import redact_event
from storage.events import EventRow, EventStore


class ClientSerializer:
    def __init__(self, store: EventStore, clock_ms: Any) -> None:
        self.store = store
        self._now = clock_ms

    async def serialize(self, rows: Iterable[EventRow], *, include_room_id: bool = True,
                        txn_ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
        rows = list(rows)
        redactions = await self.store.get_redactions(r.event.event_id for r in rows)
        redacting_ids = [rid for ids in redactions.values() for rid in ids]
        redacting = await self.store.get_rows(redacting_ids) if redacting_ids else {}
        now = self._now()
        out = []
        for r in rows:
            ev = r.event
            pdu: dict[str, Any] = dict(ev.pdu)
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
            unsigned.update({k: v for k, v in ev.unsigned.items() if k not in unsigned})
            client["unsigned"] = unsigned
            out.append(client)
        return out

    @staticmethod
    def _redaction_applies(redaction: EventRow, target: EventRow) -> bool:
        """A redaction applies if it was accepted and (v3+) its sender shares the target's domain
        or was allowed to redact others when it was sent (checked when the redaction was created)."""
        return not redaction.rejected and not redaction.soft_failed
