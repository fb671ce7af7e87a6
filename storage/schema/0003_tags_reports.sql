-- Room tags (served as the m.tag room account data) and reports of rooms and users.

CREATE TABLE room_tags (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    content_json TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, tag)
);

CREATE TABLE user_reports (
    id BIGINT PRIMARY KEY,
    target_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT,
    received_ts BIGINT NOT NULL
);
