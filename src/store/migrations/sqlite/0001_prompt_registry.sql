-- The prompt registry (issue 4). Times are milliseconds since the Unix epoch, UTC.
-- Kept in step with ../postgres/0001_prompt_registry.sql: the same tables, columns and
-- constraints, in SQLite's dialect. STRICT makes SQLite refuse a value of the wrong type,
-- as Postgres does.

CREATE TABLE prompts (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    -- The last push or label move.
    updated_at INTEGER NOT NULL
) STRICT;

-- Versions are immutable once written, numbered from 1 per prompt without gaps.
CREATE TABLE prompt_versions (
    prompt_id    INTEGER NOT NULL REFERENCES prompts (id),
    version      INTEGER NOT NULL CHECK (version >= 1),
    -- JSON text, kept byte for byte: the caller hashes exactly these bytes.
    content      TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    message      TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (prompt_id, version)
) STRICT;

-- Where each label points now.
CREATE TABLE prompt_labels (
    prompt_id  INTEGER NOT NULL,
    label      TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    PRIMARY KEY (prompt_id, label),
    FOREIGN KEY (prompt_id, version) REFERENCES prompt_versions (prompt_id, version)
) STRICT;

-- Every label move, in order; never updated. `cause` tells a move that followed a push of
-- `latest` from one asked for.
CREATE TABLE label_moves (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id    INTEGER NOT NULL REFERENCES prompts (id),
    label        TEXT    NOT NULL,
    from_version INTEGER,
    to_version   INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    cause        TEXT    NOT NULL CHECK (cause IN ('push', 'move')),
    moved_at     INTEGER NOT NULL,
    FOREIGN KEY (prompt_id, from_version) REFERENCES prompt_versions (prompt_id, version),
    FOREIGN KEY (prompt_id, to_version) REFERENCES prompt_versions (prompt_id, version)
) STRICT;

CREATE INDEX label_moves_by_prompt ON label_moves (prompt_id, id);

-- One counter per aggregate, raised by every write in the write's own transaction: replicas
-- poll it to learn that their caches are stale. A row rather than max(id) of some table,
-- because Postgres may commit identity values out of order and a poller would miss one.
CREATE TABLE change_counters (
    scope TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

INSERT INTO change_counters (scope, value) VALUES ('prompts', 0);
