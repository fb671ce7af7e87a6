-- Tags stored per row in room_tags (0003) become one m.tag room account data per user and room.
-- (The outer json() keeps the aggregate an object: the window function drops its JSON subtype.)

INSERT INTO account_data (user_id, room_id, account_data_type, content_json, stream_id)
SELECT user_id, room_id, 'm.tag',
       json_object('tags', json(json_group_object(tag, json(content_json)))),
       ROW_NUMBER() OVER (ORDER BY user_id, room_id)
FROM room_tags GROUP BY user_id, room_id;

DROP TABLE room_tags;
