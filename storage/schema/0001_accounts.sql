-- Accounts, devices, tokens, sessions' IP records, profiles, user-interactive auth.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    created_ts BIGINT NOT NULL,
    last_login_ts BIGINT,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest BOOLEAN NOT NULL DEFAULT FALSE,
    user_type TEXT,
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated_ts BIGINT,
    -- set by deactivation with erase=true: the user asked for their data to be forgotten
    erased BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users(user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 digests: a copy of the database does not hand out sessions.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(user_id),
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    valid_until_ts BIGINT,
    refresh_token_hash TEXT,
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(user_id),
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expiry_ts BIGINT,
    -- set when this token has been exchanged; it stays valid until its successor is used
    next_token_hash TEXT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

-- One row per (session, IP, user agent), refreshed in batches; purged after user_ips_max_age.
CREATE TABLE user_ips (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    last_seen_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, ip, user_agent)
);
CREATE INDEX user_ips_last_seen ON user_ips (last_seen_ts);

CREATE TABLE profiles (
    user_id TEXT NOT NULL REFERENCES users(user_id),
    field TEXT NOT NULL,
    value_json TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    purpose TEXT NOT NULL,
    user_id TEXT,
    request_json TEXT NOT NULL,
    completed_json TEXT NOT NULL,
    params_json TEXT NOT NULL
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

-- User ids are unique regardless of case, as Synapse enforces at registration.
CREATE UNIQUE INDEX users_lower_id ON users (LOWER(user_id));
