-- One round trip to open a batch cursor (pgq_core::declare_batch_cursor, pgq-consumer's batches).
--
-- Opening a cursor over a batch needs the batch's event query (pgq.batch_event_sql) and then a
-- DECLARE: two round trips from the client. pgq_rs.open_batch_cursor does both in the server: it
-- opens the cursor named i_cursor in the caller's transaction (a portal that outlives the call
-- and closes with the transaction), read with FETCH like a declared cursor.
--
-- i_query, when not null, wraps the batch query: every '{batch_sql}' in it is replaced by the
-- batch's event query, and i_types, i_extra1 .. i_extra4 are bound as $1 .. $5 (the event
-- filter). It is the caller's own SQL, run with the caller's rights (SECURITY INVOKER) and
-- planned under this function's search_path (pg_catalog, pg_temp): qualify every name in it.
--
-- Idempotent; lives in the pgq_rs schema.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.open_batch_cursor(
    i_batch_id bigint,
    i_cursor text,
    i_query text,
    i_types text[],
    i_extra1 text[],
    i_extra2 text[],
    i_extra3 text[],
    i_extra4 text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    c           refcursor := i_cursor;
    batch_sql   text;
begin
    batch_sql := pgq.batch_event_sql(i_batch_id);
    if i_query is null then
        open c no scroll for execute batch_sql;
    else
        open c no scroll for execute replace(i_query, '{batch_sql}', batch_sql)
            using i_types, i_extra1, i_extra2, i_extra3, i_extra4;
    end if;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.open_batch_cursor(bigint, text, text, text[], text[], text[], text[], text[]) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.open_batch_cursor(bigint, text, text, text[], text[], text[], text[], text[]) TO pgq_reader;
