-- Organizations, users, virtual keys and request records.

CREATE TABLE organizations (
    id              UUID PRIMARY KEY,
    slug            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    primary_region  TEXT NOT NULL,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id                     UUID PRIMARY KEY,
    org_id                 UUID NOT NULL REFERENCES organizations (id),
    email                  TEXT NOT NULL,
    role                   TEXT NOT NULL,
    data_residency_region  TEXT NOT NULL,
    active                 BOOLEAN NOT NULL DEFAULT TRUE,
    created_at             TIMESTAMPTZ NOT NULL
);

-- Emails are unique within a region, compared case-insensitively.
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
CREATE INDEX users_org_id ON users (org_id);

CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    org_id          UUID NOT NULL REFERENCES organizations (id),
    user_id         UUID NOT NULL REFERENCES users (id),
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    region          TEXT NOT NULL,
    allowed_models  TEXT[] NOT NULL DEFAULT '{}',
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);
CREATE INDEX api_keys_org_id ON api_keys (org_id);

-- One row per inference request that presented a valid key. Partitioned by the region that
-- stores it; there is no default partition, so a row for an unknown region fails to insert.
CREATE TABLE requests (
    id                 UUID NOT NULL,
    stored_region      TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    org_id             UUID NOT NULL,
    user_id            UUID NOT NULL,
    key_id             UUID NOT NULL,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    stream             BOOLEAN NOT NULL,
    status_code        INTEGER NOT NULL,
    error_code         TEXT,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost_usd           NUMERIC(20, 6) NOT NULL,
    started_at         TIMESTAMPTZ NOT NULL,
    duration_ms        BIGINT NOT NULL,
    PRIMARY KEY (stored_region, id)
) PARTITION BY LIST (stored_region);

CREATE INDEX requests_key_id ON requests (key_id, started_at);
CREATE INDEX requests_org_id ON requests (org_id, started_at);

-- Creates the partition of `requests` for one region when it is missing. The partition name is
-- derived from the region id, which the daemon validates as lowercase letters, digits and
-- hyphens.
CREATE FUNCTION synaxis_ensure_request_partition(region TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF region !~ '^[a-z0-9-]+$' THEN
        RAISE EXCEPTION 'invalid region id %', region;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF requests FOR VALUES IN (%L)',
        'requests_' || replace(region, '-', '_'),
        region
    );
END;
$$;
