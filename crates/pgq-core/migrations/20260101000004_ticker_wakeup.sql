-- pgq-ticker's millisecond reaction for queues with ticker_max_lag = 0 (see docs/ticker.md).
--
-- The ticker polls these queues every few milliseconds with one cheap prepared statement that
-- compares the event sequence and the newest tick (no function call, no write). Only when that
-- says "maybe" does it call pgq_rs.fast_tick(queue_id), which looks for *committed* events that
-- the newest tick does not cover (an index probe on ev_txid) and, if there are any, inserts a tick
-- the way pgq.ticker(queue) does. Producers are never touched: no trigger, no NOTIFY per event.
--
-- Idempotent; everything lives in the pgq_rs schema.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_admin;

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
    execute format(
        'select exists (select 1 from %s where ev_txid >= $1 or ev_txid = any ($2))',
        pgq.quote_fqname(q.queue_data_pfx))
       into pending
      using txid_snapshot_xmax(t.tick_snapshot),
            array(select txid_snapshot_xip(t.tick_snapshot));
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

CREATE OR REPLACE FUNCTION pgq_rs.ticker_notify(i_notify_channel text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- pgq.ticker() for every queue, then NOTIFY i_notify_channel once per queue that got a tick
-- (payload: the queue name). For databases without the pgq.tick wakeup trigger. Returns what
-- pgq.ticker() returns.
declare
    before jsonb;
    n bigint;
begin
    select coalesce(jsonb_object_agg(queue_id::text,
                                     pg_sequence_last_value(queue_tick_seq::regclass)), '{}')
      into before
      from pgq.queue;
    n := pgq.ticker();
    perform pg_notify(i_notify_channel, queue_name)
       from pgq.queue
      where pg_sequence_last_value(queue_tick_seq::regclass)
            > coalesce((before ->> queue_id::text)::bigint, 0);
    return n;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.ticker_notify(text) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.ticker_notify(text) TO pgq_admin;
