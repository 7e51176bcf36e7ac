-- Cooperative consumption: a schema `pgq_coop` compatible with the SkyTools pgq_coop API (same
-- function names and arguments, so python3-pgq's CoopConsumer works against it), written for this
-- project from the documented behaviour, with these differences:
--   * a takeover of a dead member's batch hands out a fresh batch id; the old id stops working;
--   * unregister_subconsumer(..., 1) with a batch in flight returns its events to the group
--     through the retry queue instead of dropping them;
--   * touch() is a heartbeat: a member handling a long batch stays alive; the dead-member scan only
--     takes over batches and never deletes members;
--   * the functions refuse rows that are not cooperative (a plain consumer's batch, for example);
--   * group and member names containing '.' are refused ('group.member' must be unambiguous);
--   * batch allocation and takeover are serialised per group, so no batch is handed out twice.
--
-- State lives in pgq's own tables: a group is an ordinary pgq consumer; each member is a pgq
-- consumer named 'group.member' whose subscription shares the group's sub_id. An idle member has
-- no ticks; a member holding a batch has the batch's ticks, so it holds back rotation like any
-- consumer. pgq.unregister_consumer(queue, group) removes the whole group.
--
-- Installed only when a real pgq_coop extension is not present.
DO $migration$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgq_coop') THEN
        RAISE NOTICE 'the pgq_coop extension is installed: using it';
        RETURN;
    END IF;

    EXECUTE 'CREATE SCHEMA IF NOT EXISTS pgq_coop';
    EXECUTE 'GRANT USAGE ON SCHEMA pgq_coop TO public';

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop._check_names(i_consumer_name text, i_subconsumer_name text)
RETURNS void AS $body$
BEGIN
    IF i_consumer_name IS NULL OR i_consumer_name = '' OR i_subconsumer_name IS NULL OR i_subconsumer_name = '' THEN
        RAISE EXCEPTION 'pgq_coop: invalid name: group and member names must not be empty';
    END IF;
    IF position('.' in i_consumer_name) > 0 OR position('.' in i_subconsumer_name) > 0 THEN
        RAISE EXCEPTION 'pgq_coop: invalid name %.%: group and member names must not contain "."',
            i_consumer_name, i_subconsumer_name;
    END IF;
END;
$body$ LANGUAGE plpgsql IMMUTABLE;
$fn$;

    -- The member's subscription and its group's, locked in that order.
    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop._member(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text,
    OUT queue_id int4, OUT sub_id int4, OUT group_co_id int4, OUT member_co_id int4,
    OUT sub_batch int8)
AS $body$
BEGIN
    PERFORM pgq_coop._check_names(i_consumer_name, i_subconsumer_name);
    SELECT q.queue_id INTO queue_id FROM pgq.queue q WHERE q.queue_name = i_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Event queue not found: %', i_queue_name;
    END IF;
    SELECT s.sub_id, s.sub_consumer, s.sub_batch
      INTO sub_id, member_co_id, sub_batch
      FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
     WHERE s.sub_queue = queue_id AND c.co_name = i_consumer_name || '.' || i_subconsumer_name
       FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer not registered: subconsumer % of group % on queue %',
            i_subconsumer_name, i_consumer_name, i_queue_name;
    END IF;
    SELECT s.sub_consumer INTO group_co_id
      FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
     WHERE s.sub_queue = queue_id AND c.co_name = i_consumer_name AND s.sub_id = _member.sub_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgq_coop: % on queue % is not a cooperative member of group %',
            i_consumer_name || '.' || i_subconsumer_name, i_queue_name, i_consumer_name;
    END IF;
END;
$body$ LANGUAGE plpgsql;
$fn$;

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
    -- The group is an ordinary consumer; register it when new.
    PERFORM pgq.register_consumer(i_queue_name, i_consumer_name);
    SELECT s.sub_id, s.sub_batch INTO _group
      FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
     WHERE s.sub_queue = _queue_id AND c.co_name = i_consumer_name
       FOR UPDATE OF s;
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

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.unregister_subconsumer(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text, i_batch_handling integer)
RETURNS integer AS $body$
DECLARE
    _m record;
BEGIN
    BEGIN
        SELECT * INTO _m FROM pgq_coop._member(i_queue_name, i_consumer_name, i_subconsumer_name);
    EXCEPTION WHEN raise_exception THEN
        IF SQLERRM LIKE 'consumer not registered%' THEN
            RETURN 0;
        END IF;
        RAISE;
    END;
    IF _m.sub_batch IS NOT NULL THEN
        IF coalesce(i_batch_handling, 0) <> 1 THEN
            RAISE EXCEPTION 'pgq_coop: subconsumer %.% holds batch %: finish it first, or unregister with batch_handling = 1 to return its events to the group',
                i_consumer_name, i_subconsumer_name, _m.sub_batch;
        END IF;
        -- Return the batch's events to the group: they come back after the retry step and a tick.
        PERFORM pgq.batch_retry(_m.sub_batch, 0);
    END IF;
    DELETE FROM pgq.subscription WHERE sub_queue = _m.queue_id AND sub_consumer = _m.member_co_id;
    DELETE FROM pgq.consumer c WHERE c.co_id = _m.member_co_id
       AND NOT EXISTS (SELECT 1 FROM pgq.subscription s WHERE s.sub_consumer = _m.member_co_id);
    RETURN 1;
END;
$body$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.next_batch_custom(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text,
    i_min_lag interval, i_min_count int4, i_min_interval interval, i_dead_interval interval)
RETURNS int8 AS $body$
DECLARE
    _m record;
    _dead record;
    _b record;
    _new_id int8;
BEGIN
    SELECT * INTO _m FROM pgq_coop._member(i_queue_name, i_consumer_name, i_subconsumer_name);
    -- The same batch until it is finished.
    IF _m.sub_batch IS NOT NULL THEN
        UPDATE pgq.subscription SET sub_active = now()
         WHERE sub_queue = _m.queue_id AND sub_consumer = _m.member_co_id;
        RETURN _m.sub_batch;
    END IF;

    -- Serialise allocation and takeover within the group.
    PERFORM 1 FROM pgq.subscription
     WHERE sub_queue = _m.queue_id AND sub_consumer = _m.group_co_id FOR UPDATE;

    IF i_dead_interval IS NOT NULL THEN
        SELECT s.sub_consumer, s.sub_last_tick, s.sub_next_tick INTO _dead
          FROM pgq.subscription s
         WHERE s.sub_queue = _m.queue_id AND s.sub_id = _m.sub_id
           AND s.sub_consumer NOT IN (_m.group_co_id, _m.member_co_id)
           AND s.sub_batch IS NOT NULL
           AND s.sub_active < now() - i_dead_interval
         ORDER BY s.sub_active
         LIMIT 1
           FOR UPDATE;
        IF FOUND THEN
            -- The dead member loses the batch; this member gets the same events under a fresh id.
            UPDATE pgq.subscription
               SET sub_batch = NULL, sub_last_tick = NULL, sub_next_tick = NULL
             WHERE sub_queue = _m.queue_id AND sub_consumer = _dead.sub_consumer;
            _new_id := nextval('pgq.batch_id_seq');
            UPDATE pgq.subscription
               SET sub_batch = _new_id, sub_last_tick = _dead.sub_last_tick,
                   sub_next_tick = _dead.sub_next_tick, sub_active = now()
             WHERE sub_queue = _m.queue_id AND sub_consumer = _m.member_co_id;
            RETURN _new_id;
        END IF;
    END IF;

    SELECT * INTO _b FROM pgq.next_batch_custom(i_queue_name, i_consumer_name,
                                                i_min_lag, i_min_count, i_min_interval);
    IF _b.batch_id IS NULL THEN
        RETURN NULL;
    END IF;
    -- The group moves past the batch at once; the member holds it until it finishes.
    UPDATE pgq.subscription
       SET sub_batch = NULL, sub_last_tick = _b.cur_tick_id, sub_next_tick = NULL, sub_active = now()
     WHERE sub_queue = _m.queue_id AND sub_consumer = _m.group_co_id;
    UPDATE pgq.subscription
       SET sub_batch = _b.batch_id, sub_last_tick = _b.prev_tick_id,
           sub_next_tick = _b.cur_tick_id, sub_active = now()
     WHERE sub_queue = _m.queue_id AND sub_consumer = _m.member_co_id;
    RETURN _b.batch_id;
END;
$body$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.next_batch_custom(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text,
    i_min_lag interval, i_min_count int4, i_min_interval interval)
RETURNS int8 AS $body$
    SELECT pgq_coop.next_batch_custom($1, $2, $3, $4, $5, $6, NULL::interval);
$body$ LANGUAGE sql;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.next_batch(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text, i_dead_interval interval)
RETURNS int8 AS $body$
    SELECT pgq_coop.next_batch_custom($1, $2, $3, NULL, NULL, NULL, $4);
$body$ LANGUAGE sql;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.next_batch(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text)
RETURNS int8 AS $body$
    SELECT pgq_coop.next_batch_custom($1, $2, $3, NULL, NULL, NULL, NULL::interval);
$body$ LANGUAGE sql;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.finish_batch(i_batch_id int8)
RETURNS integer AS $body$
DECLARE
    _r record;
BEGIN
    SELECT s.sub_queue, s.sub_consumer, s.sub_id, c.co_name INTO _r
      FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
     WHERE s.sub_batch = i_batch_id
       FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % not found: finished already, or taken over by another member', i_batch_id;
    END IF;
    IF position('.' in _r.co_name) = 0 OR NOT EXISTS (
        SELECT 1 FROM pgq.subscription g JOIN pgq.consumer gc ON gc.co_id = g.sub_consumer
         WHERE g.sub_queue = _r.sub_queue AND g.sub_id = _r.sub_id
           AND gc.co_name = split_part(_r.co_name, '.', 1))
    THEN
        RAISE EXCEPTION 'pgq_coop: batch % belongs to %, which is not a cooperative member; finish it with pgq.finish_batch',
            i_batch_id, _r.co_name;
    END IF;
    UPDATE pgq.subscription
       SET sub_batch = NULL, sub_last_tick = NULL, sub_next_tick = NULL, sub_active = now()
     WHERE sub_queue = _r.sub_queue AND sub_consumer = _r.sub_consumer;
    RETURN 1;
END;
$body$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.touch(
    i_queue_name text, i_consumer_name text, i_subconsumer_name text)
RETURNS integer AS $body$
DECLARE
    _m record;
BEGIN
    SELECT * INTO _m FROM pgq_coop._member(i_queue_name, i_consumer_name, i_subconsumer_name);
    UPDATE pgq.subscription SET sub_active = now()
     WHERE sub_queue = _m.queue_id AND sub_consumer = _m.member_co_id;
    RETURN 1;
END;
$body$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog;
$fn$;

    EXECUTE $fn$
CREATE OR REPLACE FUNCTION pgq_coop.version()
RETURNS text AS $body$
    SELECT '3.1.1'::text;
$body$ LANGUAGE sql IMMUTABLE;
$fn$;

    EXECUTE 'REVOKE ALL ON FUNCTION
        pgq_coop.register_subconsumer(text, text, text),
        pgq_coop.unregister_subconsumer(text, text, text, integer),
        pgq_coop.next_batch_custom(text, text, text, interval, int4, interval, interval),
        pgq_coop.next_batch_custom(text, text, text, interval, int4, interval),
        pgq_coop.next_batch(text, text, text, interval),
        pgq_coop.next_batch(text, text, text),
        pgq_coop.finish_batch(int8),
        pgq_coop.touch(text, text, text),
        pgq_coop._member(text, text, text)
      FROM public';
    EXECUTE 'GRANT EXECUTE ON FUNCTION
        pgq_coop.register_subconsumer(text, text, text),
        pgq_coop.unregister_subconsumer(text, text, text, integer),
        pgq_coop.next_batch_custom(text, text, text, interval, int4, interval, interval),
        pgq_coop.next_batch_custom(text, text, text, interval, int4, interval),
        pgq_coop.next_batch(text, text, text, interval),
        pgq_coop.next_batch(text, text, text),
        pgq_coop.finish_batch(int8),
        pgq_coop.touch(text, text, text)
      TO pgq_reader';
END
$migration$;
