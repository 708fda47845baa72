-- Self-service signup: the end of an org's trial, when it has one.

ALTER TABLE organizations ADD COLUMN trial_ends_at TEXT;
