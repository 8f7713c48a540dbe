-- Eval runs (issue 6): one row per `pasarela eval run` of one suite, its targets (which prompt
-- version each tested, how it scored), and the run blessed as each suite's baseline. Times are
-- milliseconds since the Unix epoch, UTC. Kept in step with ../sqlite/0006_eval_runs.sql.

CREATE TABLE eval_runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    suite       TEXT    NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    -- `in-process` or the URL the run called.
    endpoint    TEXT    NOT NULL,
    passed      BIGINT  NOT NULL CHECK (passed IN (0, 1)),
    -- The whole report as JSON: targets, every attempt's output, verdicts and figures.
    report      TEXT    NOT NULL
);
CREATE INDEX eval_runs_by_suite ON eval_runs (suite, id);

CREATE TABLE eval_run_targets (
    run_id          BIGINT  NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
    label           TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    -- The registry prompt version the target called, if it called one.
    prompt_name     TEXT,
    prompt_version  BIGINT,
    attempts        BIGINT  NOT NULL CHECK (attempts >= 0),
    passed_attempts BIGINT  NOT NULL CHECK (passed_attempts >= 0),
    met_threshold   BIGINT  NOT NULL CHECK (met_threshold IN (0, 1)),
    PRIMARY KEY (run_id, label)
);
CREATE INDEX eval_run_targets_by_prompt ON eval_run_targets (prompt_name, prompt_version);

CREATE TABLE eval_baselines (
    suite      TEXT    PRIMARY KEY,
    run_id     BIGINT  NOT NULL REFERENCES eval_runs (id),
    blessed_at BIGINT  NOT NULL,
    blessed_by TEXT    NOT NULL
);
