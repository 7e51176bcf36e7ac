-- Delivering past the open batch's end without writing the subscription row.
--
-- While a session holds the xmin horizon, every update of a consumer's pgq.subscription row
-- leaves a version nobody can remove, and each later update checks all of them (pgq's unique
-- primary key): a batch costs more with every batch before it, however few updates a batch makes
-- (migrations 10 and 11 brought them down to one). A consumer that reads ahead does not need one
-- per delivery: it keeps batch N (ticks A..B) open, delivers the events of the ticks after B
-- (pgq_rs.batch_reach, pgq_rs.batch_events_beyond: exactly what the batches B..C, C..D, ...
-- would hold), and writes the row only now and then — finishing N as if it had ended at the
-- last tick delivered (pgq_rs.finish_next_batch_at with i_reached). Until then the row still
-- says "batch N from A": a consumer that stops without finishing gets everything after A again
-- (at least once, as with any unfinished batch). To retry an event read ahead, the batch is first
-- extended to cover it (pgq_rs.extend_batch_at), so that pgq.event_retry finds it in the batch.
-- The rows written are the ones pgq writes; pgq clients see no difference.
--
-- Idempotent.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader, pgq_writer, pgq_admin;

CREATE OR REPLACE FUNCTION pgq_rs.batch_reach(
    i_batch_id int8,
    i_from_tick int8,
    i_max_events int8,
    OUT batch_id int8,
    OUT cur_tick_id int8,
    OUT prev_tick_id int8,
    OUT cur_tick_time timestamptz,
    OUT prev_tick_time timestamptz,
    OUT cur_tick_event_seq int8,
    OUT prev_tick_event_seq int8)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- How far the holder of open batch i_batch_id, having delivered up to tick i_from_tick (at or
-- after the batch's end), may read ahead: from i_from_tick ("prev") to the next tick, or to the
-- newest one within i_max_events more events (pgq_rs.batch_end_tick) ("cur"), batch_id being
-- i_batch_id. All NULL when there is no later tick. The batch is found through pgq's unique
-- index on sub_batch, never by the consumer's key.
declare
    s record;
begin
    select sub.sub_queue, sub.sub_next_tick into s
      from pgq.subscription sub where sub.sub_batch = i_batch_id;
    if not found then
        raise exception 'batch % not found', i_batch_id;
    end if;
    if i_from_tick is null or i_from_tick < s.sub_next_tick then
        raise exception 'batch %: cannot read ahead from tick %, before its end (tick %)',
            i_batch_id, i_from_tick, s.sub_next_tick;
    end if;
    select k.tick_time, k.tick_event_seq into prev_tick_time, prev_tick_event_seq
      from pgq.tick k where k.tick_queue = s.sub_queue and k.tick_id = i_from_tick;
    if not found then
        raise exception 'tick not found: %', i_from_tick;
    end if;
    select b.tick_id, b.tick_time, b.tick_event_seq
      into cur_tick_id, cur_tick_time, cur_tick_event_seq
      from pgq_rs.batch_end_tick(s.sub_queue, i_from_tick, prev_tick_event_seq, i_max_events) b;
    if cur_tick_id is null then
        prev_tick_time := null;
        prev_tick_event_seq := null;
        return;
    end if;
    batch_id := i_batch_id;
    prev_tick_id := i_from_tick;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.batch_reach(int8, int8, int8) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.batch_reach(int8, int8, int8) TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.batch_events_beyond(
    i_batch_id int8,
    i_from_tick int8,
    i_to_tick int8)
RETURNS TABLE (ev_id int8, ev_time timestamptz, ev_txid int8, ev_retry int4, ev_type text,
               ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- The events between ticks i_from_tick and i_to_tick of the queue of open batch i_batch_id, for
-- its holder: those committed after the first tick's snapshot and by the second's (visible in
-- the second, not in the first), new ones or retried ones of this subscription — what a batch
-- from i_from_tick to i_to_tick holds. i_from_tick must be at or after the open batch's end: the
-- event tables then still hold everything after it (rotation keeps what the consumer's position,
-- the batch's start, has not passed). In event id order.
declare
    s      record;
    v_pfx  text;
    v_from txid_snapshot;
    v_to   txid_snapshot;
begin
    select sub.sub_queue, sub.sub_next_tick, sub.sub_id into s
      from pgq.subscription sub where sub.sub_batch = i_batch_id;
    if not found then
        raise exception 'batch % not found', i_batch_id;
    end if;
    if i_from_tick is null or i_from_tick < s.sub_next_tick or i_to_tick is null
       or i_to_tick <= i_from_tick then
        raise exception 'batch %: cannot read ahead from tick % to tick % (its end: tick %)',
            i_batch_id, i_from_tick, i_to_tick, s.sub_next_tick;
    end if;
    select k.tick_snapshot into v_from
      from pgq.tick k where k.tick_queue = s.sub_queue and k.tick_id = i_from_tick;
    if not found then
        raise exception 'tick not found: %', i_from_tick;
    end if;
    select k.tick_snapshot into v_to
      from pgq.tick k where k.tick_queue = s.sub_queue and k.tick_id = i_to_tick;
    if not found then
        raise exception 'tick not found: %', i_to_tick;
    end if;
    select q.queue_data_pfx into v_pfx from pgq.queue q where q.queue_id = s.sub_queue;
    -- A transaction visible in v_to and not in v_from started at or after v_from's xmax, or was
    -- running when v_from was taken (one of its xip): two index ranges, however long ago the
    -- oldest running transaction began.
    return query execute
        'select e.ev_id, e.ev_time, e.ev_txid, e.ev_retry, e.ev_type, e.ev_data,'
        || ' e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4'
        || ' from ' || pgq.quote_fqname(v_pfx) || ' e'
        || ' where ((e.ev_txid >= $1 and e.ev_txid < $2) or e.ev_txid = any($3))'
        || ' and txid_visible_in_snapshot(e.ev_txid, $4)'
        || ' and not txid_visible_in_snapshot(e.ev_txid, $5)'
        || ' and (e.ev_owner is null or e.ev_owner = $6)'
        || ' order by e.ev_id'
      using txid_snapshot_xmax(v_from), txid_snapshot_xmax(v_to),
            array(select txid_snapshot_xip(v_from)), v_to, v_from, s.sub_id;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.batch_events_beyond(int8, int8, int8) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.batch_events_beyond(int8, int8, int8) TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.extend_batch_at(
    i_batch_id int8, i_queue_name text, i_consumer_name text, i_to_tick int8)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- Make open batch i_batch_id of i_consumer_name on i_queue_name end at the later tick i_to_tick
-- (its events read ahead become part of it: pgq.event_retry finds them). Returns the ctid of the
-- row afterwards; NULL when the consumer does not hold that batch.
declare
    v_new tid;
begin
    if i_to_tick is null then
        raise exception 'batch %: cannot extend to tick NULL', i_batch_id;
    end if;
    update pgq.subscription s
       set sub_next_tick = i_to_tick,
           sub_active = now()
      from pgq.queue q, pgq.consumer c
     where s.sub_batch = i_batch_id
       and q.queue_id = s.sub_queue and q.queue_name = i_queue_name
       and c.co_id = s.sub_consumer and c.co_name = i_consumer_name
       and s.sub_next_tick <= i_to_tick
       and exists (select 1 from pgq.tick k
                    where k.tick_queue = s.sub_queue and k.tick_id = i_to_tick)
    returning s.ctid into v_new;
    return v_new::text;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.extend_batch_at(int8, text, text, int8) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.extend_batch_at(int8, text, text, int8) TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.finish_next_batch_at(
    i_batch_id int8,
    i_queue_name text,
    i_consumer_name text,
    i_max_events int8,
    i_reached int8,
    OUT finished boolean,
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
-- Finish batch i_batch_id as if it ended at tick i_reached (NULL: at its own end; else a tick at
-- or after it, up to which the holder read ahead) and, when a later tick exists, open the next
-- batch from there (up to about i_max_events events) — in one update. "finished" is false (and
-- nothing changes) when i_consumer_name does not hold batch i_batch_id on i_queue_name, or
-- i_reached is before the batch's end or not a tick of the queue. The batch columns describe
-- the new open batch (NULL when there was no later tick: the row is only finished). "hint" is
-- the ctid of the row afterwards.
declare
    r      record;
    v_end  int8;
    e_tick int8;
    e_time timestamptz;
    e_seq  int8;
    v_new  tid;
begin
    finished := false;
    select s.ctid as row, s.sub_queue, s.sub_next_tick
      into r
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where s.sub_batch = i_batch_id
       and q.queue_name = i_queue_name
       and c.co_name = i_consumer_name
       for update of s;
    if not found or (i_reached is not null and i_reached < r.sub_next_tick) then
        return;
    end if;
    v_end := coalesce(i_reached, r.sub_next_tick);

    select k.tick_time, k.tick_event_seq into prev_tick_time, prev_tick_event_seq
      from pgq.tick k where k.tick_queue = r.sub_queue and k.tick_id = v_end;
    if not found then
        if i_reached is not null then
            return;
        end if;
    else
        select b.tick_id, b.tick_time, b.tick_event_seq into e_tick, e_time, e_seq
          from pgq_rs.batch_end_tick(r.sub_queue, v_end, prev_tick_event_seq, i_max_events) b;
    end if;

    if e_tick is null then
        update pgq.subscription
           set sub_active = now(),
               sub_last_tick = v_end,
               sub_next_tick = null,
               sub_batch = null
         where ctid = r.row
        returning ctid into v_new;
        prev_tick_time := null;
        prev_tick_event_seq := null;
    else
        batch_id := nextval('pgq.batch_id_seq');
        prev_tick_id := v_end;
        cur_tick_id := e_tick;
        cur_tick_time := e_time;
        cur_tick_event_seq := e_seq;
        update pgq.subscription
           set sub_active = now(),
               sub_last_tick = v_end,
               sub_next_tick = e_tick,
               sub_batch = batch_id
         where ctid = r.row
        returning ctid into v_new;
    end if;
    finished := v_new is not null;
    hint := v_new::text;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.finish_next_batch_at(int8, text, text, int8, int8) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.finish_next_batch_at(int8, text, text, int8, int8)
    TO pgq_reader;

-- The four-argument form (migration 11): finishing at the batch's own end.
CREATE OR REPLACE FUNCTION pgq_rs.finish_next_batch_at(
    i_batch_id int8,
    i_queue_name text,
    i_consumer_name text,
    i_max_events int8,
    OUT finished boolean,
    OUT batch_id int8,
    OUT cur_tick_id int8,
    OUT prev_tick_id int8,
    OUT cur_tick_time timestamptz,
    OUT prev_tick_time timestamptz,
    OUT cur_tick_event_seq int8,
    OUT prev_tick_event_seq int8,
    OUT hint text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    select * from pgq_rs.finish_next_batch_at(i_batch_id, i_queue_name, i_consumer_name,
                                              i_max_events, null::int8)
$$;
