-- pgq_rs SQL backend, part 6: batches.
--
-- A consumer's batch spans from its position (sub_last_tick) to a later tick (sub_next_tick).
-- Its events are those whose transaction is visible in the later tick's snapshot and not in the
-- earlier one's, in the queue's current event table and, while the rotation before the batch
-- is not behind it, the previous table; retried events (ev_owner set) only for their owner.

-- The first tick after i_prev_tick_id that closes a batch of at least i_min_count events (by
-- the event sequence) or at least i_min_interval long; NULLs when there is none (or neither
-- condition is given).
CREATE OR REPLACE FUNCTION pgq.find_tick_helper(
    in i_queue_id int4, in i_prev_tick_id int8, in i_prev_tick_time timestamptz,
    in i_prev_tick_seq int8, in i_min_count int8, in i_min_interval interval,
    out next_tick_id int8, out next_tick_time timestamptz, out next_tick_seq int8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
begin
    if i_min_count is null and i_min_interval is null then
        return;
    end if;
    select t.tick_id, t.tick_time, t.tick_event_seq
      into next_tick_id, next_tick_time, next_tick_seq
      from pgq.tick t
     where t.tick_queue = i_queue_id
       and t.tick_id > i_prev_tick_id
       and ((i_min_count is not null and t.tick_event_seq - i_prev_tick_seq >= i_min_count)
            or (i_min_interval is not null and t.tick_time - i_prev_tick_time >= i_min_interval))
     order by t.tick_queue, t.tick_id
     limit 1;
end;
$$;

-- The consumer's open batch, else a new batch to the next tick (or, with i_min_count or
-- i_min_interval, to the first tick that gives a batch that large); no batch (NULLs) when
-- there is no such tick or it is younger than i_min_lag.
CREATE OR REPLACE FUNCTION pgq.next_batch_custom(
    in i_queue_name text, in i_consumer_name text, in i_min_lag interval,
    in i_min_count int4, in i_min_interval interval,
    out batch_id int8, out cur_tick_id int8, out prev_tick_id int8,
    out cur_tick_time timestamptz, out prev_tick_time timestamptz,
    out cur_tick_event_seq int8, out prev_tick_event_seq int8)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    s   record;
    p   record;
    n   record;
begin
    select sub.sub_queue, sub.sub_consumer, sub.sub_last_tick, sub.sub_batch, sub.sub_next_tick
      into s
      from pgq.subscription sub
      join pgq.queue q on q.queue_id = sub.sub_queue
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = i_consumer_name;
    if not found then
        raise exception 'Not subscriber to queue: %/%', i_queue_name, i_consumer_name;
    end if;

    select t.tick_id, t.tick_time, t.tick_event_seq into p
      from pgq.tick t
     where t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick;
    if not found then
        raise exception 'PgQ corruption: Consumer % on queue % does not see tick %',
            i_consumer_name, i_queue_name, s.sub_last_tick;
    end if;

    if s.sub_batch is not null then
        select t.tick_id, t.tick_time, t.tick_event_seq into n
          from pgq.tick t
         where t.tick_queue = s.sub_queue and t.tick_id = s.sub_next_tick;
        batch_id := s.sub_batch;
    else
        if i_min_count is null and i_min_interval is null then
            select t.tick_id, t.tick_time, t.tick_event_seq into n
              from pgq.tick t
             where t.tick_queue = s.sub_queue and t.tick_id > s.sub_last_tick
             order by t.tick_queue, t.tick_id
             limit 1;
        else
            select h.next_tick_id as tick_id, h.next_tick_time as tick_time,
                   h.next_tick_seq as tick_event_seq
              into n
              from pgq.find_tick_helper(s.sub_queue, p.tick_id, p.tick_time,
                                        p.tick_event_seq, i_min_count, i_min_interval) h;
        end if;
        if n.tick_id is null or (i_min_lag is not null and now() - n.tick_time < i_min_lag) then
            return;
        end if;
        batch_id := nextval('pgq.batch_id_seq');
        update pgq.subscription
           set sub_batch = batch_id, sub_next_tick = n.tick_id, sub_active = now()
         where sub_queue = s.sub_queue and sub_consumer = s.sub_consumer;
    end if;

    cur_tick_id := n.tick_id;
    cur_tick_time := n.tick_time;
    cur_tick_event_seq := n.tick_event_seq;
    prev_tick_id := p.tick_id;
    prev_tick_time := p.tick_time;
    prev_tick_event_seq := p.tick_event_seq;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.next_batch_info(
    in i_queue_name text, in i_consumer_name text,
    out batch_id int8, out cur_tick_id int8, out prev_tick_id int8,
    out cur_tick_time timestamptz, out prev_tick_time timestamptz,
    out cur_tick_event_seq int8, out prev_tick_event_seq int8)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
begin
    select f.batch_id, f.cur_tick_id, f.prev_tick_id, f.cur_tick_time, f.prev_tick_time,
           f.cur_tick_event_seq, f.prev_tick_event_seq
      into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
           cur_tick_event_seq, prev_tick_event_seq
      from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null) f;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.next_batch(i_queue_name text, i_consumer_name text)
RETURNS int8
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return (select f.batch_id
              from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null) f);
end;
$$;

-- Details of an open batch (NULLs when there is no such batch).
CREATE OR REPLACE FUNCTION pgq.get_batch_info(
    in x_batch_id bigint,
    out queue_name text, out consumer_name text, out batch_start timestamptz,
    out batch_end timestamptz, out prev_tick_id bigint, out tick_id bigint, out lag interval,
    out seq_start bigint, out seq_end bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
begin
    select q.queue_name, c.co_name, p.tick_time, n.tick_time, s.sub_last_tick, s.sub_next_tick,
           now() - n.tick_time, p.tick_event_seq, n.tick_event_seq
      into queue_name, consumer_name, batch_start, batch_end, prev_tick_id, tick_id, lag,
           seq_start, seq_end
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
      join pgq.tick p on p.tick_queue = s.sub_queue and p.tick_id = s.sub_last_tick
      join pgq.tick n on n.tick_queue = s.sub_queue and n.tick_id = s.sub_next_tick
     where s.sub_batch = x_batch_id;
end;
$$;

-- The event tables an open batch's events may be in: the previous table while the batch starts
-- before the last rotation was complete, then the current table.
CREATE OR REPLACE FUNCTION pgq.batch_event_tables(x_batch_id bigint)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    b record;
begin
    select q.queue_data_pfx, q.queue_ntables, q.queue_cur_table, q.queue_switch_step2,
           t.tick_snapshot
      into b
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
     where s.sub_batch = x_batch_id;
    if not found then
        raise exception 'Cannot find data for batch %', x_batch_id;
    end if;
    if b.queue_switch_step2 is null
       or txid_snapshot_xmin(b.tick_snapshot) <= b.queue_switch_step2 then
        return next b.queue_data_pfx || '_'
                    || ((b.queue_cur_table + b.queue_ntables - 1) % b.queue_ntables);
    end if;
    return next b.queue_data_pfx || '_' || b.queue_cur_table;
end;
$$;

-- The SELECT that reads an open batch's events (ordered by ev_id), with an optional extra
-- condition on the event table's columns (alias ev). Used by pgq.batch_event_sql and
-- pgq.get_batch_cursor.
CREATE OR REPLACE FUNCTION pgq_rs.sql_backend_batch_sql(x_batch_id bigint, x_extra_where text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    b       record;
    lo      bigint;
    tbl     text;
    part    text;
    parts   text[] := '{}';
begin
    select s.sub_id, s.sub_queue, s.sub_last_tick, s.sub_next_tick,
           p.tick_snapshot as prev_snap, n.tick_snapshot as cur_snap
      into b
      from pgq.subscription s
      join pgq.tick p on p.tick_queue = s.sub_queue and p.tick_id = s.sub_last_tick
      join pgq.tick n on n.tick_queue = s.sub_queue and n.tick_id = s.sub_next_tick
     where s.sub_batch = x_batch_id;
    if not found then
        raise exception 'batch not found';
    end if;
    -- The oldest transaction the earlier snapshot does not see: nothing below it is new.
    lo := coalesce((select min(x) from txid_snapshot_xip(b.prev_snap) x),
                   txid_snapshot_xmax(b.prev_snap));
    for tbl in select * from pgq.batch_event_tables(x_batch_id) loop
        part := 'select ev.ev_id, ev.ev_time, ev.ev_txid, ev.ev_retry, ev.ev_type, ev.ev_data,'
            || ' ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4'
            || ' from ' || pgq.quote_fqname(tbl) || ' ev'
            || ' where ev.ev_txid >= ' || lo
            || ' and ev.ev_txid < ' || txid_snapshot_xmax(b.cur_snap)
            || ' and txid_visible_in_snapshot(ev.ev_txid, (select t.tick_snapshot'
            || ' from pgq.tick t where t.tick_queue = ' || b.sub_queue
            || ' and t.tick_id = ' || b.sub_next_tick || '))'
            || ' and not txid_visible_in_snapshot(ev.ev_txid, (select t.tick_snapshot'
            || ' from pgq.tick t where t.tick_queue = ' || b.sub_queue
            || ' and t.tick_id = ' || b.sub_last_tick || '))'
            || ' and (ev.ev_owner is null or ev.ev_owner = ' || b.sub_id || ')';
        if x_extra_where is not null then
            part := part || ' and (' || x_extra_where || ')';
        end if;
        parts := parts || part;
    end loop;
    return array_to_string(parts, ' union all ') || ' order by 1';
end;
$$;

CREATE OR REPLACE FUNCTION pgq.batch_event_sql(x_batch_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return pgq_rs.sql_backend_batch_sql(x_batch_id, null);
end;
$$;

-- Every event of an open batch.
CREATE OR REPLACE FUNCTION pgq.get_batch_events(
    in x_batch_id bigint,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return query execute pgq.batch_event_sql(x_batch_id);
end;
$$;

-- Open cursor i_cursor_name over an open batch's events (optionally only those matching
-- i_extra_where) and return its first i_quick_limit rows; FETCH reads the rest.
CREATE OR REPLACE FUNCTION pgq.get_batch_cursor(
    in i_batch_id bigint, in i_cursor_name text, in i_quick_limit int4, in i_extra_where text,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    c refcursor := i_cursor_name;
begin
    open c no scroll for execute pgq_rs.sql_backend_batch_sql(i_batch_id, i_extra_where);
    if coalesce(i_quick_limit, 0) > 0 then
        return query execute 'fetch ' || i_quick_limit || ' from ' || quote_ident(i_cursor_name);
    end if;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.get_batch_cursor(
    in i_batch_id bigint, in i_cursor_name text, in i_quick_limit int4,
    out ev_id bigint, out ev_time timestamptz, out ev_txid bigint, out ev_retry int4,
    out ev_type text, out ev_data text, out ev_extra1 text, out ev_extra2 text,
    out ev_extra3 text, out ev_extra4 text)
RETURNS SETOF record
LANGUAGE sql STRICT
SET search_path = pg_catalog, pg_temp
AS $$ select * from pgq.get_batch_cursor(i_batch_id, i_cursor_name, i_quick_limit, null) $$;

-- Close a batch: the consumer moves to its end. 1 when the batch was open, else 0 (warning).
CREATE OR REPLACE FUNCTION pgq.finish_batch(x_batch_id bigint)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
begin
    update pgq.subscription
       set sub_active = now(),
           sub_last_tick = sub_next_tick,
           sub_next_tick = null,
           sub_batch = null
     where sub_batch = x_batch_id;
    if not found then
        raise warning 'finish_batch: batch % not found', x_batch_id;
        return 0;
    end if;
    return 1;
end;
$$;
