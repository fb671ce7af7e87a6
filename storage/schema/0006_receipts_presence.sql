-- Read receipts (m.read, m.read.private) and presence.
--
-- One row per (room, receipt type, user, thread): the latest receipt replaces the previous one.
-- thread_id is '' for an unthreaded receipt.
-- event_stream is the acknowledged event's stream ordering, so a receipt never moves back.
-- stream_id orders every change on the "receipts" sync stream.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);

-- The presence of each user whose presence was ever set; stream_id orders the changes on the
-- "presence" sync stream. explicit: the state was set with PUT /presence (a /sync with
-- set_presence=online does not override an explicit 'unavailable').
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL,
    explicit BOOLEAN NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
