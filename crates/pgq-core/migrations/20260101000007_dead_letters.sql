-- Durable dead letters (pgq_core::dead_letters; the consumer's default dead-letter destination).
--
-- One row per event a consumer gave up on: where it came from (queue, consumer), the event as it
-- was delivered the last time (id, time, txid, type, data, extra1..4; NULL stays NULL), how often
-- it was retried, why it failed and when. A plain table of our schema: pgq's rotation and
-- maintenance never touch it, so a dead letter stays until someone replays or purges it.
--
-- Roles:
--   writing (the consumer, in its batch's transaction)   pgq_reader  (INSERT)
--   listing / showing                                   pgq_reader  (SELECT)
--   replay (pgq_rs.dead_letter_replay)                  pgq_writer  (SECURITY DEFINER function)
--   purge                                               pgq_admin   (DELETE)
--
-- Idempotent; lives in the pgq_rs schema.

CREATE SCHEMA IF NOT EXISTS pgq_rs;

CREATE TABLE IF NOT EXISTS pgq_rs.dead_letter (
    dl_id        bigserial   PRIMARY KEY,
    dl_queue     text        NOT NULL,
    dl_consumer  text        NOT NULL,
    ev_id        bigint      NOT NULL,
    ev_time      timestamptz NOT NULL,
    ev_txid      bigint,
    ev_retry     integer     NOT NULL DEFAULT 0,
    ev_type      text,
    ev_data      text,
    ev_extra1    text,
    ev_extra2    text,
    ev_extra3    text,
    ev_extra4    text,
    dl_reason    text        NOT NULL,
    dl_failed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS dead_letter_queue_consumer_idx
    ON pgq_rs.dead_letter (dl_queue, dl_consumer, dl_id);
CREATE INDEX IF NOT EXISTS dead_letter_failed_at_idx
    ON pgq_rs.dead_letter (dl_failed_at);

GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader, pgq_writer, pgq_admin;
GRANT SELECT, INSERT ON pgq_rs.dead_letter TO pgq_reader;
GRANT USAGE ON SEQUENCE pgq_rs.dead_letter_dl_id_seq TO pgq_reader;
GRANT SELECT, DELETE ON pgq_rs.dead_letter TO pgq_admin;

-- Raise 'dead letters not found: {..}' when an id asked for (i_ids; NULL: none asked for) is not
-- among those found, so that replay and purge change nothing for a mistyped id.
CREATE OR REPLACE FUNCTION pgq_rs.dead_letters_found(i_ids bigint[], i_found bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    missing bigint[];
begin
    select array_agg(x order by x) into missing
      from (select distinct unnest(i_ids) as x) u
     where x <> all (coalesce(i_found, '{}'));
    if missing is not null then
        raise exception 'dead letters not found: %', missing;
    end if;
end;
$$;

GRANT EXECUTE ON FUNCTION pgq_rs.dead_letters_found(bigint[], bigint[]) TO pgq_writer, pgq_admin;

-- Put dead letters back into a queue as new events, and remove them, in one transaction.
--
-- Selects the rows by id (i_ids), or every row when i_ids is NULL, narrowed by queue and consumer
-- when given, and locks them first, so two replays of the same dead letter cannot both insert
-- it. An id that matches no row raises and changes nothing. Each event goes to i_to_queue, or to
-- the queue it came from when that is NULL, with its type, data and extra1..4 unchanged (pgq
-- gives it a new id and time). Any failure (a queue that does not exist, inserts disabled)
-- raises and keeps every row. Returns (dl_id, queue, new ev_id).
CREATE OR REPLACE FUNCTION pgq_rs.dead_letter_replay(
    i_ids bigint[],
    i_queue text,
    i_consumer text,
    i_to_queue text)
RETURNS TABLE (dl_id bigint, queue_name text, ev_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    r       record;
    locked  bigint[];
begin
    select coalesce(array_agg(s.id), '{}') into locked
      from (select d.dl_id as id
              from pgq_rs.dead_letter d
             where (i_ids is null or d.dl_id = any (i_ids))
               and (i_queue is null or d.dl_queue = i_queue)
               and (i_consumer is null or d.dl_consumer = i_consumer)
             order by d.dl_id
               for update) s;
    perform pgq_rs.dead_letters_found(i_ids, locked);
    for r in
        select d.dl_id, d.dl_queue, d.ev_type, d.ev_data,
               d.ev_extra1, d.ev_extra2, d.ev_extra3, d.ev_extra4
          from pgq_rs.dead_letter d
         where d.dl_id = any (locked)
         order by d.dl_id
    loop
        dl_id := r.dl_id;
        queue_name := coalesce(i_to_queue, r.dl_queue);
        ev_id := pgq.insert_event(queue_name, r.ev_type, r.ev_data,
                                  r.ev_extra1, r.ev_extra2, r.ev_extra3, r.ev_extra4);
        delete from pgq_rs.dead_letter d where d.dl_id = r.dl_id;
        return next;
    end loop;
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.dead_letter_replay(bigint[], text, text, text) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.dead_letter_replay(bigint[], text, text, text) TO pgq_writer;

-- Delete dead letters: by id (i_ids), or all (i_ids NULL), narrowed by queue and by age (failed
-- before now() - i_older_than). An id that matches no row raises, which undoes the delete.
-- Runs with the caller's rights: DELETE on the table is pgq_admin's. Returns the ids deleted.
CREATE OR REPLACE FUNCTION pgq_rs.dead_letter_purge(
    i_ids bigint[],
    i_queue text,
    i_older_than interval)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
declare
    gone bigint[];
begin
    with deleted as (
        delete from pgq_rs.dead_letter d
         where (i_ids is null or d.dl_id = any (i_ids))
           and (i_queue is null or d.dl_queue = i_queue)
           and (i_older_than is null or d.dl_failed_at < now() - i_older_than)
        returning d.dl_id)
    select coalesce(array_agg(deleted.dl_id order by deleted.dl_id), '{}') into gone from deleted;
    perform pgq_rs.dead_letters_found(i_ids, gone);
    return query select unnest(gone);
end;
$$;

REVOKE ALL ON FUNCTION pgq_rs.dead_letter_purge(bigint[], text, interval) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.dead_letter_purge(bigint[], text, interval) TO pgq_admin;
