-- Resources over a plan's limits after a trial ends or a downgrade: suspended (deactivated)
-- at this time, restored by an upgrade, and deleted 30 days later.

ALTER TABLE teams ADD COLUMN suspended_at TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN suspended_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN suspended_at TIMESTAMPTZ;
