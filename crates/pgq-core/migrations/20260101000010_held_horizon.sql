-- Consumers that stay fast while a session holds the xmin horizon (a long or idle-in-transaction
-- session, pg_dump, a replication slot, a prepared transaction), and a way to name that holder.
--
-- Every batch updates the consumer's pgq.subscription row twice (next_batch, finish_batch), and
-- pgq's index on sub_batch makes every update a non-HOT one. While the horizon is held no old
-- version can be removed, so pgq.next_batch*, which finds the row through the primary key
-- (sub_queue, sub_consumer), visits every version written since the horizon was pinned: at a
-- millisecond tick rate that is a thousand versions a second, and each batch costs more than the
-- one before (measured: 1 ms per 12 000 versions; see docs/design-notes.md, "Held horizon").
--
-- pgq_rs.next_batch_at and pgq_rs.finish_batch_at do what pgq.next_batch_custom (without
-- conditions) and pgq.finish_batch do to the row, exactly, but find it through its ctid, which
-- the previous call returned ("hint"): a TID lookup of one version instead of a walk over all of
-- them. A hint that no longer names the current version of this consumer's row (someone else
-- updated it; vacuum moved on) is ignored and the row is found the usual way. next_batch_at may
-- also span several ticks in one batch (up to about i_max_events events), as pgq's own
-- next_batch_custom does with min_count/min_interval, so a consumer that fell behind catches up
-- in a few batches rather than one batch per tick. The rows written are the ones pgq writes; pgq
-- clients (python3-pgq, pgqd, pgqueue) see no difference.
--
-- pgq_rs.xmin_horizon_holder() names the oldest holder of the horizon for `pgq status` and the
-- ticker's metrics (SECURITY DEFINER so that pgq_reader sees other roles' sessions; it returns
-- no query text).
--
-- Idempotent.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader, pgq_writer, pgq_admin;

CREATE OR REPLACE FUNCTION pgq_rs.next_batch_at(
    i_queue_name text,
    i_consumer_name text,
    i_hint text,
    i_max_events int8,
    OUT batch_id int8,
    OUT cur_tick_id int8,
    OUT prev_tick_id int8,
    OUT cur_tick_time timestamptz,
    OUT prev_tick_time timestamptz,
    OUT cur_tick_event_seq int8,
    OUT prev_tick_event_seq int8,
    OUT hint text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- The consumer's open batch, or a new one from its position to a later tick: the next tick, or
-- with i_max_events > 0 the newest tick whose events (by the event sequence) number at most
-- i_max_events more than the position (at least the next tick). NULL batch when there is no new
-- tick. "hint" is the ctid of the consumer's subscription row after this call; pass it back as
-- i_hint (NULL or a stale hint: the row is looked up by its key).
declare
    v_queue  int4;
    v_cons   int4;
    v_row    tid;
    v_new    tid;
    t        record;
begin
    if i_hint is not null then
        select s.sub_queue, s.sub_consumer, s.ctid, s.sub_batch, s.sub_last_tick, s.sub_next_tick
          into v_queue, v_cons, v_row, batch_id, prev_tick_id, cur_tick_id
          from pgq.subscription s
          join pgq.queue q on q.queue_id = s.sub_queue
          join pgq.consumer c on c.co_id = s.sub_consumer
         where s.ctid = i_hint::tid
           and q.queue_name = i_queue_name
           and c.co_name = i_consumer_name;
    end if;
    if v_row is null then
        select s.sub_queue, s.sub_consumer, s.ctid, s.sub_batch, s.sub_last_tick, s.sub_next_tick
          into v_queue, v_cons, v_row, batch_id, prev_tick_id, cur_tick_id
          from pgq.subscription s
          join pgq.queue q on q.queue_id = s.sub_queue
          join pgq.consumer c on c.co_id = s.sub_consumer
         where q.queue_name = i_queue_name
           and c.co_name = i_consumer_name;
        if not found then
            raise exception 'Not subscriber to queue: %/%',
                coalesce(i_queue_name, 'NULL'), coalesce(i_consumer_name, 'NULL');
        end if;
    end if;
    hint := v_row::text;

    select tick_time, tick_event_seq into prev_tick_time, prev_tick_event_seq
      from pgq.tick where tick_queue = v_queue and tick_id = prev_tick_id;
    if not found then
        raise exception 'PgQ corruption: Consumer % on queue % does not see tick %',
            i_consumer_name, i_queue_name, prev_tick_id;
    end if;

    if batch_id is not null then
        -- the open batch, as pgq returns it
        select tick_time, tick_event_seq into cur_tick_time, cur_tick_event_seq
          from pgq.tick where tick_queue = v_queue and tick_id = cur_tick_id;
        return;
    end if;

    select tick_id, tick_time, tick_event_seq into t
      from pgq.tick
     where tick_queue = v_queue and tick_id > prev_tick_id
     order by tick_queue desc, tick_id desc
     limit 1;
    if found and (coalesce(i_max_events, 0) <= 0
                  or t.tick_event_seq - prev_tick_event_seq > i_max_events) then
        -- the next tick, then (when spanning) the ticks after it while within i_max_events
        t := null;
        for t in
            select tick_id, tick_time, tick_event_seq
              from pgq.tick
             where tick_queue = v_queue and tick_id > prev_tick_id
             order by tick_queue, tick_id
        loop
            exit when cur_tick_id is not null
                  and (coalesce(i_max_events, 0) <= 0
                       or t.tick_event_seq - prev_tick_event_seq > i_max_events);
            cur_tick_id := t.tick_id;
            cur_tick_time := t.tick_time;
            cur_tick_event_seq := t.tick_event_seq;
        end loop;
    elsif found then
        cur_tick_id := t.tick_id;
        cur_tick_time := t.tick_time;
        cur_tick_event_seq := t.tick_event_seq;
    end if;

    if cur_tick_id is null then
        prev_tick_id := null;
        prev_tick_time := null;
        prev_tick_event_seq := null;
        return;
    end if;

    batch_id := nextval('pgq.batch_id_seq');
    update pgq.subscription
       set sub_batch = batch_id,
           sub_next_tick = cur_tick_id,
           sub_active = now()
     where ctid = v_row
       and sub_queue = v_queue and sub_consumer = v_cons
       and sub_batch is null and sub_last_tick = prev_tick_id
    returning ctid into v_new;
    if v_new is null then
        -- The row changed since it was read (another session of this consumer): pgq's own way.
        select f.batch_id, f.cur_tick_id, f.prev_tick_id, f.cur_tick_time, f.prev_tick_time,
               f.cur_tick_event_seq, f.prev_tick_event_seq
          into batch_id, cur_tick_id, prev_tick_id, cur_tick_time, prev_tick_time,
               cur_tick_event_seq, prev_tick_event_seq
          from pgq.next_batch_custom(i_queue_name, i_consumer_name, null, null, null) f;
        hint := null;
        return;
    end if;
    hint := v_new::text;
    return;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.next_batch_at(text, text, text, int8) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.next_batch_at(text, text, text, int8) TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.finish_batch_at(
    i_batch_id int8, i_queue_name text, i_consumer_name text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- pgq.finish_batch(i_batch_id) when i_consumer_name holds that batch on i_queue_name (the row
-- found through pgq's unique index on sub_batch). Returns the ctid of the consumer's row after
-- the update (the hint for pgq_rs.next_batch_at), NULL when nothing was finished.
declare
    v_new tid;
begin
    update pgq.subscription s
       set sub_active = now(),
           sub_last_tick = s.sub_next_tick,
           sub_next_tick = null,
           sub_batch = null
      from pgq.queue q, pgq.consumer c
     where s.sub_batch = i_batch_id
       and q.queue_id = s.sub_queue and q.queue_name = i_queue_name
       and c.co_id = s.sub_consumer and c.co_name = i_consumer_name
    returning s.ctid into v_new;
    return v_new::text;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.finish_batch_at(int8, text, text) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.finish_batch_at(int8, text, text) TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.xmin_horizon_holder()
RETURNS TABLE (kind text, pid int4, usename text, application_name text, state text,
               name text, since timestamptz, xid_age int4)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- The oldest holder of this cluster's xmin horizon: a session (its transaction id or snapshot),
-- a replication slot, or a prepared transaction; no row when nothing holds one. "since" is when
-- the session's transaction (or its statement) began or the transaction was prepared (NULL for
-- slots); xid_age is how many transactions old the held horizon is.
select * from (
    select 'session'::text, a.pid, a.usename::text, a.application_name, a.state, null::text,
           coalesce(a.xact_start, a.query_start, a.backend_start),
           greatest(age(a.backend_xid), age(a.backend_xmin))
      from pg_stat_activity a
     where (a.backend_xid is not null or a.backend_xmin is not null)
       and a.pid <> pg_backend_pid()
    union all
    select 'replication slot', s.active_pid, null, null,
           case when s.active then 'active' else 'inactive' end, s.slot_name::text, null,
           greatest(age(s.xmin), age(s.catalog_xmin))
      from pg_replication_slots s
     where s.xmin is not null or s.catalog_xmin is not null
    union all
    select 'prepared transaction', null, p.owner::text, null, null, p.gid, p.prepared,
           age(p.transaction)
      from pg_prepared_xacts p
) h (kind, pid, usename, application_name, state, name, since, xid_age)
order by xid_age desc nulls last, since nulls last
limit 1
$$;

REVOKE ALL ON FUNCTION pgq_rs.xmin_horizon_holder() FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.xmin_horizon_holder() TO pgq_reader;

-- pgq_rs.fast_tick (first in …04_ticker_wakeup), with its probe for uncovered events written so
-- that the planner cannot turn it into a sequential scan of the event tables: "ev_txid >= xmax
-- or ev_txid = any (xip)" under EXISTS was planned as a seq scan while the tables' statistics
-- were stale (before autoanalyze), and its cost grew with the table (measured 11 ms, 382 buffers,
-- at 37 000 events). max(ev_txid) is an index probe per event table, and the in-progress list is
-- looked up only when there is one.
CREATE OR REPLACE FUNCTION pgq_rs.fast_tick(i_queue_id int4, i_notify_channel text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- Tick queue i_queue_id now if committed events exist that its newest tick does not cover.
-- Returns the new tick id, or NULL when no tick was needed (or the queue is paused/external).
-- When i_notify_channel is given, sends NOTIFY i_notify_channel with the queue name after a tick
-- (for databases without the pgq.tick wakeup trigger).
declare
    q       record;
    t       record;
    xip     int8[];
    pending boolean;
    new_id  bigint;
begin
    select queue_id, queue_name, queue_data_pfx, queue_tick_seq, queue_event_seq
      into q
      from pgq.queue
     where queue_id = i_queue_id
       and not queue_external_ticker
       and not queue_ticker_paused;
    if not found then
        return null;
    end if;

    select tick_id, tick_snapshot
      into t
      from pgq.tick
     where tick_queue = q.queue_id
     order by tick_queue desc, tick_id desc
     limit 1;
    if not found then
        return null;                          -- pgq.ticker() makes the first tick
    end if;

    -- Events invisible to the newest tick's snapshot: their txid is >= its xmax or in its
    -- in-progress list. Rows this statement sees are committed, so any hit is a committed event
    -- that the next batch would carry.
    execute format('select coalesce(max(ev_txid) >= $1, false) from %s',
                   pgq.quote_fqname(q.queue_data_pfx))
       into pending
      using txid_snapshot_xmax(t.tick_snapshot);
    if not pending then
        xip := array(select txid_snapshot_xip(t.tick_snapshot));
        if cardinality(xip) > 0 then
            execute format('select exists (select 1 from %s where ev_txid = any ($1))',
                           pgq.quote_fqname(q.queue_data_pfx))
               into pending
              using xip;
        end if;
    end if;
    if not pending then
        return null;
    end if;

    insert into pgq.tick (tick_queue, tick_id, tick_event_seq)
    values (q.queue_id, nextval(q.queue_tick_seq), pgq.seq_getval(q.queue_event_seq))
    returning tick_id into new_id;

    if i_notify_channel is not null then
        perform pg_notify(i_notify_channel, q.queue_name);
    end if;
    return new_id;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.fast_tick(int4, text) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.fast_tick(int4, text) TO pgq_admin;
