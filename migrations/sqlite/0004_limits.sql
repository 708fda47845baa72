-- Rate limits: a key's requests and tokens per minute, and the limit set of each organization,
-- team and user.

ALTER TABLE api_keys ADD COLUMN rpm_limit BIGINT CHECK (rpm_limit > 0);
ALTER TABLE api_keys ADD COLUMN tpm_limit BIGINT CHECK (tpm_limit > 0);

-- JSON text of a limit set (`synaxis_shared::limits::LimitSet`); NULL when the scope has none.
ALTER TABLE organizations ADD COLUMN limits TEXT;
ALTER TABLE teams ADD COLUMN limits TEXT;
ALTER TABLE users ADD COLUMN limits TEXT;
