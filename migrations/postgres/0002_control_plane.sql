-- Teams, user locale, model access policies, key scope and rotation, and the audit chain.

ALTER TABLE organizations ADD COLUMN allowed_models TEXT[] NOT NULL DEFAULT '{}';

CREATE TABLE teams (
    id              UUID PRIMARY KEY,
    org_id          UUID NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL,
    allowed_models  TEXT[] NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, name)
);

ALTER TABLE users ADD COLUMN team_id UUID REFERENCES teams (id);
ALTER TABLE users ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';

ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'inference';
ALTER TABLE api_keys ADD COLUMN rotated_at TIMESTAMPTZ;
-- The secret replaced by the last rotation keeps working until previous_key_expires_at.
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_key_expires_at TIMESTAMPTZ;
CREATE UNIQUE INDEX api_keys_previous_key_hash ON api_keys (previous_key_hash)
    WHERE previous_key_hash IS NOT NULL;

-- Append-only, hash-chained log of control actions. Entries hold ids, never emails, names or
-- secrets.
CREATE TABLE audit_log (
    seq            BIGINT PRIMARY KEY,
    id             UUID NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    action         TEXT NOT NULL,
    target_kind    TEXT NOT NULL,
    target_id      TEXT,
    org_id         UUID,
    source_ip      TEXT,
    region         TEXT NOT NULL,
    result         TEXT NOT NULL,
    justification  TEXT,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);

CREATE INDEX audit_log_org_id ON audit_log (org_id, seq);

-- The chain's head lives apart from the log, so that deleting or truncating the newest entries
-- leaves a head that points past the last entry.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);

INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION synaxis_reject_audit_change() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION synaxis_reject_audit_change();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION synaxis_reject_audit_change();

CREATE FUNCTION synaxis_check_audit_head() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_head cannot be deleted or truncated';
    END IF;
    IF NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'audit_head cannot move back from % to %', OLD.seq, NEW.seq;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_head_forward_only
    BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION synaxis_check_audit_head();

CREATE TRIGGER audit_head_no_truncate
    BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION synaxis_check_audit_head();
