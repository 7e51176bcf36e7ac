-- pgq_rs SQL backend, part 3: producing events.
--
-- insert_event_raw is where every insert ends (insert_event, retried events): it draws the
-- event id from the queue's sequence first (so an id is used up even when the insert is then
-- refused, as pgq does), checks the queue (inserts disabled outside replica mode, the
-- per-transaction limit), and writes the row into the queue's current event table.
--
-- These are the hot path of producing: PL/pgSQL (its plans are cached; an SQL function's body is
-- planned at every call), and insert_event_raw, which runs with its caller's rights, without a
-- SET clause (its names are all qualified; inside insert_event it runs under that function's
-- search_path). A SET clause costs about 2 µs a call, so only the SECURITY DEFINER function has
-- one.
--
-- The insert itself: an event table's name depends on the queue and its current table, and a
-- dynamic INSERT (EXECUTE) is parsed and planned at every call (about 10 µs, half the cost of an
-- insert). So pgq_rs.sql_backend_insert is generated PL/pgSQL with one static INSERT per event
-- table of the first MAX queues (by id), whose plans each session caches; create_queue and
-- drop_queue generate it again. A queue it does not know (beyond MAX, or created in a
-- transaction that could not yet see another one's new queue) takes the dynamic INSERT.

-- The generated inserter: true when it wrote the row, false when it does not know this queue or
-- table (then the caller inserts with EXECUTE). This body is the one for no queues.
CREATE OR REPLACE FUNCTION pgq_rs.sql_backend_insert(
    qid int4, cur int4, ev_id bigint, ev_time timestamptz, ev_owner int4, ev_retry int4,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text,
    ev_extra4 text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
begin
    return false;
end;
$$;

-- Generate pgq_rs.sql_backend_insert for the queues there are now: a balanced tree of IFs on the
-- queue id (a handful of comparisons whatever the number of queues), then one IF per event table.
CREATE OR REPLACE FUNCTION pgq_rs.sql_backend_build_inserter()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    max_queues constant int4 := 256;
    ids     int4[];
    leaves  text[];
    body    text;
begin
    -- One generation at a time (concurrent CREATE OR REPLACE of one function fails); a later
    -- one sees the queues of those that committed before it. The lock is the one create_queue
    -- takes anyway when it makes a table inherit the template, so a transaction that drops and
    -- creates queues cannot deadlock with another that creates one.
    lock table pgq.event_template in share update exclusive mode;
    select coalesce(array_agg(q.queue_id order by q.queue_id), '{}'),
           coalesce(array_agg((
               select string_agg(
                          case when i = 0 then 'if' else 'elsif' end
                          || ' cur = ' || i || ' then insert into '
                          || pgq.quote_fqname(q.queue_data_pfx || '_' || i)
                          || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
                          || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4) values (ev_id,'
                          || ' ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1,'
                          || ' ev_extra2, ev_extra3, ev_extra4); return true;',
                          ' ' order by i)
                      || ' end if;'
                 from generate_series(0, q.queue_ntables - 1) i)
               order by q.queue_id), '{}')
      into ids, leaves
      from (select queue_id, queue_data_pfx, queue_ntables
              from pgq.queue
             where queue_ntables > 0
             order by queue_id
             limit max_queues) q;
    body := 'begin ' || pgq_rs.sql_backend_inserter_tree(ids, leaves, 1, cardinality(ids))
            || ' return false; end;';
    execute format($f$
        CREATE OR REPLACE FUNCTION pgq_rs.sql_backend_insert(
            qid int4, cur int4, ev_id bigint, ev_time timestamptz, ev_owner int4,
            ev_retry int4, ev_type text, ev_data text, ev_extra1 text, ev_extra2 text,
            ev_extra3 text, ev_extra4 text)
        RETURNS boolean
        LANGUAGE plpgsql
        AS %L$f$, body);
end;
$$;

-- The IFs choosing among queues lo..hi of ids (their leaves): binary search on the id.
CREATE OR REPLACE FUNCTION pgq_rs.sql_backend_inserter_tree(ids int4[], leaves text[], lo int4,
                                                           hi int4)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
declare
    mid int4;
begin
    if lo > hi then
        return '';
    end if;
    if lo = hi then
        return 'if qid = ' || ids[lo] || ' then ' || leaves[lo] || ' end if;';
    end if;
    mid := (lo + hi) / 2;
    return 'if qid <= ' || ids[mid] || ' then '
           || pgq_rs.sql_backend_inserter_tree(ids, leaves, lo, mid)
           || ' else ' || pgq_rs.sql_backend_inserter_tree(ids, leaves, mid + 1, hi)
           || ' end if;';
end;
$$;

CREATE OR REPLACE FUNCTION pgq.insert_event_raw(
    queue_name text, ev_id bigint, ev_time timestamptz, ev_owner integer, ev_retry integer,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text,
    ev_extra4 text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
declare
    q       record;
    new_id  bigint;
    have    bigint;
begin
    if $1 is null then
        raise exception 'Queue name must not be NULL' using errcode = 'internal_error';
    end if;
    select t.queue_id, t.queue_data_pfx, t.queue_cur_table, t.queue_event_seq,
           t.queue_disable_insert, t.queue_per_tx_limit
      into q
      from pgq.queue t
     where t.queue_name = $1;
    if not found then
        raise exception 'No such queue' using errcode = 'internal_error';
    end if;
    new_id := pg_catalog.nextval(q.queue_event_seq);
    if q.queue_disable_insert
       and pg_catalog.current_setting('session_replication_role') <> 'replica' then
        raise exception 'Insert into queue disallowed' using errcode = 'internal_error';
    end if;
    if q.queue_per_tx_limit is not null then
        execute 'select count(*) from ' || q.queue_data_pfx
                || ' where ev_txid = pg_catalog.txid_current()'
           into have;
        if have >= q.queue_per_tx_limit then
            raise exception 'Queue ''%'' allows max % events from one TX', $1,
                q.queue_per_tx_limit using errcode = 'internal_error';
        end if;
    end if;
    new_id := coalesce($2, new_id);
    if not pgq_rs.sql_backend_insert(q.queue_id, q.queue_cur_table, new_id,
                                     coalesce($3, pg_catalog.now()), $4, $5, $6, $7, $8, $9,
                                     $10, $11) then
        -- queue_data_pfx is the qualified name create_queue made (pgq.event_<id>).
        execute 'insert into ' || q.queue_data_pfx || '_' || q.queue_cur_table
                || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
                || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
                || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
          using new_id, coalesce($3, pg_catalog.now()), $4, $5, $6, $7, $8, $9, $10, $11;
    end if;
    return new_id;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.insert_event(queue_name text, ev_type text, ev_data text,
                                            ev_extra1 text, ev_extra2 text, ev_extra3 text,
                                            ev_extra4 text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return pgq.insert_event_raw($1, null, now(), null, null, $2, $3, $4, $5, $6, $7);
end;
$$;

CREATE OR REPLACE FUNCTION pgq.insert_event(queue_name text, ev_type text, ev_data text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
begin
    return pgq.insert_event($1, $2, $3, null, null, null, null);
end;
$$;

-- The queue's current event table, for COPY; valid until the end of the transaction. A queue
-- with inserts disabled gives it only in replica mode.
CREATE OR REPLACE FUNCTION pgq.current_event_table(x_queue_name text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q record;
begin
    select queue_data_pfx, queue_cur_table, queue_disable_insert
      into q
      from pgq.queue
     where queue_name = x_queue_name;
    if not found then
        raise exception 'Event queue not found';
    end if;
    if q.queue_disable_insert and current_setting('session_replication_role') <> 'replica' then
        raise exception 'Writing to queue disabled';
    end if;
    return q.queue_data_pfx || '_' || q.queue_cur_table;
end;
$$;

-- The inserter for the queues there are (an upgrade from a revision without it).
SELECT pgq_rs.sql_backend_build_inserter();
