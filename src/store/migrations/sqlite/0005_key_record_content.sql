-- Per-key recording of prompt and completion text on trace spans (issue 5, tracing): 1 keeps
-- the text of this key's requests, whatever `telemetry.otlp.record_content` says. Kept in step
-- with ../postgres/0005_key_record_content.sql.

ALTER TABLE virtual_keys ADD COLUMN record_content INTEGER NOT NULL DEFAULT 0
    CHECK (record_content IN (0, 1));
