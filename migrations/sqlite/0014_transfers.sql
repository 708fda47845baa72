-- Cross-border transfers: one row per request that a region processed for a user of another
-- jurisdiction, with the legal basis that allowed it. The user and org live in another region,
-- so their ids carry no foreign key.

CREATE TABLE transfers (
    id           BLOB PRIMARY KEY,
    request_id   TEXT NOT NULL,
    user_id      BLOB NOT NULL,
    org_id       BLOB NOT NULL,
    from_region  TEXT NOT NULL,
    to_region    TEXT NOT NULL,
    regulation   TEXT NOT NULL,
    -- The basis as JSON, such as {"regulation": "gdpr", "basis": "explicit_consent"}.
    legal_basis  TEXT NOT NULL,
    citation     TEXT NOT NULL,
    at           TEXT NOT NULL
);

CREATE INDEX transfers_user_id ON transfers (user_id, at);
