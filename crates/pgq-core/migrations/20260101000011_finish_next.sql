-- Finish a batch and open the next one in one update of the consumer's pgq.subscription row.
--
-- A batch costs two updates of that row (pgq_rs.next_batch_at, pgq_rs.finish_batch_at), and each
-- update leaves a row version; while a session holds the xmin horizon none can be removed, and
-- every later update of the row (pgq's unique-index check on its key) visits all of them, so the
-- cost of a batch grows with the versions written since the horizon was pinned. When a consumer
-- is busy, the next tick usually exists by the time it finishes: pgq_rs.finish_next_batch_at
-- then moves the row from "batch N open" straight to "batch N+1 open", one version per batch
-- instead of two. The row ends exactly as pgq.finish_batch followed by pgq.next_batch_custom
-- (spanning like pgq_rs.next_batch_at) would leave it; pgq clients (python3-pgq, pgqd, pgqueue)
-- see no difference.
--
-- Idempotent.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader, pgq_writer, pgq_admin;

CREATE OR REPLACE FUNCTION pgq_rs.batch_end_tick(
    i_queue_id int4,
    i_prev_tick_id int8,
    i_prev_event_seq int8,
    i_max_events int8,
    OUT tick_id int8,
    OUT tick_time timestamptz,
    OUT tick_event_seq int8)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
-- Where a batch starting at tick i_prev_tick_id ends: the next tick, or with i_max_events > 0 the
-- newest tick whose events (by the event sequence) number at most i_max_events more than
-- i_prev_event_seq, but at least the next tick. All NULL when there is no later tick.
declare
    t record;
begin
    select k.tick_id, k.tick_time, k.tick_event_seq into t
      from pgq.tick k
     where k.tick_queue = i_queue_id and k.tick_id > i_prev_tick_id
     order by k.tick_queue desc, k.tick_id desc
     limit 1;
    if not found then
        return;
    end if;
    if coalesce(i_max_events, 0) > 0 and t.tick_event_seq - i_prev_event_seq <= i_max_events then
        -- every pending tick fits: the newest
        tick_id := t.tick_id;
        tick_time := t.tick_time;
        tick_event_seq := t.tick_event_seq;
        return;
    end if;
    for t in
        select k.tick_id, k.tick_time, k.tick_event_seq
          from pgq.tick k
         where k.tick_queue = i_queue_id and k.tick_id > i_prev_tick_id
         order by k.tick_queue, k.tick_id
    loop
        exit when tick_id is not null
              and (coalesce(i_max_events, 0) <= 0
                   or t.tick_event_seq - i_prev_event_seq > i_max_events);
        tick_id := t.tick_id;
        tick_time := t.tick_time;
        tick_event_seq := t.tick_event_seq;
    end loop;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.batch_end_tick(int4, int8, int8, int8) FROM public;

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
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- pgq_rs.finish_batch_at(i_batch_id, ...) and then, when a later tick exists,
-- pgq_rs.next_batch_at(..., i_max_events) — in one update. "finished" is false (and nothing
-- changes) when i_consumer_name does not hold batch i_batch_id on i_queue_name. The batch
-- columns describe the new open batch (NULL when there was no later tick: the row is only
-- finished). "hint" is the ctid of the row afterwards.
declare
    r      record;
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
    if not found then
        return;
    end if;

    select k.tick_time, k.tick_event_seq into prev_tick_time, prev_tick_event_seq
      from pgq.tick k where k.tick_queue = r.sub_queue and k.tick_id = r.sub_next_tick;
    if found then
        select b.tick_id, b.tick_time, b.tick_event_seq into e_tick, e_time, e_seq
          from pgq_rs.batch_end_tick(r.sub_queue, r.sub_next_tick, prev_tick_event_seq, i_max_events) b;
    end if;

    if e_tick is null then
        update pgq.subscription
           set sub_active = now(),
               sub_last_tick = sub_next_tick,
               sub_next_tick = null,
               sub_batch = null
         where ctid = r.row
        returning ctid into v_new;
        prev_tick_time := null;
        prev_tick_event_seq := null;
    else
        batch_id := nextval('pgq.batch_id_seq');
        prev_tick_id := r.sub_next_tick;
        cur_tick_id := e_tick;
        cur_tick_time := e_time;
        cur_tick_event_seq := e_seq;
        update pgq.subscription
           set sub_active = now(),
               sub_last_tick = sub_next_tick,
               sub_next_tick = e_tick,
               sub_batch = batch_id
         where ctid = r.row
        returning ctid into v_new;
    end if;
    finished := v_new is not null;
    hint := v_new::text;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.finish_next_batch_at(int8, text, text, int8) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.finish_next_batch_at(int8, text, text, int8) TO pgq_reader;
