-- Account data, global (room_id '') and per room, with one stream position per write so /sync
-- can ask "what changed between two positions". Room tags live here as the m.tag room account
-- data; the room_tags table of 0003 is folded into it by 0005_account_data_tags.*.sql.

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    account_data_type TEXT NOT NULL,
    content_json TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, account_data_type)
);

CREATE UNIQUE INDEX account_data_stream_id ON account_data (stream_id);

CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
