-- Read-only monitoring with the least privilege.
--
-- `pgq status`, `pgq install --check`, `pgq queue info` and `pgq consumer list` read two things a
-- pgq role could not read before:
--
-- * our schema's version, kept in sqlx's bookkeeping table pgq_rs._sqlx_migrations (created by
--   the migrator before it applies the migrations; owned by the installing superuser). SELECT is
--   granted to pgq_reader and pgq_writer (pgq_admin is a member of both). The table holds only
--   migration versions, descriptions and checksums.
-- * how many events wait in each consumer's retry queue. pgq grants SELECT on pgq.retry_queue to
--   pgq_admin only (and pgq's own upgrade scripts reset that table's grants), so instead of
--   granting on pgq's table, pgq_rs.retry_counts() returns the counts (never the events) to
--   pgq_reader.
--
-- Idempotent. The grant on the bookkeeping table is skipped when the table does not exist (a dev
-- database that scripts/sqlx-prepare fills with psql).

GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader, pgq_writer, pgq_admin;

DO $$
BEGIN
    IF to_regclass('pgq_rs._sqlx_migrations') IS NOT NULL THEN
        GRANT SELECT ON pgq_rs._sqlx_migrations TO pgq_reader, pgq_writer;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgq_rs.retry_counts()
RETURNS TABLE (queue_name text, consumer_name text, events bigint, next_due timestamptz)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- Events in pgq.retry_queue per subscription (only subscriptions that have some).
    select q.queue_name, c.co_name, count(*), min(r.ev_retry_after)
      from pgq.retry_queue r
      join pgq.subscription s on s.sub_id = r.ev_owner
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     group by q.queue_name, c.co_name
     order by q.queue_name, c.co_name
$$;

REVOKE ALL ON FUNCTION pgq_rs.retry_counts() FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.retry_counts() TO pgq_reader;
