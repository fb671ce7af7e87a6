-- Notifications stored per event, not per notified user (storage/notifications.py explains the
-- format). The old per-user rows move over: each event's users in one row (parts of any size
-- are fine to read), each user's actions kept as a group of its own, keyed by its rank.
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

INSERT INTO push_event_notifications (stream_ordering, part, event_id, room_id, thread_id, ts,
    users, groups_json)
    SELECT stream_ordering, 0, MIN(event_id), MIN(room_id), MIN(thread_id), MIN(ts),
        E'\t' || string_agg(user_id || ' ' || (CASE WHEN highlight THEN 'H' ELSE 'N' END)
            || rank::TEXT, E'\t') || E'\t',
        json_object_agg(rank::TEXT, actions_json::JSON)::TEXT
    FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY stream_ordering ORDER BY user_id) - 1 AS rank
          FROM push_notifications) AS ranked
    GROUP BY stream_ordering;
DROP TABLE push_notifications;
