-- Consumer wakeups and consumer helpers (pgq-consumer; see pgq_core's `wakeup` module).
--
-- 1. A trigger on pgq.tick sends NOTIFY pgq_tick, payload = queue name, for every new tick, so
--    consumers LISTENing on `pgq_tick` wake within milliseconds whoever the ticker is (pgq-ticker,
--    pgqd, a manual pgq.ticker() call). PostgreSQL sends notifications at commit and drops
--    duplicates within a transaction, so a ticker round costs one notification per ticked queue.
--    Producers are never touched: there is no NOTIFY per event.
-- 2. pgq_rs.event_retry_many: put many events of a batch into the retry queue in one statement
--    (pgq.event_retry re-reads the whole batch once per event). Granted to pgq_reader.
--
-- Idempotent; everything lives in the pgq_rs schema.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader;

CREATE OR REPLACE FUNCTION pgq_rs.tick_notify()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- AFTER INSERT ... FOR EACH ROW on pgq.tick: NOTIFY pgq_tick with the queue's name.
begin
    perform pg_notify('pgq_tick', q.queue_name)
       from pgq.queue q
      where q.queue_id = new.tick_queue;
    return null;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.tick_notify() FROM public;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = 'pgq.tick'::regclass
                      AND tgname = 'pgq_rs_tick_notify') THEN
        CREATE TRIGGER pgq_rs_tick_notify
            AFTER INSERT ON pgq.tick
            FOR EACH ROW EXECUTE FUNCTION pgq_rs.tick_notify();
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgq_rs.event_retry_many(
    i_batch_id bigint,
    i_ev_ids bigint[],
    i_retry_after timestamptz[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- Put the events i_ev_ids of the open batch i_batch_id into the retry queue, each to come back
-- after the matching i_retry_after (ev_retry + 1, as pgq.event_retry does). One pass over the
-- batch whatever the number of events. Ids that are not in the batch, or already in the retry
-- queue, are skipped. Returns how many events were put into the retry queue.
declare
    s   record;
    n   integer;
begin
    select sub_id, sub_queue into s
      from pgq.subscription
     where sub_batch = i_batch_id;
    if not found then
        raise exception 'batch not found: %', i_batch_id;
    end if;
    if coalesce(cardinality(i_ev_ids), 0) = 0 then
        return 0;
    end if;
    if cardinality(i_ev_ids) <> coalesce(cardinality(i_retry_after), 0) then
        raise exception 'event_retry_many: % event ids but % retry times',
            cardinality(i_ev_ids), coalesce(cardinality(i_retry_after), 0);
    end if;
    execute
        'insert into pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid,'
        || ' ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
        || ' select r.after, $1, ev.ev_id, ev.ev_time, null, $2, coalesce(ev.ev_retry, 0) + 1,'
        || ' ev.ev_type, ev.ev_data, ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4'
        || ' from (' || pgq.batch_event_sql(i_batch_id) || ') ev'
        || ' join (select id, min(after) as after from unnest($3, $4) as u(id, after)'
        || ' group by id) r on r.id = ev.ev_id'
        || ' on conflict do nothing'
      using s.sub_queue, s.sub_id, i_ev_ids, i_retry_after;
    get diagnostics n = row_count;
    return n;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.event_retry_many(bigint, bigint[], timestamptz[]) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.event_retry_many(bigint, bigint[], timestamptz[]) TO pgq_reader;
