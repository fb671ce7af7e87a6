-- Simplified sliding sync (MSC4186): what each connection has been sent, so that an incremental
-- request sends only what is new to it, and a restart does not make every client start over.

-- One connection per (user, device, conn_id); a request without a position replaces it.
CREATE TABLE sliding_sync_connections (
    connection_key BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_used_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX sliding_sync_connections_conn ON sliding_sync_connections (user_id, device_id, conn_id);
CREATE INDEX sliding_sync_connections_used ON sliding_sync_connections (last_used_ts);

-- The connection's state as of each position handed out and not yet superseded (the position a
-- request came with, and the one its response carries, in case the response is lost).
-- state_json is the server's own bookkeeping (rooms sent, their configs, lazy members sent).
CREATE TABLE sliding_sync_positions (
    position BIGINT PRIMARY KEY,
    connection_key BIGINT NOT NULL,
    state_json TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX sliding_sync_positions_conn ON sliding_sync_positions (connection_key);

-- The highest position or connection key ever handed out: rows are deleted, so the tables' MAX
-- could move back across a restart and give an old client token a new meaning.
CREATE TABLE sliding_sync_ids (
    high_water BIGINT NOT NULL
);
INSERT INTO sliding_sync_ids (high_water) VALUES (0);
