-- Billing currencies, exchange rates and invoices. Amounts are decimal text.

-- The ISO 4217 code of the currency that the org's invoices use.
ALTER TABLE organizations ADD COLUMN billing_currency TEXT NOT NULL DEFAULT 'USD';

-- Units of a currency per USD, from the time they take effect. Rates are never changed: a new
-- rate is a new row, so that every invoice's rate stays on record.
CREATE TABLE fx_rates (
    id            BLOB PRIMARY KEY NOT NULL,
    currency      TEXT NOT NULL,
    rate          TEXT NOT NULL,
    effective_at  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (currency, effective_at)
);

-- One invoice per org and calendar month, with the rate it was converted at.
CREATE TABLE invoices (
    id                BLOB PRIMARY KEY NOT NULL,
    org_id            BLOB NOT NULL REFERENCES organizations (id),
    -- The month, such as '2026-11'.
    period            TEXT NOT NULL,
    period_start      TEXT NOT NULL,
    period_end        TEXT NOT NULL,
    currency          TEXT NOT NULL,
    fx_rate           TEXT NOT NULL,
    fx_effective_at   TEXT,
    total             TEXT NOT NULL,
    issued_at         TEXT NOT NULL,
    UNIQUE (org_id, period)
);

CREATE TABLE invoice_items (
    invoice_id  BLOB NOT NULL REFERENCES invoices (id),
    position    INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    -- The line's USD amount, unrounded, and its amount in the invoice's currency, rounded.
    amount_usd  TEXT NOT NULL,
    amount      TEXT NOT NULL,
    charged     INTEGER NOT NULL,
    PRIMARY KEY (invoice_id, position)
);
