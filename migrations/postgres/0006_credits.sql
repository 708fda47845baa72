-- Prepaid credits: an append-only ledger per organization. The balance is the sum of the
-- amounts, which each entry also records as it stands after it.

CREATE TABLE credit_ledger (
    id           UUID PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES organizations (id),
    -- Position of the entry in its org's ledger, from 1.
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    -- USD, signed: positive adds credit, negative spends it. Unconstrained NUMERIC keeps every
    -- digit, so that nothing is rounded before an invoice.
    amount_usd   NUMERIC NOT NULL,
    balance_usd  NUMERIC NOT NULL,
    reference    TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, seq)
);

CREATE FUNCTION synaxis_reject_ledger_change() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_ledger is append-only: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER credit_ledger_append_only
    BEFORE UPDATE OR DELETE ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION synaxis_reject_ledger_change();

CREATE TRIGGER credit_ledger_no_truncate
    BEFORE TRUNCATE ON credit_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION synaxis_reject_ledger_change();
