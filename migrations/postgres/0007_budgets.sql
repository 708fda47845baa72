-- Spend limits in USD of keys, teams and organizations, and the reservations of the requests
-- in flight against them. Amounts are whole micro-dollars (USD 1 = 1,000,000), the precision
-- of a request's cost, so that a reservation is one exact conditional update.

CREATE TABLE budgets (
    -- 'key', 'team' or 'org'.
    scope            TEXT NOT NULL,
    scope_id         UUID NOT NULL,
    org_id           UUID NOT NULL REFERENCES organizations (id),
    max_micros       BIGINT NOT NULL CHECK (max_micros >= 0),
    -- The cost of settled requests since the budget was set or its spend was reset.
    spent_micros     BIGINT NOT NULL DEFAULT 0,
    -- The worst-case cost of admitted requests not settled yet.
    reserved_micros  BIGINT NOT NULL DEFAULT 0,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, scope_id)
);

-- One row per budget that an admitted request holds an amount of, until its record is stored
-- or the hold expires.
CREATE TABLE budget_holds (
    request_id     UUID NOT NULL,
    scope          TEXT NOT NULL,
    scope_id       UUID NOT NULL,
    amount_micros  BIGINT NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (request_id, scope)
);

CREATE INDEX budget_holds_expires_at ON budget_holds (expires_at);
