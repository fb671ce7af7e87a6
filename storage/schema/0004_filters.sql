-- Filters uploaded by clients (POST /user/{userId}/filter), numbered per user from 0.

CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    -- the filter as uploaded, re-encoded with sorted keys so that a re-upload can be matched
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
