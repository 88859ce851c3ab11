-- Capture mode (src/session/capture.rs): a write whose text would compute
-- other values on a follower (random(), gen_random_uuid(), clock_timestamp(),
-- a volatile DEFAULT, sequence ids in an unordered INSERT ... SELECT, a LIMIT
-- without ORDER BY) runs on the leader with one more RETURNING column,
-- _chorus.row_text(t.*), and the log carries the rows it wrote; a follower
-- applies them with _chorus.apply_rows.
--
-- Both functions fix every setting that changes how a value reads or prints
-- (DateStyle, IntervalStyle, TimeZone, extra_float_digits, bytea_output,
-- lc_monetary), so a row prints on the leader and parses on a follower the
-- same whatever the client's session had set. The client encoding still
-- applies to the text on the wire; the follower replays under the same one.

-- A written row as the text of its row type.
CREATE FUNCTION _chorus.row_text(r anyelement) RETURNS text
LANGUAGE sql STABLE
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET timezone = 'UTC'
SET extra_float_digits = 3 SET bytea_output = 'hex' SET lc_monetary = 'C'
AS $$ SELECT r::text $$;

-- Apply captured rows (each the row_text of a row of tab) as the leader's
-- statement left them:
--   'insert': insert them, every column but generated ones, identity values too;
--   'upsert': the same, a row whose primary key exists overwriting it
--             (INSERT ... ON CONFLICT DO UPDATE on the leader);
--   'update': overwrite the rows with the same primary key;
--   'delete': delete the rows with the same primary key.
-- Exactly one row must change per captured row: anything else means this
-- node's data differs from the leader's, and the error stops the applier.
-- quiet: the table's triggers ran on the leader and changed only these rows;
-- they must not run again (session_replication_role = replica, which needs
-- a superuser or, from PostgreSQL 15, GRANT SET ON PARAMETER).
CREATE FUNCTION _chorus.apply_rows(tab regclass, op text, rows text[], quiet boolean) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET timezone = 'UTC'
SET extra_float_digits = 3 SET bytea_output = 'hex' SET lc_monetary = 'C'
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    rowtype regtype := (SELECT c.reltype::regtype FROM pg_class c WHERE c.oid = tab);
    cols text[];
    keys text[];
    settable text[];
    stmt text;
    role text := current_setting('session_replication_role');
    changed bigint;
    want bigint := coalesce(array_length(rows, 1), 0);
BEGIN
    IF want = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = tab AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) INTO keys
      FROM pg_index i
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = tab AND i.indisprimary;
    IF op <> 'insert' AND keys IS NULL THEN
        RAISE EXCEPTION 'chorus: % has no primary key to apply captured rows by', tab USING ERRCODE = 'CHA02';
    END IF;
    SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) INTO settable
      FROM pg_attribute a
     WHERE a.attrelid = tab AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
       AND a.attidentity <> 'a' AND quote_ident(a.attname) <> ALL (coalesce(keys, '{}'));
    IF op IN ('insert', 'upsert') THEN
        stmt := format('INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM unnest($1::text[]::%s[]) AS r',
                       tab, array_to_string(cols, ', '),
                       (SELECT string_agg('r.' || c, ', ') FROM unnest(cols) AS c), rowtype);
        IF op = 'upsert' THEN
            stmt := stmt || format(' ON CONFLICT (%s) DO ', array_to_string(keys, ', '));
            IF settable IS NULL THEN
                stmt := stmt || 'NOTHING';
            ELSE
                stmt := stmt || format('UPDATE SET (%s) = ROW(%s)', array_to_string(settable, ', '),
                                       (SELECT string_agg('EXCLUDED.' || c, ', ') FROM unnest(settable) AS c));
            END IF;
        END IF;
    ELSIF op = 'update' THEN
        IF settable IS NULL THEN
            RETURN want;
        END IF;
        stmt := format('UPDATE %s AS t SET (%s) = ROW(%s) FROM unnest($1::text[]::%s[]) AS r WHERE (%s) = (%s)',
                       tab, array_to_string(settable, ', '),
                       (SELECT string_agg('r.' || c, ', ') FROM unnest(settable) AS c), rowtype,
                       (SELECT string_agg('t.' || c, ', ') FROM unnest(keys) AS c),
                       (SELECT string_agg('r.' || c, ', ') FROM unnest(keys) AS c));
    ELSIF op = 'delete' THEN
        stmt := format('DELETE FROM %s AS t USING unnest($1::text[]::%s[]) AS r WHERE (%s) = (%s)',
                       tab, rowtype,
                       (SELECT string_agg('t.' || c, ', ') FROM unnest(keys) AS c),
                       (SELECT string_agg('r.' || c, ', ') FROM unnest(keys) AS c));
    ELSE
        RAISE EXCEPTION 'chorus: unknown captured operation %', op USING ERRCODE = 'CHA02';
    END IF;
    IF quiet THEN
        PERFORM set_config('session_replication_role', 'replica', true);
    END IF;
    EXECUTE stmt USING rows;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF quiet THEN
        PERFORM set_config('session_replication_role', role, true);
    END IF;
    IF changed <> want THEN
        RAISE EXCEPTION 'chorus: the leader''s % changed % rows of %, here it changed %', op, want, tab, changed
            USING ERRCODE = 'CHA02';
    END IF;
    RETURN changed;
END
$fn$;
