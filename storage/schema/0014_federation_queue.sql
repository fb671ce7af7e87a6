-- Outgoing federation: a durable outbox per destination server, the transaction in flight to
-- each destination, and each destination's retry (backoff) state.

-- One row per remote server we have talked to (or tried to).
-- retry_interval_ms = 0 means healthy; otherwise the destination is not contacted before
-- retry_last_ts + retry_interval_ms. failure_ts is when the current run of failures began.
-- txn_seq counts the transactions ever built for the destination, so transaction ids stay
-- unique across restarts. txn_id/txn_ts name the transaction in flight (NULL: none): it is
-- retried with the same id and body until the destination answers it, as the spec asks.
-- last_sent_stream is the highest outbox position of the last transaction that went through.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0,
    failure_ts BIGINT,
    txn_seq BIGINT NOT NULL DEFAULT 0,
    txn_id TEXT,
    txn_ts BIGINT,
    last_sent_stream BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX federation_destinations_retry ON federation_destinations (retry_interval_ms);

-- PDUs waiting for a destination, by event id (the JSON is read from events when sending).
-- stream_id orders the outbox (PDUs and EDUs share one sequence); txn_id is NULL while the
-- row waits and names its transaction once it has been put into one. Rows are deleted when
-- their transaction is answered.
CREATE TABLE federation_outbox_pdus (
    stream_id BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    txn_id TEXT,
    UNIQUE (destination, event_id)
);
CREATE INDEX federation_outbox_pdus_dest ON federation_outbox_pdus (destination, txn_id, stream_id);

-- EDUs waiting for a destination. edu_key, when set, coalesces: a newer EDU with the same
-- (destination, edu_type, edu_key) replaces a waiting one, so only the latest typing state,
-- receipt or presence goes out. A row already in a transaction is never replaced.
CREATE TABLE federation_outbox_edus (
    stream_id BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    edu_key TEXT,
    content_json TEXT NOT NULL,
    txn_id TEXT
);
CREATE INDEX federation_outbox_edus_dest ON federation_outbox_edus (destination, txn_id, stream_id);
CREATE UNIQUE INDEX federation_outbox_edus_key ON federation_outbox_edus (destination, edu_type, edu_key)
    WHERE txn_id IS NULL AND edu_key IS NOT NULL;

-- The outbox's high-water mark: sent rows are deleted, so MAX(stream_id) could move back
-- across a restart; this single row remembers the highest position ever handed out.
CREATE TABLE federation_outbox_stream (
    position BIGINT NOT NULL
);
INSERT INTO federation_outbox_stream (position) VALUES (0);
