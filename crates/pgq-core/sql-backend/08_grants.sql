-- pgq_rs SQL backend, part 8: who may call what (as pgq 3.5 grants it).

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgq FROM public;

GRANT EXECUTE ON FUNCTION
    pgq.get_consumer_info(),
    pgq.get_consumer_info(text),
    pgq.get_consumer_info(text, text),
    pgq.get_queue_info(),
    pgq.get_queue_info(text),
    pgq.quote_fqname(text),
    pgq.seq_getval(text),
    pgq.version()
  TO public;

GRANT EXECUTE ON FUNCTION
    pgq.batch_event_sql(bigint),
    pgq.batch_event_tables(bigint),
    pgq.batch_retry(bigint, integer),
    pgq.event_retry(bigint, bigint, integer),
    pgq.event_retry(bigint, bigint, timestamptz),
    pgq.find_tick_helper(int4, int8, timestamptz, int8, int8, interval),
    pgq.finish_batch(bigint),
    pgq.force_tick(text),
    pgq.get_batch_cursor(bigint, text, int4),
    pgq.get_batch_cursor(bigint, text, int4, text),
    pgq.get_batch_events(bigint),
    pgq.get_batch_info(bigint),
    pgq.next_batch(text, text),
    pgq.next_batch_custom(text, text, interval, int4, interval),
    pgq.next_batch_info(text, text),
    pgq.register_consumer(text, text),
    pgq.register_consumer_at(text, text, bigint),
    pgq.unregister_consumer(text, text)
  TO pgq_reader;

GRANT EXECUTE ON FUNCTION
    pgq.current_event_table(text),
    pgq.insert_event(text, text, text),
    pgq.insert_event(text, text, text, text, text, text, text)
  TO pgq_writer;

GRANT EXECUTE ON FUNCTION
    pgq._grant_perms_from(text, text, text, text),
    pgq.create_queue(text),
    pgq.drop_queue(text),
    pgq.drop_queue(text, boolean),
    pgq.event_retry_raw(text, text, timestamptz, bigint, timestamptz, integer, text, text,
                        text, text, text, text),
    pgq.grant_perms(text),
    pgq.insert_event_raw(text, bigint, timestamptz, integer, integer, text, text, text, text,
                         text, text),
    pgq.maint_operations(),
    pgq.maint_retry_events(),
    pgq.maint_rotate_tables_step1(text),
    pgq.maint_rotate_tables_step2(),
    pgq.maint_tables_to_vacuum(),
    pgq.seq_setval(text, bigint),
    pgq.set_queue_config(text, text, text),
    pgq.ticker(),
    pgq.ticker(text),
    pgq.ticker(text, bigint, timestamptz, bigint),
    pgq.tune_storage(text),
    pgq.upgrade_schema()
  TO pgq_admin;

-- This backend's own helper (pgq_rs): the SQL of a batch, for the reader-level functions above.
GRANT USAGE ON SCHEMA pgq_rs TO pgq_reader, pgq_writer, pgq_admin;
REVOKE ALL ON FUNCTION pgq_rs.sql_backend_batch_sql(bigint, text) FROM public;
GRANT EXECUTE ON FUNCTION pgq_rs.sql_backend_batch_sql(bigint, text) TO pgq_reader;

-- The generated inserter (03_produce.sql) runs with its caller's rights: whoever may call
-- insert_event_raw may call it. Generating it is for create_queue and drop_queue only.
REVOKE ALL ON FUNCTION
    pgq_rs.sql_backend_insert(int4, int4, bigint, timestamptz, int4, int4, text, text, text,
                              text, text, text),
    pgq_rs.sql_backend_build_inserter(),
    pgq_rs.sql_backend_inserter_tree(int4[], text[], int4, int4)
  FROM public;
GRANT EXECUTE ON FUNCTION
    pgq_rs.sql_backend_insert(int4, int4, bigint, timestamptz, int4, int4, text, text, text,
                              text, text, text)
  TO pgq_admin;
