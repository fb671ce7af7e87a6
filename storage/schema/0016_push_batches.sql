-- Push evaluation in batches (homeserver/push/processor.py).

-- Notifications keyed by (user, stream ordering), which names the event as well as its id does
-- and keeps a user's rows in stream order: /notifications and the pushers read them by that
-- key, with no second index. Unread rows are indexed apart (a partial index: rows born read and
-- rows marked read leave it), for the counts in /sync. The old table's rows move over as they are.
CREATE TABLE push_notifications_by_stream (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    actions_json TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    unread BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
INSERT INTO push_notifications_by_stream (user_id, stream_ordering, event_id, room_id, thread_id,
    actions_json, highlight, unread, ts)
    SELECT user_id, stream_ordering, event_id, room_id, thread_id, actions_json, highlight, unread, ts
    FROM push_notifications;
DROP TABLE push_notifications;
ALTER TABLE push_notifications_by_stream RENAME TO push_notifications;
CREATE INDEX push_notifications_unread ON push_notifications (user_id, room_id, stream_ordering)
    WHERE unread;

-- How far push rule evaluation has got in the events stream. At start-up the events after it
-- are evaluated (again), so an event committed just before a crash or shutdown still notifies.
-- One row (id = 1), written at the first start with push on; no row: start where the stream is.
CREATE TABLE push_evaluation_position (
    id BIGINT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
