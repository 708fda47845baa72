-- Users' consent records, versioned per user and scope: each grant or withdrawal is a new
-- version, the latest one decides, and the history is kept.

CREATE TABLE consents (
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,
    version      BIGINT NOT NULL CHECK (version >= 1),
    granted      BOOLEAN NOT NULL,
    -- JSON array of region ids that a grant allows; empty allows every region.
    regions      TEXT NOT NULL,
    -- Who recorded it: 'user' (the user's own key) or 'operator'.
    source       TEXT NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, scope, version)
);

-- Transfer mechanism recorded on an org by an operator, such as standard contractual clauses.
ALTER TABLE organizations ADD COLUMN transfer_mechanism TEXT;
