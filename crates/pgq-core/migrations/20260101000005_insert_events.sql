-- Set-based event insert (pgq_core::insert_events, pgq-producer's send_batch).
--
-- pgq.insert_event inserts one row per call, with a queue lookup and a PL/pgSQL call per event.
-- pgq_rs.insert_events does the same checks once (queue exists, inserts not disabled, the
-- per-transaction limit, counting this transaction's events already in the queue) and inserts all
-- rows with one INSERT ... SELECT into the queue's current event table. The rows are exactly what
-- pgq.insert_event writes: ev_id from the queue's sequence, ev_time = now(), ev_txid = the
-- current transaction, no owner, no retry count. Runs as its owner, so a role with only
-- pgq_writer can use it, as it can use pgq.insert_event.
--
-- Idempotent; lives in the pgq_rs schema.

DROP FUNCTION IF EXISTS pgq_rs.insert_events(text, text[], text[], text[], text[], text[], text[]);

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_writer;

CREATE OR REPLACE FUNCTION pgq_rs.insert_events(
    i_queue_name text,
    i_types text[],
    i_data text[],
    i_extra1 text[],
    i_extra2 text[],
    i_extra3 text[],
    i_extra4 text[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q    record;
    n    integer;
    have bigint;
    ids  bigint[];
begin
    select queue_id, queue_data_pfx, queue_cur_table, queue_event_seq,
           queue_disable_insert, queue_per_tx_limit
      into q
      from pgq.queue
     where queue_name = i_queue_name;
    if not found then
        raise exception 'Event queue not found: %', i_queue_name;
    end if;
    if q.queue_disable_insert then
        raise exception 'Writing to queue disabled';
    end if;
    n := coalesce(cardinality(i_types), 0);
    if n = 0 then
        return '{}';
    end if;
    if coalesce(cardinality(i_data), 0) <> n
       or coalesce(cardinality(i_extra1), 0) not in (0, n)
       or coalesce(cardinality(i_extra2), 0) not in (0, n)
       or coalesce(cardinality(i_extra3), 0) not in (0, n)
       or coalesce(cardinality(i_extra4), 0) not in (0, n)
    then
        raise exception 'insert_events: the arrays have different lengths';
    end if;
    if q.queue_per_tx_limit is not null then
        -- This transaction's events in any of the queue's tables (an index probe on ev_txid).
        execute format('select count(*) from %s where ev_txid = txid_current()',
                       pgq.quote_fqname(q.queue_data_pfx))
           into have;
        if have + n > q.queue_per_tx_limit then
            raise exception 'Queue ''%'' allows max % events from one TX',
                i_queue_name, q.queue_per_tx_limit;
        end if;
    end if;
    -- One statement; the ids come back as one array, in insertion order (the sequence increases
    -- along the input order within this statement).
    execute format(
        'with ins as (insert into %s (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
        || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
        || ' select nextval(%L), now(), null, null, u.t, u.d, u.x1, u.x2, u.x3, u.x4'
        || ' from unnest($1, $2, $3, $4, $5, $6) as u(t, d, x1, x2, x3, x4)'
        || ' returning ev_id)'
        || ' select array_agg(ev_id order by ev_id) from ins',
        pgq.quote_fqname(q.queue_data_pfx || '_' || q.queue_cur_table::text),
        q.queue_event_seq)
       into ids
      using i_types, i_data, i_extra1, i_extra2, i_extra3, i_extra4;
    return ids;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.insert_events(text, text[], text[], text[], text[], text[], text[]) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.insert_events(text, text[], text[], text[], text[], text[], text[]) TO pgq_writer;
