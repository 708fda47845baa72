-- Prepaid credits: an append-only ledger per organization. The balance is the sum of the
-- amounts, which each entry also records as it stands after it.

CREATE TABLE credit_ledger (
    id           BLOB PRIMARY KEY NOT NULL,
    org_id       BLOB NOT NULL REFERENCES organizations (id),
    -- Position of the entry in its org's ledger, from 1.
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    -- USD as decimal text, signed: positive adds credit, negative spends it.
    amount_usd   TEXT NOT NULL,
    balance_usd  TEXT NOT NULL,
    reference    TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (org_id, seq)
);

CREATE TRIGGER credit_ledger_no_update BEFORE UPDATE ON credit_ledger
BEGIN
    SELECT RAISE(ABORT, 'credit_ledger is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER credit_ledger_no_delete BEFORE DELETE ON credit_ledger
BEGIN
    SELECT RAISE(ABORT, 'credit_ledger is append-only: DELETE is not allowed');
END;
