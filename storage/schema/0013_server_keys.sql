-- Other servers' signing keys, fetched from /_matrix/key/v2/server directly or through a notary
-- (/_matrix/key/v2/query), one row per (server, key id).
-- verify_key: the unpadded base64 ed25519 public key.
-- valid_until_ts: the valid_until_ts of the response the key came in, as published (the keyring
-- applies the spec's "at most 7 days after fetching" cap when it uses the key).
-- expired_ts: set for keys listed under old_verify_keys (usable for events up to then), NULL for
-- current keys.
-- from_server: who answered (the server itself or the notary); key_json: that signed response,
-- kept as received so that we can serve it again as a notary.
-- A row is only replaced by a response with a valid_until_ts at least as late (never downgraded
-- by a stale notary cache).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    from_server TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
