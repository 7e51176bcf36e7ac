-- pgq_rs SQL backend, part 4: registration and the information functions.

-- Register x_consumer_name on x_queue_name at tick x_tick_pos (NULL: the newest tick). An
-- existing registration is moved to x_tick_pos (its open batch is dropped) when one is given.
-- 1 for a new registration, 0 for an existing one.
CREATE OR REPLACE FUNCTION pgq.register_consumer_at(x_queue_name text, x_consumer_name text,
                                                    x_tick_pos bigint)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    v_queue int4;
    v_cons  int4;
    v_tick  bigint;
begin
    select queue_id into v_queue from pgq.queue where queue_name = x_queue_name;
    if not found then
        raise exception 'Event queue not created yet';
    end if;

    select co_id into v_cons from pgq.consumer where co_name = x_consumer_name;
    if not found then
        insert into pgq.consumer (co_name) values (x_consumer_name)
        on conflict on constraint consumer_name_uq do nothing
        returning co_id into v_cons;
        if v_cons is null then
            select co_id into v_cons from pgq.consumer where co_name = x_consumer_name;
        end if;
    end if;

    if x_tick_pos is null then
        select tick_id into v_tick
          from pgq.tick
         where tick_queue = v_queue
         order by tick_queue desc, tick_id desc
         limit 1;
        if not found then
            raise exception 'No ticks for this queue';
        end if;
    else
        select tick_id into v_tick
          from pgq.tick
         where tick_queue = v_queue and tick_id = x_tick_pos;
        if not found then
            raise exception 'cannot reposition, tick not found: %', x_tick_pos;
        end if;
    end if;

    perform 1 from pgq.subscription where sub_queue = v_queue and sub_consumer = v_cons;
    if found then
        if x_tick_pos is not null then
            update pgq.subscription
               set sub_last_tick = v_tick,
                   sub_batch = null,
                   sub_next_tick = null,
                   sub_active = now()
             where sub_queue = v_queue and sub_consumer = v_cons;
        end if;
        return 0;
    end if;

    insert into pgq.subscription (sub_queue, sub_consumer, sub_last_tick)
    values (v_queue, v_cons, v_tick);
    return 1;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.register_consumer(x_queue_name text, x_consumer_id text)
RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ select pgq.register_consumer_at(x_queue_name, x_consumer_id, null) $$;

-- Unregister a consumer: its retry events and its registration (with the members of its
-- cooperative group, which share its sub_id). A cooperative member (a registration sharing its
-- sub_id, idle without a position or holding a batch) is removed alone. Returns the number of
-- registrations removed.
CREATE OR REPLACE FUNCTION pgq.unregister_consumer(x_queue_name text, x_consumer_name text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    s   record;
    n   integer;
begin
    select sub.sub_id, sub.sub_queue, sub.sub_consumer, sub.sub_last_tick, sub.sub_next_tick
      into s
      from pgq.subscription sub
      join pgq.queue q on q.queue_id = sub.sub_queue
      join pgq.consumer c on c.co_id = sub.sub_consumer
     where q.queue_name = x_queue_name and c.co_name = x_consumer_name
       for update of sub;
    if not found then
        return 0;
    end if;

    if (s.sub_last_tick is null or s.sub_next_tick is not null)
       and exists (select 1 from pgq.subscription o
                    where o.sub_id = s.sub_id and o.sub_queue = s.sub_queue
                      and o.sub_consumer <> s.sub_consumer) then
        delete from pgq.subscription
         where sub_queue = s.sub_queue and sub_consumer = s.sub_consumer;
        return 1;
    end if;

    delete from pgq.retry_queue where ev_owner = s.sub_id;
    delete from pgq.subscription where sub_queue = s.sub_queue and sub_id = s.sub_id;
    get diagnostics n = row_count;
    delete from pgq.consumer c
     where c.co_id = s.sub_consumer
       and not exists (select 1 from pgq.subscription x where x.sub_consumer = c.co_id);
    return n;
end;
$$;

-- Queues with their settings and state: lag of the newest tick, events per second over the
-- last 20 ticks, events not yet covered by a tick, the newest tick.
CREATE OR REPLACE FUNCTION pgq.get_queue_info(
    in i_queue_name text,
    out queue_name text, out queue_ntables integer, out queue_cur_table integer,
    out queue_rotation_period interval, out queue_switch_time timestamptz,
    out queue_external_ticker boolean, out queue_ticker_paused boolean,
    out queue_ticker_max_count integer, out queue_ticker_max_lag interval,
    out queue_ticker_idle_period interval, out ticker_lag interval, out ev_per_sec float8,
    out ev_new bigint, out last_tick_id bigint)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return query
    select q.queue_name, q.queue_ntables, q.queue_cur_table, q.queue_rotation_period,
           q.queue_switch_time, q.queue_external_ticker, q.queue_ticker_paused,
           q.queue_ticker_max_count, q.queue_ticker_max_lag, q.queue_ticker_idle_period,
           now() - lt.tick_time,
           case when lt.tick_time > rt.tick_time
                then (lt.tick_event_seq - rt.tick_event_seq)::float8
                     / extract(epoch from lt.tick_time - rt.tick_time)::float8
           end,
           pgq.seq_getval(q.queue_event_seq) - lt.tick_event_seq,
           lt.tick_id
      from pgq.queue q
      left join lateral (select t.tick_id, t.tick_time, t.tick_event_seq
                           from pgq.tick t
                          where t.tick_queue = q.queue_id
                          order by t.tick_queue desc, t.tick_id desc
                          limit 1) lt on true
      left join lateral (select t.tick_time, t.tick_event_seq
                           from pgq.tick t
                          where t.tick_queue = q.queue_id and t.tick_id >= lt.tick_id - 20
                          order by t.tick_queue, t.tick_id
                          limit 1) rt on true
     where i_queue_name is null or q.queue_name = i_queue_name
     order by q.queue_name;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.get_queue_info(
    out queue_name text, out queue_ntables integer, out queue_cur_table integer,
    out queue_rotation_period interval, out queue_switch_time timestamptz,
    out queue_external_ticker boolean, out queue_ticker_paused boolean,
    out queue_ticker_max_count integer, out queue_ticker_max_lag interval,
    out queue_ticker_idle_period interval, out ticker_lag interval, out ev_per_sec float8,
    out ev_new bigint, out last_tick_id bigint)
RETURNS SETOF record
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ select * from pgq.get_queue_info(null::text) $$;

-- Consumers with their position: age of their last tick, time since they were last active,
-- their open batch, and the events between their position and the queue's newest tick.
-- NULL arguments mean all queues / all consumers.
CREATE OR REPLACE FUNCTION pgq.get_consumer_info(
    in i_queue_name text, in i_consumer_name text,
    out queue_name text, out consumer_name text, out lag interval, out last_seen interval,
    out last_tick bigint, out current_batch bigint, out next_tick bigint,
    out pending_events bigint)
RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
begin
    return query
    select q.queue_name, c.co_name, now() - t.tick_time, now() - s.sub_active,
           s.sub_last_tick, s.sub_batch, s.sub_next_tick,
           nt.tick_event_seq - t.tick_event_seq
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
      left join pgq.tick t on t.tick_queue = s.sub_queue and t.tick_id = s.sub_last_tick
      left join lateral (select x.tick_event_seq
                           from pgq.tick x
                          where x.tick_queue = q.queue_id
                          order by x.tick_queue desc, x.tick_id desc
                          limit 1) nt on true
     where (i_queue_name is null or q.queue_name = i_queue_name)
       and (i_consumer_name is null or c.co_name = i_consumer_name)
     order by q.queue_name, c.co_name;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.get_consumer_info(
    in i_queue_name text,
    out queue_name text, out consumer_name text, out lag interval, out last_seen interval,
    out last_tick bigint, out current_batch bigint, out next_tick bigint,
    out pending_events bigint)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ select * from pgq.get_consumer_info(i_queue_name, null::text) $$;

CREATE OR REPLACE FUNCTION pgq.get_consumer_info(
    out queue_name text, out consumer_name text, out lag interval, out last_seen interval,
    out last_tick bigint, out current_batch bigint, out next_tick bigint,
    out pending_events bigint)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ select * from pgq.get_consumer_info(null::text, null::text) $$;
