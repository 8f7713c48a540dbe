-- The request log (issue 5): one row per API request, with its bodies when they were
-- sampled. Times are milliseconds since the Unix epoch, UTC. No foreign key to virtual_keys:
-- a log row must never fail to be written, and outlives what it names. Kept in step with
-- ../sqlite/0004_request_log.sql.

CREATE TABLE request_log (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `x-request-id`, the client's or one the gateway made.
    request_id     TEXT    NOT NULL,
    -- When the request arrived.
    created_at     BIGINT NOT NULL,
    key_id         BIGINT,
    key_name       TEXT,
    -- The matched route, e.g. `/v1/chat/completions`.
    endpoint       TEXT    NOT NULL,
    -- The model the client asked for, the deployment that answered, the model it named.
    model          TEXT,
    deployment     TEXT,
    response_model TEXT,
    status         BIGINT NOT NULL,
    stream         BIGINT NOT NULL CHECK (stream IN (0, 1)),
    duration_ms    BIGINT NOT NULL,
    first_token_ms BIGINT,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    -- A JSON array of strings.
    finish_reasons TEXT    NOT NULL,
    prompt_name    TEXT,
    prompt_version BIGINT,
    ending         TEXT    NOT NULL CHECK (ending IN ('complete', 'failed', 'abandoned')),
    error          TEXT,
    -- JSON, secrets redacted; NULL when the bodies were not sampled.
    request_body   TEXT,
    response_body  TEXT
);

-- Exports and pruning select by time.
CREATE INDEX request_log_created_at ON request_log (created_at);
