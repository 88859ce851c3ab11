-- Rows written by triggers (src/session/trigger_rows.rs). A write whose
-- table has a trigger that computes values a follower would compute
-- differently is captured (0003_capture.sql) and applied on followers with
-- the table's triggers left out; when such a trigger also INSERTs into other
-- tables (an audit trigger: INSERT INTO audit VALUES (NEW.id, now(), ...)),
-- chorus puts this trigger on those tables, on the leader only:
--
--   CREATE TRIGGER _chorus_capture AFTER INSERT ON audit
--       FOR EACH ROW EXECUTE FUNCTION _chorus.capture_row();
--
-- It notes each row a trigger inserted (trigger depth 2 or more: a row the
-- client's own statement inserted is logged with that statement) in the
-- session's temporary table _chorus_trigger_rows, which chorus creates and
-- empties around a captured write and reads right after it. Sessions that
-- have no such table (anything but chorus's own connections) note nothing.
CREATE FUNCTION _chorus.capture_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_trigger_depth() > 1 AND to_regclass('pg_temp._chorus_trigger_rows') IS NOT NULL THEN
        INSERT INTO pg_temp._chorus_trigger_rows (tab, row) VALUES (TG_RELID, _chorus.row_text(NEW));
    END IF;
    RETURN NULL;
END
$fn$;
