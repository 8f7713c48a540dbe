-- Per-key recording of prompt and completion text on trace spans (issue 5, tracing): 1 keeps
-- the text of this key's requests, whatever `telemetry.otlp.record_content` says. Kept in step
-- with ../sqlite/0005_key_record_content.sql. A number rather than BOOLEAN: both engines then
-- read it through sqlx's `Any` driver the same way.

ALTER TABLE virtual_keys ADD COLUMN record_content BIGINT NOT NULL DEFAULT 0
    CHECK (record_content IN (0, 1));
