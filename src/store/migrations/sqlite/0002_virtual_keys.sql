-- Virtual keys (issue 5). Times are milliseconds since the Unix epoch, UTC.
-- Kept in step with ../postgres/0002_virtual_keys.sql.

CREATE TABLE virtual_keys (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL,
    -- `sha256:<64 hex digits>` of the key; the key itself is never stored.
    key_hash       TEXT    NOT NULL UNIQUE,
    -- The key's first characters, so that people can tell keys apart in lists.
    key_prefix     TEXT    NOT NULL,
    -- A JSON array of model names; empty means every model.
    allowed_models TEXT    NOT NULL,
    -- Limits; NULL means none.
    rpm            INTEGER CHECK (rpm >= 1),
    tpm            INTEGER CHECK (tpm >= 1),
    max_concurrent INTEGER CHECK (max_concurrent >= 1),
    -- Millionths of a US dollar, so that both engines add spend exactly.
    budget_micro_usd INTEGER CHECK (budget_micro_usd >= 0),
    budget_period  TEXT    CHECK (budget_period IN ('day', 'week', 'month')),
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    CHECK ((budget_micro_usd IS NULL) = (budget_period IS NULL))
) STRICT;

-- A name belongs to one active key at a time; a revoked key's name may be used again.
CREATE UNIQUE INDEX virtual_keys_active_name ON virtual_keys (name) WHERE revoked_at IS NULL;

INSERT INTO change_counters (scope, value) VALUES ('keys', 0);
