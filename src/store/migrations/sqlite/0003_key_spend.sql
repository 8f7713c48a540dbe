-- Spend per virtual key and budget period (issue 5). Kept in step with
-- ../postgres/0003_key_spend.sql.

CREATE TABLE key_spend (
    key_id       INTEGER NOT NULL REFERENCES virtual_keys (id),
    -- The start of the budget period (milliseconds since the Unix epoch, UTC).
    period_start INTEGER NOT NULL,
    -- Millionths of a US dollar, added exactly.
    micro_usd    INTEGER NOT NULL CHECK (micro_usd >= 0),
    requests     INTEGER NOT NULL CHECK (requests >= 0),
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (key_id, period_start)
) STRICT;
