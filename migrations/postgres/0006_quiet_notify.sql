-- The log's NOTIFY wakes every chorus process's feed at each commit. A
-- chorus that is the only one feeding the database needs no wake-up for its
-- own commits (its sessions hand it their LSNs), and a NOTIFY costs every
-- committing backend a global queue lock and a signal: a transaction that
-- sets _chorus.notify to 'off' (chorus's sessions do, while their feed sees
-- no other chorus listening; followers' appliers always) sends none.
CREATE OR REPLACE FUNCTION _chorus.notify_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.current_setting('_chorus.notify', true) IS DISTINCT FROM 'off' THEN
        PERFORM pg_catalog.pg_notify('_chorus_log', '');
    END IF;
    RETURN NULL;
END $$;
