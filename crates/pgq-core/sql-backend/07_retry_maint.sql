-- pgq_rs SQL backend, part 7: retries and maintenance (rotation, retry queue, vacuum list).

-- Put one event of an open batch into the retry queue, to come back after x_retry_time with
-- ev_retry + 1. 1 when queued, 0 when it is queued already.
CREATE OR REPLACE FUNCTION pgq.event_retry(x_batch_id bigint, x_event_id bigint,
                                           x_retry_time timestamptz)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    s   record;
    ev  record;
    n   bigint;
begin
    select sub_id, sub_queue into s from pgq.subscription where sub_batch = x_batch_id;
    if not found then
        raise exception 'event not found';
    end if;
    perform 1 from pgq.retry_queue where ev_owner = s.sub_id and ev_id = x_event_id;
    if found then
        return 0;
    end if;
    execute pgq_rs.sql_backend_batch_sql(x_batch_id, 'ev.ev_id = ' || x_event_id::text)
       into ev;
    get diagnostics n = row_count;
    if n = 0 then
        raise exception 'event not found';
    end if;
    insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid, ev_owner,
                                 ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,
                                 ev_extra4)
    values (x_retry_time, s.sub_queue, ev.ev_id, ev.ev_time, null, s.sub_id,
            coalesce(ev.ev_retry, 0) + 1, ev.ev_type, ev.ev_data, ev.ev_extra1, ev.ev_extra2,
            ev.ev_extra3, ev.ev_extra4);
    return 1;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.event_retry(x_batch_id bigint, x_event_id bigint,
                                           x_retry_seconds integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return pgq.event_retry(x_batch_id, x_event_id,
                           now() + x_retry_seconds * interval '1 second');
end;
$$;

-- Put an event into a consumer's retry queue as given (ev_retry included). Returns its id.
CREATE OR REPLACE FUNCTION pgq.event_retry_raw(
    x_queue text, x_consumer text, x_retry_after timestamptz, x_ev_id bigint,
    x_ev_time timestamptz, x_ev_retry integer, x_ev_type text, x_ev_data text,
    x_ev_extra1 text, x_ev_extra2 text, x_ev_extra3 text, x_ev_extra4 text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    s record;
begin
    select sub.sub_id, sub.sub_queue
      into s
      from pgq.subscription sub
      join pgq.queue q on q.queue_id = sub.sub_queue
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = x_queue and c.co_name = x_consumer;
    if not found then
        raise exception 'consumer not registered';
    end if;
    insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid, ev_owner,
                                 ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,
                                 ev_extra4)
    values (x_retry_after, s.sub_queue, x_ev_id, x_ev_time, null, s.sub_id, x_ev_retry,
            x_ev_type, x_ev_data, x_ev_extra1, x_ev_extra2, x_ev_extra3, x_ev_extra4);
    return x_ev_id;
end;
$$;

-- Put every event of an open batch into the retry queue (those not there already), to come
-- back after i_retry_seconds. Returns how many were queued.
CREATE OR REPLACE FUNCTION pgq.batch_retry(i_batch_id bigint, i_retry_seconds integer)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    s   record;
    n   integer;
begin
    select sub_id, sub_queue into s from pgq.subscription where sub_batch = i_batch_id;
    if not found then
        raise exception 'batch_retry: batch % not found', i_batch_id;
    end if;
    execute 'insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid,'
            || ' ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3,'
            || ' ev_extra4)'
            || ' select now() + $1 * interval ''1 second'', $2, b.ev_id, b.ev_time, null, $3,'
            || ' coalesce(b.ev_retry, 0) + 1, b.ev_type, b.ev_data, b.ev_extra1, b.ev_extra2,'
            || ' b.ev_extra3, b.ev_extra4'
            || ' from (' || pgq.batch_event_sql(i_batch_id) || ') b'
            || ' on conflict on constraint rq_pkey do nothing'
      using i_retry_seconds, s.sub_queue, s.sub_id;
    get diagnostics n = row_count;
    return n;
end;
$$;

-- Move due retry events back into their queue (at most 10 a call; call until it returns 0).
CREATE OR REPLACE FUNCTION pgq.maint_retry_events()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    r   record;
    n   integer := 0;
begin
    for r in
        select q.queue_name, rq.ev_owner, rq.ev_id, rq.ev_time, rq.ev_retry, rq.ev_type,
               rq.ev_data, rq.ev_extra1, rq.ev_extra2, rq.ev_extra3, rq.ev_extra4
          from pgq.retry_queue rq
          join pgq.queue q on q.queue_id = rq.ev_queue
         where rq.ev_retry_after <= now()
         order by rq.ev_retry_after
         limit 10
           for update of rq
    loop
        perform pgq.insert_event_raw(r.queue_name, r.ev_id, r.ev_time, r.ev_owner, r.ev_retry,
                                     r.ev_type, r.ev_data, r.ev_extra1, r.ev_extra2,
                                     r.ev_extra3, r.ev_extra4);
        delete from pgq.retry_queue where ev_owner = r.ev_owner and ev_id = r.ev_id;
        n := n + 1;
    end loop;
    return n;
end;
$$;

-- Rotation, first step: when the queue's rotation period has passed, the previous rotation is
-- complete (step 2 recorded) and every consumer's position is past it, drop the ticks from before
-- it and switch inserts to the next event table, emptied first. Returns 0.
CREATE OR REPLACE FUNCTION pgq.maint_rotate_tables_step1(i_queue_name text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q   record;
    nr  int4;
begin
    select queue_id, queue_ntables, queue_cur_table, queue_data_pfx, queue_switch_step2
      into q
      from pgq.queue
     where queue_name = i_queue_name
       and queue_switch_step2 is not null
       and queue_switch_time + queue_rotation_period <= now()
       for update;
    if not found then
        return 0;
    end if;
    perform 1
       from pgq.subscription s
       join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
      where s.sub_queue = q.queue_id
        and txid_snapshot_xmin(t.tick_snapshot) <= q.queue_switch_step2;
    if found then
        return 0;
    end if;
    -- Ticks taken before the previous rotation was complete describe events of the table about
    -- to be emptied; no consumer stands on them (checked above).
    delete from pgq.tick
     where tick_queue = q.queue_id
       and txid_snapshot_xmin(tick_snapshot) < q.queue_switch_step2;
    nr := (q.queue_cur_table + 1) % q.queue_ntables;
    execute 'truncate ' || pgq.quote_fqname(q.queue_data_pfx || '_' || nr);
    update pgq.queue
       set queue_cur_table = nr,
           queue_switch_time = now(),
           queue_switch_step1 = txid_current(),
           queue_switch_step2 = null
     where queue_id = q.queue_id;
    return 0;
end;
$$;

-- Rotation, second step (a later transaction): record a transaction id that sees the switch.
CREATE OR REPLACE FUNCTION pgq.maint_rotate_tables_step2()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
begin
    update pgq.queue set queue_switch_step2 = txid_current() where queue_switch_step2 is null;
    return 0;
end;
$$;

-- Tables that get many updates and deletes: a maintenance process vacuums them often. None
-- while autovacuum runs (it takes care of them), as pgq does.
CREATE OR REPLACE FUNCTION pgq.maint_tables_to_vacuum()
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    t text;
begin
    if current_setting('autovacuum')::boolean then
        return;
    end if;
    foreach t in array array['pgq.subscription', 'pgq.consumer', 'pgq.queue', 'pgq.tick',
                             'pgq.retry_queue'] loop
        if to_regclass(t) is not null then
            return next t;
        end if;
    end loop;
end;
$$;

-- What a maintenance process calls, in order: rotation step 1 for each queue whose period has
-- passed, step 2 when a rotation waits for it, each queue's extra maintenance functions, then
-- "vacuum" for each table of pgq.maint_tables_to_vacuum().
CREATE OR REPLACE FUNCTION pgq.maint_operations(out func_name text, out func_arg text)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q       record;
    step2   boolean := false;
    f       text;
begin
    for q in
        select queue_name
          from pgq.queue
         where queue_switch_step2 is not null
           and queue_switch_time + queue_rotation_period <= now()
         order by queue_name
    loop
        func_name := 'pgq.maint_rotate_tables_step1';
        func_arg := q.queue_name;
        step2 := true;
        return next;
    end loop;
    if step2 or exists (select 1 from pgq.queue where queue_switch_step2 is null) then
        func_name := 'pgq.maint_rotate_tables_step2';
        func_arg := null;
        return next;
    end if;
    for q in
        select queue_name, queue_extra_maint
          from pgq.queue
         where queue_extra_maint is not null
         order by queue_name
    loop
        foreach f in array q.queue_extra_maint loop
            func_name := f;
            func_arg := q.queue_name;
            return next;
        end loop;
    end loop;
    for f in select * from pgq.maint_tables_to_vacuum() loop
        func_name := 'vacuum';
        func_arg := f;
        return next;
    end loop;
end;
$$;
