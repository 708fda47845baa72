-- Billing currencies, exchange rates and invoices.

-- The ISO 4217 code of the currency that the org's invoices use.
ALTER TABLE organizations ADD COLUMN billing_currency TEXT NOT NULL DEFAULT 'USD';

-- Units of a currency per USD, from the time they take effect. Rates are never changed: a new
-- rate is a new row, so that every invoice's rate stays on record.
CREATE TABLE fx_rates (
    id            UUID PRIMARY KEY,
    currency      TEXT NOT NULL,
    rate          NUMERIC NOT NULL CHECK (rate > 0),
    effective_at  TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (currency, effective_at)
);

-- One invoice per org and calendar month, with the rate it was converted at.
CREATE TABLE invoices (
    id                UUID PRIMARY KEY,
    org_id            UUID NOT NULL REFERENCES organizations (id),
    -- The month, such as '2026-11'.
    period            TEXT NOT NULL,
    period_start      TIMESTAMPTZ NOT NULL,
    period_end        TIMESTAMPTZ NOT NULL,
    currency          TEXT NOT NULL,
    fx_rate           NUMERIC NOT NULL,
    fx_effective_at   TIMESTAMPTZ,
    total             NUMERIC NOT NULL,
    issued_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, period)
);

CREATE TABLE invoice_items (
    invoice_id  UUID NOT NULL REFERENCES invoices (id),
    position    INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    -- The line's USD amount, unrounded, and its amount in the invoice's currency, rounded.
    amount_usd  NUMERIC NOT NULL,
    amount      NUMERIC NOT NULL,
    charged     BOOLEAN NOT NULL,
    PRIMARY KEY (invoice_id, position)
);
