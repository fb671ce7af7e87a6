-- Server-side search (spec "Server Side Search") and the user directory, PostgreSQL flavour.
--
-- event_search holds one row per searchable timeline event: the tsvector of its searched key
-- (content.body of m.room.message, content.name of m.room.name, content.topic of
-- m.room.topic). homeserver/search/ splits the text into lower-case words before it reaches
-- to_tsvector('simple', ...), so both engines index the same words whatever the database's
-- locale, and no language's stemming or stop words are imposed on a multilingual server.
-- Encrypted events are never indexed; the text itself is not kept here.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    contains_url BOOLEAN NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_id, stream_ordering);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

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

-- Fill the tables from what an existing database already holds. Events whose JSON text
-- holds an escaped NUL are skipped: PostgreSQL text cannot carry NUL, so extracting such a
-- value would fail the migration. (No question marks or percent signs in these statements:
-- the engine rewrites placeholders.)
INSERT INTO event_search (stream_ordering, event_id, room_id, sender, key, contains_url, vector)
SELECT f.stream_ordering, f.event_id, f.room_id, f.sender, f.key, f.contains_url,
       to_tsvector('simple', lower(f.value #>> '{}'))
FROM (
    SELECT e.stream_ordering, e.event_id, e.room_id, e.sender,
           CASE e.type WHEN 'm.room.message' THEN 'content.body'
                       WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END AS key,
           (e.json::json -> 'content' -> 'url') IS NOT NULL AS contains_url,
           e.json::json -> 'content' -> (CASE e.type WHEN 'm.room.message' THEN 'body'
                                                     WHEN 'm.room.name' THEN 'name'
                                                     ELSE 'topic' END) AS value
    FROM events e
    WHERE ((e.type = 'm.room.message' AND e.state_key IS NULL)
           OR (e.type IN ('m.room.name', 'm.room.topic') AND e.state_key = ''))
      AND e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE
      AND strpos(e.json, '\u0000') = 0
      AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = e.event_id)
      AND NOT EXISTS (SELECT 1 FROM current_state cs WHERE cs.room_id = e.room_id
                      AND cs.type = 'm.room.encryption')
) f
WHERE json_typeof(f.value) = 'string';

INSERT INTO user_directory_rooms (room_id, public_join, world_readable)
SELECT r.room_id,
       COALESCE((SELECT (e.json::json -> 'content' ->> 'join_rule') = 'public'
                 FROM current_state cs JOIN events e ON e.event_id = cs.event_id
                 WHERE cs.room_id = r.room_id AND cs.type = 'm.room.join_rules'
                   AND cs.state_key = '' AND strpos(e.json, '\u0000') = 0), FALSE),
       COALESCE((SELECT (e.json::json -> 'content' ->> 'history_visibility') = 'world_readable'
                 FROM current_state cs JOIN events e ON e.event_id = cs.event_id
                 WHERE cs.room_id = r.room_id AND cs.type = 'm.room.history_visibility'
                   AND cs.state_key = '' AND strpos(e.json, '\u0000') = 0), FALSE)
FROM rooms r;

INSERT INTO user_directory (user_id, display_name, avatar_url, stream_ordering)
SELECT DISTINCT ON (m.user_id) m.user_id,
       CASE WHEN json_typeof(e.json::json -> 'content' -> 'displayname') = 'string'
            THEN e.json::json -> 'content' ->> 'displayname' END,
       CASE WHEN json_typeof(e.json::json -> 'content' -> 'avatar_url') = 'string'
            THEN e.json::json -> 'content' ->> 'avatar_url' END,
       m.stream_ordering
FROM room_memberships m JOIN events e ON e.event_id = m.event_id
WHERE m.membership = 'join' AND strpos(e.json, '\u0000') = 0
ORDER BY m.user_id, m.stream_ordering DESC;
