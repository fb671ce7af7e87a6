-- End-to-end encryption keys: device identity keys, one-time and fallback keys, cross-signing
-- keys, cross-signing signatures, and the device-list change stream. Every key is kept as the
-- JSON text the client uploaded, signatures intact.

CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- upload_seq orders keys by upload: claims hand out the oldest first (one per row, once).
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    upload_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys (user_id, device_id, algorithm, upload_seq);

-- At most one fallback key per (device, algorithm); used is set when a claim hands it out.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- key_type: master, self_signing or user_signing; key_id: "ed25519:<public key>".
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures added by /keys/signatures/upload. target_key_id is a device id or a master
-- public key; signer_key_id is the signing key's id ("ed25519:...").
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX e2e_signatures_signer ON e2e_signatures (signer_user_id, signer_key_id);

-- The device_lists stream: a row with room_id NULL says a user's devices or keys changed; a
-- row with a room says the user joined (membership 'join') or left that room.
CREATE TABLE e2e_device_list_stream (
    stream_id BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    room_id TEXT,
    membership TEXT
);
CREATE INDEX e2e_device_list_stream_user ON e2e_device_list_stream (user_id, stream_id);
CREATE INDEX e2e_device_list_stream_room ON e2e_device_list_stream (room_id, stream_id);
