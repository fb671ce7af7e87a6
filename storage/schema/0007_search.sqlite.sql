-- Server-side search (spec "Server Side Search") and the user directory, SQLite flavour.
--
-- event_search holds one row per searchable timeline event: the text of its searched key
-- (content.body of m.room.message, content.name of m.room.name, content.topic of
-- m.room.topic), already split into lower-case words by homeserver/search/. Encrypted events
-- are never indexed. An FTS5 index reads the text from this table (external content), so
-- the text is stored once; rowid of the index = stream_ordering.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    contains_url BOOLEAN NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_id, stream_ordering);

CREATE VIRTUAL TABLE event_search_fts USING fts5(
    value, content='event_search', content_rowid='stream_ordering',
    tokenize='unicode61 remove_diacritics 0'
);

-- Rooms whose joined members anyone on the server may find in the user directory, beside
-- the rooms published in the room directory (rooms.is_public): join rule public or history
-- world_readable, as of the room's current state.
CREATE TABLE user_directory_rooms (
    room_id TEXT PRIMARY KEY,
    public_join BOOLEAN NOT NULL DEFAULT FALSE,
    world_readable BOOLEAN NOT NULL DEFAULT FALSE
);

-- The profile a user last joined a room with: the directory's name and avatar for users
-- without a local account (local users show their global profile).
CREATE TABLE user_directory (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    stream_ordering BIGINT NOT NULL
);

-- Fill the tables from what an existing database already holds. (Search text written here
-- is the raw value, lower-cased by the index tokenizer; new rows are pre-split in Python.)
INSERT INTO event_search (stream_ordering, event_id, room_id, sender, key, contains_url, value)
SELECT e.stream_ordering, e.event_id, e.room_id, e.sender,
       CASE e.type WHEN 'm.room.message' THEN 'content.body'
                   WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END,
       json_type(e.json, '$.content.url') IS NOT NULL,
       json_extract(e.json, CASE e.type WHEN 'm.room.message' THEN '$.content.body'
                                        WHEN 'm.room.name' THEN '$.content.name'
                                        ELSE '$.content.topic' END)
FROM events e
WHERE ((e.type = 'm.room.message' AND e.state_key IS NULL)
       OR (e.type IN ('m.room.name', 'm.room.topic') AND e.state_key = ''))
  AND json_type(e.json, CASE e.type WHEN 'm.room.message' THEN '$.content.body'
                                    WHEN 'm.room.name' THEN '$.content.name'
                                    ELSE '$.content.topic' END) = 'text'
  AND e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE
  AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = e.event_id)
  AND NOT EXISTS (SELECT 1 FROM current_state cs WHERE cs.room_id = e.room_id
                  AND cs.type = 'm.room.encryption');

INSERT INTO event_search_fts (event_search_fts) VALUES ('rebuild');

INSERT INTO user_directory_rooms (room_id, public_join, world_readable)
SELECT r.room_id,
       COALESCE((SELECT json_extract(e.json, '$.content.join_rule') = 'public'
                 FROM current_state cs JOIN events e ON e.event_id = cs.event_id
                 WHERE cs.room_id = r.room_id AND cs.type = 'm.room.join_rules'
                   AND cs.state_key = ''), FALSE),
       COALESCE((SELECT json_extract(e.json, '$.content.history_visibility') = 'world_readable'
                 FROM current_state cs JOIN events e ON e.event_id = cs.event_id
                 WHERE cs.room_id = r.room_id AND cs.type = 'm.room.history_visibility'
                   AND cs.state_key = ''), FALSE)
FROM rooms r;

-- SQLite returns the bare columns of the row that holds MAX(stream_ordering).
INSERT INTO user_directory (user_id, display_name, avatar_url, stream_ordering)
SELECT m.user_id,
       CASE WHEN json_type(e.json, '$.content.displayname') = 'text'
            THEN json_extract(e.json, '$.content.displayname') END,
       CASE WHEN json_type(e.json, '$.content.avatar_url') = 'text'
            THEN json_extract(e.json, '$.content.avatar_url') END,
       MAX(m.stream_ordering)
FROM room_memberships m JOIN events e ON e.event_id = m.event_id
WHERE m.membership = 'join'
GROUP BY m.user_id;
