-- Organizations, users, virtual keys and request records.
-- UUIDs are 16-byte BLOBs, timestamps RFC 3339 text in UTC, and money decimal text.

CREATE TABLE organizations (
    id              BLOB PRIMARY KEY NOT NULL,
    slug            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    primary_region  TEXT NOT NULL,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TEXT NOT NULL
);

CREATE TABLE users (
    id                     BLOB PRIMARY KEY NOT NULL,
    org_id                 BLOB NOT NULL REFERENCES organizations (id),
    email                  TEXT NOT NULL,
    role                   TEXT NOT NULL,
    data_residency_region  TEXT NOT NULL,
    active                 BOOLEAN NOT NULL DEFAULT TRUE,
    created_at             TEXT NOT NULL
);

-- Emails are unique within a region, compared case-insensitively.
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
CREATE INDEX users_org_id ON users (org_id);

CREATE TABLE api_keys (
    id              BLOB PRIMARY KEY NOT NULL,
    org_id          BLOB NOT NULL REFERENCES organizations (id),
    user_id         BLOB NOT NULL REFERENCES users (id),
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    region          TEXT NOT NULL,
    -- JSON array of model names.
    allowed_models  TEXT NOT NULL DEFAULT '[]',
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at      TEXT,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);
CREATE INDEX api_keys_org_id ON api_keys (org_id);

CREATE TABLE requests (
    id                 BLOB NOT NULL,
    stored_region      TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    org_id             BLOB NOT NULL,
    user_id            BLOB NOT NULL,
    key_id             BLOB NOT NULL,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    stream             BOOLEAN NOT NULL,
    status_code        INTEGER NOT NULL,
    error_code         TEXT,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    cost_usd           TEXT NOT NULL,
    started_at         TEXT NOT NULL,
    duration_ms        INTEGER NOT NULL,
    PRIMARY KEY (stored_region, id)
);

CREATE INDEX requests_key_id ON requests (key_id, started_at);
CREATE INDEX requests_org_id ON requests (org_id, started_at);
