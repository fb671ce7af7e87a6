-- Send-to-device messages and server-side room key backups.

-- One row per (message, recipient device), waiting until the device acknowledges it with the
-- next /sync. stream_id is the message's position on the "to_device" sync stream; content_json
-- is stored as the client sent it and never inspected (olm payloads are opaque to the server).
CREATE TABLE device_inbox (
    stream_id BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    message_type TEXT NOT NULL,
    content_json TEXT NOT NULL
);
CREATE INDEX device_inbox_device ON device_inbox (user_id, device_id, stream_id);

-- The to_device stream's high-water mark. Delivered messages are deleted, so MAX(stream_id) of
-- device_inbox could move back across a restart and hand out positions a client has already
-- acknowledged; this single row remembers the highest position ever handed out.
CREATE TABLE to_device_stream (
    position BIGINT NOT NULL
);
INSERT INTO to_device_stream (position) VALUES (0);

-- Transaction ids of PUT /sendToDevice, so a retried request stores nothing new.
CREATE TABLE to_device_txns (
    sender TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);
CREATE INDEX to_device_txns_ts ON to_device_txns (received_ts);

-- Key backup versions of a user. Versions are numbered per user and never reused: a deleted
-- version keeps its row (deleted = TRUE) so that deleting it again succeeds, as the spec asks.
-- etag counts the changes to the version's keys.
CREATE TABLE room_key_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data_json TEXT NOT NULL,
    etag BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- The backed-up keys; session_data is the client's encrypted blob as JSON text, never parsed.
CREATE TABLE room_key_backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
