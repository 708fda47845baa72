-- Auto top-up: the balance under which an org's credits are topped up, the amount added, and
-- the invoice lines that the offline invoice provider records for those top-ups.

-- USD as decimal text; NULL when auto top-up is off.
ALTER TABLE organizations ADD COLUMN auto_topup_threshold_usd TEXT;
ALTER TABLE organizations ADD COLUMN auto_topup_amount_usd TEXT;

CREATE TABLE invoice_lines (
    id          BLOB PRIMARY KEY NOT NULL,
    org_id      BLOB NOT NULL REFERENCES organizations (id),
    -- 'auto_topup'.
    kind        TEXT NOT NULL,
    -- USD as decimal text.
    amount_usd  TEXT NOT NULL,
    -- 'pending' until the invoice that carries the line is issued.
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE INDEX invoice_lines_org_id ON invoice_lines (org_id, created_at);
