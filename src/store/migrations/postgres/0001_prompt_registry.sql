-- The prompt registry (issue 4). Times are milliseconds since the Unix epoch, UTC.
-- Kept in step with ../sqlite/0001_prompt_registry.sql: the same tables, columns and
-- constraints, in Postgres's dialect. Integers are BIGINT throughout, so that every integer
-- the code reads (max() included) is 64 bits on both engines.

CREATE TABLE prompts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    -- The last push or label move.
    updated_at BIGINT NOT NULL
);

-- Versions are immutable once written, numbered from 1 per prompt without gaps.
CREATE TABLE prompt_versions (
    prompt_id    BIGINT NOT NULL REFERENCES prompts (id),
    version      BIGINT NOT NULL CHECK (version >= 1),
    -- JSON text, kept byte for byte (jsonb would reorder keys): the caller hashes exactly
    -- these bytes.
    content      TEXT   NOT NULL,
    content_hash TEXT   NOT NULL,
    author       TEXT   NOT NULL,
    message      TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (prompt_id, version)
);

-- Where each label points now.
CREATE TABLE prompt_labels (
    prompt_id  BIGINT NOT NULL,
    label      TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT   NOT NULL,
    PRIMARY KEY (prompt_id, label),
    FOREIGN KEY (prompt_id, version) REFERENCES prompt_versions (prompt_id, version)
);

-- Every label move, in order; never updated. `cause` tells a move that followed a push of
-- `latest` from one asked for.
CREATE TABLE label_moves (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prompt_id    BIGINT NOT NULL REFERENCES prompts (id),
    label        TEXT   NOT NULL,
    from_version BIGINT,
    to_version   BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    cause        TEXT   NOT NULL CHECK (cause IN ('push', 'move')),
    moved_at     BIGINT NOT NULL,
    FOREIGN KEY (prompt_id, from_version) REFERENCES prompt_versions (prompt_id, version),
    FOREIGN KEY (prompt_id, to_version) REFERENCES prompt_versions (prompt_id, version)
);

CREATE INDEX label_moves_by_prompt ON label_moves (prompt_id, id);

-- One counter per aggregate, raised by every write in the write's own transaction: replicas
-- poll it to learn that their caches are stale. A row rather than max(id) of some table,
-- because identity values may commit out of order and a poller would miss one.
CREATE TABLE change_counters (
    scope TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);

INSERT INTO change_counters (scope, value) VALUES ('prompts', 0);
