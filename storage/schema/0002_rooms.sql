-- Rooms: events as received, the event graph, compact state, current state, memberships.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    created_ts BIGINT NOT NULL,
    -- published in the public room directory
    is_public BOOLEAN NOT NULL DEFAULT FALSE
);

-- Every event, local or remote, exactly as received: json is the PDU's text (canonical for
-- local events), so m.room.encrypted content is stored byte for byte.
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    json TEXT NOT NULL,
    -- outliers are stored for their content but are not part of the room's timeline
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    rejected_reason TEXT,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    -- the state group of the room's state before and after this event
    state_group_before BIGINT,
    state_group_after BIGINT,
    -- relations (m.relates_to) for /relations, threads, edits and reactions
    relates_to TEXT,
    rel_type TEXT,
    -- txn_id of the sending device, for idempotent PUT /send
    txn_key TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_ordering);
CREATE INDEX events_relates ON events (relates_to, rel_type);
CREATE UNIQUE INDEX events_txn ON events (txn_key);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- State is a chain of deltas: a group with prev_group NULL is a full snapshot; otherwise its
-- entries are the changes over prev_group (event_id NULL: the key is removed). A new snapshot
-- is written every few dozen deltas, so reading a state is bounded and storage grows with the
-- number of state changes, not rooms x events.
CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    delta_depth INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (state_group, type, state_key)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Every membership change, with its position: visibility checks and /sync read these.
CREATE TABLE room_memberships (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, room_id, stream_ordering);

-- The latest membership of each user (local or remote) in each room.
CREATE TABLE current_membership (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX current_membership_user ON current_membership (user_id, membership);

CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE event_reports (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT,
    user_id TEXT NOT NULL,
    reason TEXT,
    score INTEGER,
    received_ts BIGINT NOT NULL
);
