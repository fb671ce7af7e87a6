-- The per-user notification rows of 0011/0016 move to 0017's rows per event: each event's
-- users in one row (parts of any size are fine to read), each user's actions kept as a group of
-- its own, keyed by its rank.
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
