-- Stripped room state sent with an invite from another server (spec: invite_room_state), shown
-- to the invitee in /sync while the room itself is unknown here.
CREATE TABLE remote_invite_state (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    state_json TEXT NOT NULL
);

-- /send transactions already processed, so a retried transaction is answered, not re-applied.
CREATE TABLE received_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX received_transactions_ts ON received_transactions (received_ts);
