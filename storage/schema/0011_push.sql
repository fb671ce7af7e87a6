-- Push: user-defined push rules, changes to server-default rules, notifications, pushers.

-- A user's own rules. priority orders the rules of one kind: higher is more important.
-- conditions_json is set for override/underride rules, pattern for content rules.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority BIGINT NOT NULL,
    conditions_json TEXT,
    pattern TEXT,
    actions_json TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- What a user changed in a server-default rule; NULL keeps the default.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions_json TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- One row per (user, event) whose push rules said "notify". thread_id is 'main' or the thread
-- root's event id. unread turns FALSE when a read receipt (or the user's own event) passes it.
CREATE TABLE push_notifications (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    actions_json TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    unread BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX push_notifications_user_stream ON push_notifications (user_id, stream_ordering);
CREATE INDEX push_notifications_unread ON push_notifications (user_id, unread, room_id, stream_ordering);

-- How far each user has read, per room and thread ('' = an unthreaded receipt, which covers
-- every thread): a notification stored after the receipt arrived is born read.
CREATE TABLE push_read_positions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);

-- HTTP pushers. last_stream_ordering: the last notification handed to the gateway (or skipped),
-- so delivery resumes there after a restart. failing_since: when the current failure run began.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data_json TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    failing_since BIGINT,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);
