-- Teams, user locale, model access policies, key scope and rotation, and the audit chain.

ALTER TABLE organizations ADD COLUMN allowed_models TEXT NOT NULL DEFAULT '[]';

CREATE TABLE teams (
    id              BLOB PRIMARY KEY NOT NULL,
    org_id          BLOB NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL,
    -- JSON array of model names and globs.
    allowed_models  TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT NOT NULL,
    UNIQUE (org_id, name)
);

ALTER TABLE users ADD COLUMN team_id BLOB REFERENCES teams (id);
ALTER TABLE users ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';

ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'inference';
ALTER TABLE api_keys ADD COLUMN rotated_at TEXT;
-- The secret replaced by the last rotation keeps working until previous_key_expires_at.
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_key_expires_at TEXT;
CREATE UNIQUE INDEX api_keys_previous_key_hash ON api_keys (previous_key_hash)
    WHERE previous_key_hash IS NOT NULL;

-- Append-only, hash-chained log of control actions. Entries hold ids, never emails, names or
-- secrets.
CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY NOT NULL,
    id             BLOB NOT NULL,
    at             TEXT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    action         TEXT NOT NULL,
    target_kind    TEXT NOT NULL,
    target_id      TEXT,
    org_id         BLOB,
    source_ip      TEXT,
    region         TEXT NOT NULL,
    result         TEXT NOT NULL,
    justification  TEXT,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);

CREATE INDEX audit_log_org_id ON audit_log (org_id, seq);

-- The chain's head lives apart from the log, so that deleting the newest entries leaves a head
-- that points past the last entry.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE is not allowed');
END;

CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head cannot be deleted');
END;

CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
WHEN NEW.seq < OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'audit_head cannot move back');
END;
