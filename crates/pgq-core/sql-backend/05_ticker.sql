-- pgq_rs SQL backend, part 5: ticks.
--
-- A tick records the transaction snapshot at the moment it is taken and the value of the
-- queue's event sequence; a batch is the events committed between two ticks. pgq.ticker(queue)
-- decides whether the queue needs a tick now, with the rules pgq 3.5 follows (observed):
--   * the queue has no tick yet;
--   * ticker_max_count events or more since the newest tick (by the event sequence);
--   * some events, and the newest tick is ticker_max_lag old;
--   * the newest tick is ticker_idle_period old;
--   * no events since the newest tick, but it is the queue's only tick (a new queue gets its
--     second tick at once);
--   * no events since the newest tick, but the two newest ticks were less than ticker_max_lag
--     apart (a busy queue) and the newest is ticker_max_lag old: events that drew their id
--     before that tick but committed after it get a tick soon, not after ticker_idle_period.

CREATE OR REPLACE FUNCTION pgq.ticker(i_queue_name text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q       record;
    last    record;
    prev    record;
    cur_seq bigint;
    cnt     bigint;
    lag     interval;
    due     boolean;
    new_id  bigint;
begin
    select queue_id, queue_tick_seq, queue_event_seq, queue_external_ticker,
           queue_ticker_paused, queue_ticker_max_count, queue_ticker_max_lag,
           queue_ticker_idle_period
      into q
      from pgq.queue
     where queue_name = i_queue_name;
    if not found then
        raise exception 'no such queue';
    end if;
    if q.queue_external_ticker then
        raise exception 'This queue has external tick source.';
    end if;
    if q.queue_ticker_paused then
        raise exception 'Ticker has been paused for this queue';
    end if;

    cur_seq := pgq.seq_getval(q.queue_event_seq);
    select tick_id, tick_time, tick_snapshot, tick_event_seq
      into last
      from pgq.tick
     where tick_queue = q.queue_id
     order by tick_queue desc, tick_id desc
     limit 1;
    if not found then
        due := true;
    else
        if txid_snapshot_xmax(last.tick_snapshot) > txid_current() then
            raise exception 'Invalid PgQ state: old xmin=%, old xmax=%, cur txid=%',
                txid_snapshot_xmin(last.tick_snapshot), txid_snapshot_xmax(last.tick_snapshot),
                txid_current();
        end if;
        cnt := cur_seq - last.tick_event_seq;
        lag := now() - last.tick_time;
        due := cnt >= q.queue_ticker_max_count
            or (cnt > 0 and lag >= q.queue_ticker_max_lag)
            or lag >= q.queue_ticker_idle_period;
        if not due and cnt <= 0 then
            select tick_time into prev
              from pgq.tick
             where tick_queue = q.queue_id and tick_id < last.tick_id
             order by tick_queue desc, tick_id desc
             limit 1;
            if not found then
                due := true;
            else
                due := lag >= q.queue_ticker_max_lag
                   and last.tick_time - prev.tick_time < q.queue_ticker_max_lag;
            end if;
        end if;
    end if;
    if not due then
        return null;
    end if;

    insert into pgq.tick (tick_queue, tick_id, tick_event_seq)
    values (q.queue_id, nextval(q.queue_tick_seq), cur_seq)
    returning tick_id into new_id;
    return new_id;
end;
$$;

-- Tick every queue that is not paused and has no external tick source; how many got a tick.
CREATE OR REPLACE FUNCTION pgq.ticker()
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q   record;
    n   bigint := 0;
begin
    for q in
        select queue_name
          from pgq.queue
         where not queue_external_ticker and not queue_ticker_paused
         order by queue_name
    loop
        if pgq.ticker(q.queue_name) is not null then
            n := n + 1;
        end if;
    end loop;
    return n;
end;
$$;

-- An external tick source's tick: the given id, time and event sequence value; the queue's
-- sequences are moved forward to them (never back).
CREATE OR REPLACE FUNCTION pgq.ticker(i_queue_name text, i_tick_id bigint,
                                      i_orig_timestamp timestamptz, i_event_seq bigint)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q record;
begin
    select queue_id, queue_tick_seq, queue_event_seq
      into q
      from pgq.queue
     where queue_name = i_queue_name and queue_external_ticker;
    if not found then
        raise exception 'queue not found or ticker disabled: %', i_queue_name;
    end if;
    insert into pgq.tick (tick_queue, tick_id, tick_time, tick_event_seq)
    values (q.queue_id, i_tick_id, i_orig_timestamp, i_event_seq);
    perform pgq.seq_setval(q.queue_tick_seq, i_tick_id);
    perform pgq.seq_setval(q.queue_event_seq, i_event_seq);
    return i_tick_id;
end;
$$;

-- Make the ticker tick the queue soon: move the event sequence past ticker_max_count (the
-- ids skipped are never used). Returns the queue's newest tick id, for the caller to wait until
-- it changes.
CREATE OR REPLACE FUNCTION pgq.force_tick(i_queue_name text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q       record;
    last_id bigint;
begin
    select queue_id, queue_event_seq, queue_ticker_max_count
      into q
      from pgq.queue
     where queue_name = i_queue_name;
    if not found then
        return null;
    end if;
    perform setval(q.queue_event_seq,
                   nextval(q.queue_event_seq) + 2 * q.queue_ticker_max_count + 1000);
    select tick_id into last_id
      from pgq.tick
     where tick_queue = q.queue_id
     order by tick_queue desc, tick_id desc
     limit 1;
    return last_id;
end;
$$;
