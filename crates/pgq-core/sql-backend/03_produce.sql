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
-- search_path).

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
    -- queue_data_pfx is the qualified name create_queue made (pgq.event_<id>).
    execute 'insert into ' || q.queue_data_pfx || '_' || q.queue_cur_table
            || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data,'
            || ' ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
            || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
      using new_id, coalesce($3, pg_catalog.now()), $4, $5, $6, $7, $8, $9, $10, $11;
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
SET search_path = pg_catalog, pg_temp
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
