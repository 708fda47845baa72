-- USD spend limits of keys, teams and organizations, and the holds that requests in flight
-- place on them. Amounts are whole micro-dollars (USD 1 = 1,000,000) because request costs
-- are rounded to 6 decimal places. Integer amounts make each reservation one exact
-- conditional update.

CREATE TABLE budgets (
    -- Kind of owner: 'key', 'team' or 'org'. scope_id is the owner's id.
    scope            TEXT NOT NULL,
    scope_id         BLOB NOT NULL,
    org_id           BLOB NOT NULL REFERENCES organizations (id),
    max_micros       INTEGER NOT NULL CHECK (max_micros >= 0),
    -- Cost of the requests settled since the budget was created or its spend was last reset.
    spent_micros     INTEGER NOT NULL DEFAULT 0,
    -- Sum of the worst-case costs that admitted requests hold until they settle or expire.
    reserved_micros  INTEGER NOT NULL DEFAULT 0,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (scope, scope_id)
);

-- One row per budget on which an admitted request reserved an amount. The row is deleted when
-- the request's record is stored, or by the sweeper after the hold expires.
CREATE TABLE budget_holds (
    request_id     BLOB NOT NULL,
    scope          TEXT NOT NULL,
    scope_id       BLOB NOT NULL,
    amount_micros  INTEGER NOT NULL,
    -- Set once the hold expired and its amount went back to the budget. The row stays, so
    -- that the request still adds its cost to the spend if it ends later.
    released       INTEGER NOT NULL DEFAULT 0,
    expires_at     TEXT NOT NULL,
    PRIMARY KEY (request_id, scope)
);

CREATE INDEX budget_holds_expires_at ON budget_holds (expires_at);
