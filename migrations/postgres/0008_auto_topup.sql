-- Auto top-up: the balance under which an org's credits are topped up, the amount added, and
-- the invoice lines that the offline invoice provider records for those top-ups.

ALTER TABLE organizations ADD COLUMN auto_topup_threshold_usd NUMERIC;
ALTER TABLE organizations ADD COLUMN auto_topup_amount_usd NUMERIC;

CREATE TABLE invoice_lines (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES organizations (id),
    -- 'auto_topup'.
    kind        TEXT NOT NULL,
    amount_usd  NUMERIC NOT NULL,
    -- 'pending' until the invoice that carries the line is issued.
    status      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX invoice_lines_org_id ON invoice_lines (org_id, created_at);
