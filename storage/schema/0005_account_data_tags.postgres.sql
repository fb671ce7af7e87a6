-- Tags stored per row in room_tags (0003) become one m.tag room account data per user and room.

INSERT INTO account_data (user_id, room_id, account_data_type, content_json, stream_id)
SELECT user_id, room_id, 'm.tag',
       json_build_object('tags', json_object_agg(tag, content_json::json))::text,
       ROW_NUMBER() OVER (ORDER BY user_id, room_id)
FROM room_tags GROUP BY user_id, room_id;

DROP TABLE room_tags;
