-- The request log (issue 5): one row per API request, with its bodies when they were
-- sampled. Times are milliseconds since the Unix epoch, UTC. No foreign key to virtual_keys:
-- a log row must never fail to be written, and outlives what it names. Kept in step with
-- ../postgres/0004_request_log.sql.

CREATE TABLE request_log (
    id             INTEGER PRIMARY KEY,
    -- `x-request-id`, the client's or one the gateway made.
    request_id     TEXT    NOT NULL,
    -- When the request arrived.
    created_at     INTEGER NOT NULL,
    key_id         INTEGER,
    key_name       TEXT,
    -- The matched route, e.g. `/v1/chat/completions`.
    endpoint       TEXT    NOT NULL,
    -- The model the client asked for, the deployment that answered, the model it named.
    model          TEXT,
    deployment     TEXT,
    response_model TEXT,
    status         INTEGER NOT NULL,
    stream         INTEGER NOT NULL CHECK (stream IN (0, 1)),
    duration_ms    INTEGER NOT NULL,
    first_token_ms INTEGER,
    input_tokens   INTEGER,
    output_tokens  INTEGER,
    -- A JSON array of strings.
    finish_reasons TEXT    NOT NULL,
    prompt_name    TEXT,
    prompt_version INTEGER,
    ending         TEXT    NOT NULL CHECK (ending IN ('complete', 'failed', 'abandoned')),
    error          TEXT,
    -- JSON, secrets redacted; NULL when the bodies were not sampled.
    request_body   TEXT,
    response_body  TEXT
) STRICT;

-- Exports and pruning select by time.
CREATE INDEX request_log_created_at ON request_log (created_at);
