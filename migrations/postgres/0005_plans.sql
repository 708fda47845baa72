-- Plans: the plan and plan version that each organization is on, and its per-field overrides
-- of that plan's entitlements.

ALTER TABLE organizations ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';
ALTER TABLE organizations ADD COLUMN plan_version BIGINT NOT NULL DEFAULT 1;
-- JSON text of the overrides (`synaxis_shared::plans::Overrides`); NULL when there are none.
ALTER TABLE organizations ADD COLUMN plan_overrides TEXT;
