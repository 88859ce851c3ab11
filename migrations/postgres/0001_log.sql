-- chorus's bookkeeping in every replicated database, on every node.
-- Applied by src/replication/migrate.rs inside one transaction per file, under
-- an advisory lock, and recorded in _chorus.migrations (created by the runner).

-- The LSN counter. On the leader the first write of every transaction runs
-- `UPDATE _chorus.lsn SET lsn = lsn + 1 RETURNING lsn`: the row lock serializes
-- writing transactions until they commit, and the value rolls back with them,
-- so LSNs are gapless and their order is a valid serial order. On a follower
-- the applier sets it to the applied LSN (what a promotion continues from).
CREATE TABLE _chorus.lsn (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    lsn bigint NOT NULL
);
INSERT INTO _chorus.lsn VALUES (true, 0);

-- The statement log. One transaction = one LSN = rows seq 0..n:
--   seq 0, kind 'h': header; sql holds the session context (a SET script) the
--                    statements ran under;
--   kind 'q': a simple-protocol query text (may hold several statements);
--   kind 'x': an extended-protocol statement: sql, the Parse's parameter type
--             OIDs, and params = the Bind message's tail from the parameter
--             format codes on, as the client sent it;
--   kind 'c': COPY ... FROM STDIN: sql is the COPY statement, params the data.
-- A follower keeps a copy of what it applied, so it can serve the log if promoted.
CREATE TABLE _chorus.log (
    lsn bigint NOT NULL,
    seq integer NOT NULL,
    kind "char" NOT NULL,
    sql text,
    param_types oid[],
    params bytea,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (lsn, seq)
);

-- What this node has applied (followers); the applier advances it in the same
-- transaction as the entry, so a restart resumes exactly after it.
CREATE TABLE _chorus.applied (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    lsn bigint NOT NULL,
    applied_at timestamptz
);
INSERT INTO _chorus.applied VALUES (true, 0, NULL);

-- Appliers LISTEN on this channel: a committed log entry wakes them at once.
CREATE FUNCTION _chorus.notify_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('_chorus_log', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notify_log AFTER INSERT ON _chorus.log
    FOR EACH STATEMENT EXECUTE FUNCTION _chorus.notify_log();
