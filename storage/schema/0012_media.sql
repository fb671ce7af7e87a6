-- The media repository: one row per mxc:// id, local uploads (origin = this server) and, once
-- federation exists, cached copies of other servers' media.
-- The content itself is a file under media_store_path named by its SHA-256, shared by every row
-- (and thumbnail) with the same bytes; a file is deleted when no row references it any more.
-- sha256 and media_length are NULL while an id made with POST /create waits for its content;
-- unused_expires_at is when such an id expires.
-- authenticated: uploaded while enable_authenticated_media was on, so the legacy
-- unauthenticated endpoints refuse it.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    content_type TEXT,
    upload_name TEXT,
    media_length BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    unused_expires_at BIGINT,
    last_access_ts BIGINT NOT NULL,
    authenticated BOOLEAN NOT NULL,
    quarantined_by TEXT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_user ON media (user_id, created_ts);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_last_access ON media (last_access_ts);
CREATE INDEX media_unused_expires ON media (unused_expires_at);

-- Thumbnails by the configured size they were made for (the image itself may be smaller).
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    media_length BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
