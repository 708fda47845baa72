-- The replica of other regions' key directories: one entry per key, as its home region last
-- published it. `entry` is the entry's JSON; `version` orders the publications of one key.

CREATE TABLE key_directory (
    key_id TEXT PRIMARY KEY,
    home_region TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    previous_key_hash TEXT,
    version BIGINT NOT NULL,
    entry TEXT NOT NULL
);

CREATE INDEX key_directory_key_hash ON key_directory (key_hash);
CREATE INDEX key_directory_previous_key_hash ON key_directory (previous_key_hash);
