-- Notifications stored per event, not per notified user (storage/notifications.py explains the
-- format); 0018 moves the old per-user rows over.
CREATE TABLE push_event_notifications (
    stream_ordering BIGINT NOT NULL,
    part INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    users TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    PRIMARY KEY (stream_ordering, part)
);
CREATE INDEX push_event_notifications_room ON push_event_notifications (room_id, stream_ordering);
