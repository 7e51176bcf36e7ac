-- Registration that cannot rewind, unregistering that cannot lose a cooperative batch, and a
-- marker telling our pgq_coop schema from another one.
--
--   * pgq_rs.register_consumer(queue, consumer, tick): registers the consumer at `tick` (NULL:
--     the latest tick) unless it is registered already, which it then leaves where it is. The
--     check and the registration run under a transaction-scoped advisory lock keyed on queue and
--     consumer, so two processes registering the same consumer at the same moment cannot both
--     see it missing, and the later one never moves (rewinds) what the first one registered.
--   * pgq_rs.unregister_consumer(queue, consumer): pgq.unregister_consumer, except that a
--     cooperative member holding a batch first returns the batch's events to its group (through
--     the retry queue, as pgq_coop.unregister_subconsumer(..., 1) and a member's leave do).
--     pgq's own pgq.unregister_consumer on a member drops them.
--   * our pgq_coop.register_subconsumer takes the same locks (on the group, then the member),
--     and no longer locks an existing group's pgq.consumer row: a member registering while
--     another took a batch could deadlock with it.
--   * COMMENT ON SCHEMA pgq_coop marks the schema as ours ('pgq_rs: ...'); pgq_core::coop_flavor
--     reads it. A pgq_coop schema without the marker (the upstream extension, or its SQL loaded
--     by hand) has other semantics, and our cooperative consumer refuses to run against it.
--
-- Roles: both functions run as the caller (SECURITY INVOKER) and need pgq_reader, like the pgq
-- functions they call. Idempotent.

CREATE SCHEMA IF NOT EXISTS pgq_rs;
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader;

-- The advisory lock (two-key form, class 'pgqr') serialising registration of one consumer name
-- on one queue, held until the end of the calling transaction.
CREATE OR REPLACE FUNCTION pgq_rs.registration_lock(i_queue_name text, i_consumer_name text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(1885827442,
        pg_catalog.hashtext(i_queue_name || pg_catalog.chr(31) || i_consumer_name));
$$;

CREATE OR REPLACE FUNCTION pgq_rs.register_consumer(
    i_queue_name text, i_consumer_name text, i_tick_id int8)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgq_rs.registration_lock(i_queue_name, i_consumer_name);
    -- Under the lock, a fresh snapshot (READ COMMITTED) sees a registration committed by whoever
    -- held it before.
    PERFORM 1
       FROM pgq.subscription s
       JOIN pgq.queue q ON q.queue_id = s.sub_queue
       JOIN pgq.consumer c ON c.co_id = s.sub_consumer
      WHERE q.queue_name = i_queue_name AND c.co_name = i_consumer_name;
    IF FOUND THEN
        RETURN 0;
    END IF;
    IF i_tick_id IS NULL THEN
        RETURN pgq.register_consumer(i_queue_name, i_consumer_name);
    END IF;
    RETURN pgq.register_consumer_at(i_queue_name, i_consumer_name, i_tick_id);
END;
$$;

CREATE OR REPLACE FUNCTION pgq_rs.unregister_consumer(i_queue_name text, i_consumer_name text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    _s record;
BEGIN
    PERFORM pgq_rs.registration_lock(i_queue_name, i_consumer_name);
    SELECT s.sub_id, s.sub_queue, s.sub_batch, s.sub_last_tick, s.sub_next_tick INTO _s
      FROM pgq.subscription s
      JOIN pgq.queue q ON q.queue_id = s.sub_queue
      JOIN pgq.consumer c ON c.co_id = s.sub_consumer
     WHERE q.queue_name = i_queue_name AND c.co_name = i_consumer_name
       FOR UPDATE OF s;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- A cooperative member shares its group's sub_id and has both ticks set (holding a batch) or
    -- neither (idle); pgq.unregister_consumer removes only its row then. Its batch goes back to
    -- the group first: the retry queue rows are owned by the shared sub_id.
    IF _s.sub_batch IS NOT NULL
       AND (_s.sub_last_tick IS NULL) = (_s.sub_next_tick IS NULL)
       AND (SELECT count(*) FROM pgq.subscription o WHERE o.sub_id = _s.sub_id) > 1
    THEN
        PERFORM pgq.batch_retry(_s.sub_batch, 0);
    END IF;
    RETURN pgq.unregister_consumer(i_queue_name, i_consumer_name);
END;
$$;

REVOKE ALL ON FUNCTION pgq_rs.registration_lock(text, text) FROM public;
REVOKE ALL ON FUNCTION pgq_rs.register_consumer(text, text, int8) FROM public;
REVOKE ALL ON FUNCTION pgq_rs.unregister_consumer(text, text) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.registration_lock(text, text) TO pgq_reader;
GRANT EXECUTE ON FUNCTION pgq_rs.register_consumer(text, text, int8) TO pgq_reader;
GRANT EXECUTE ON FUNCTION pgq_rs.unregister_consumer(text, text) TO pgq_reader;

-- Our pgq_coop (only when migration 03 installed it): registration under the same locks, and the
-- marker.
DO $migration$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgq_coop')
       OR to_regprocedure('pgq_coop._member(text,text,text)') IS NULL THEN
        RETURN;
    END IF;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.register_subconsumer(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text)
RETURNS integer AS $body$
DECLARE
    _queue_id int4;
    _group record;
    _member_co int4;
BEGIN
    PERFORM pgq_coop._check_names(i_consumer_name, i_subconsumer_name);
    SELECT queue_id INTO _queue_id FROM pgq.queue WHERE queue_name = i_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Event queue not found: %', i_queue_name;
    END IF;
    -- Members creating their group at the same moment, or one member name registered twice at
    -- once, wait for each other instead of failing on pgq.consumer's unique name.
    PERFORM pg_catalog.pg_advisory_xact_lock(1885827442,
        pg_catalog.hashtext(i_queue_name || pg_catalog.chr(31) || i_consumer_name));
    PERFORM pg_catalog.pg_advisory_xact_lock(1885827442,
        pg_catalog.hashtext(i_queue_name || pg_catalog.chr(31) || i_consumer_name || '.' || i_subconsumer_name));
    -- The group's row first, as next_batch_custom locks it; only a new group is registered
    -- (pgq.register_consumer locks the group's pgq.consumer row, which a member taking a batch
    -- needs after the group's row: calling it for an existing group could deadlock).
    SELECT s.sub_id, s.sub_batch INTO _group
      FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
     WHERE s.sub_queue = _queue_id AND c.co_name = i_consumer_name
       FOR UPDATE OF s;
    IF NOT FOUND THEN
        PERFORM pgq.register_consumer(i_queue_name, i_consumer_name);
        SELECT s.sub_id, s.sub_batch INTO _group
          FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
         WHERE s.sub_queue = _queue_id AND c.co_name = i_consumer_name
           FOR UPDATE OF s;
    END IF;
    IF _group.sub_batch IS NOT NULL THEN
        RAISE EXCEPTION 'pgq_coop: consumer % on queue % holds a batch as a plain consumer; finish it before using the consumer as a cooperative group',
            i_consumer_name, i_queue_name;
    END IF;

    SELECT co_id INTO _member_co FROM pgq.consumer
     WHERE co_name = i_consumer_name || '.' || i_subconsumer_name;
    IF NOT FOUND THEN
        INSERT INTO pgq.consumer (co_name) VALUES (i_consumer_name || '.' || i_subconsumer_name)
        RETURNING co_id INTO _member_co;
    END IF;
    PERFORM 1 FROM pgq.subscription WHERE sub_queue = _queue_id AND sub_consumer = _member_co;
    IF FOUND THEN
        PERFORM 1 FROM pgq.subscription
         WHERE sub_queue = _queue_id AND sub_consumer = _member_co AND sub_id = _group.sub_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pgq_coop: % on queue % is a plain consumer, not a cooperative member of group %',
                i_consumer_name || '.' || i_subconsumer_name, i_queue_name, i_consumer_name;
        END IF;
        RETURN 0;
    END IF;
    INSERT INTO pgq.subscription (sub_id, sub_queue, sub_consumer, sub_last_tick, sub_next_tick, sub_batch, sub_active)
    VALUES (_group.sub_id, _queue_id, _member_co, NULL, NULL, NULL, now());
    RETURN 1;
END;
$body$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog;
$fn$;

    EXECUTE $c$COMMENT ON SCHEMA pgq_coop IS 'pgq_rs: cooperative consumers, pgq_coop compatible (see pgq_rs migration 20260101000003)'$c$;
END
$migration$;
