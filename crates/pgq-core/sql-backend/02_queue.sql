-- pgq_rs SQL backend, part 2: utilities and queue management (create, drop, configure).
--
-- Function names, argument names, results, volatility, SECURITY DEFINER and the messages of the
-- errors they raise are those of pgq 3.5, so clients cannot tell the two apart. Every function
-- pins its search_path and qualifies every name.

-- The backend's version: pgq 3.5's API, this project's SQL implementation (revision after
-- "sql."). pgqd and pgq_core accept any "3." version.
CREATE OR REPLACE FUNCTION pgq.version()
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ select '3.5-pgq_rs.sql.3'::text $$;

-- pgq's upgrade helper; nothing to upgrade in place here (pgq_core::install re-applies the
-- backend when its revision changes).
CREATE OR REPLACE FUNCTION pgq.upgrade_schema()
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ select 0 $$;

-- "schema.name" quoted for SQL; the first dot separates the schema, "public" when there is none.
CREATE OR REPLACE FUNCTION pgq.quote_fqname(i_name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
declare
    dot int4 := strpos(i_name, '.');
begin
    if dot = 0 then
        return 'public.' || quote_ident(i_name);
    end if;
    return quote_ident(substr(i_name, 1, dot - 1)) || '.' || quote_ident(substr(i_name, dot + 1));
end;
$$;

-- The sequence's last_value, without advancing it (also for a sequence never used).
CREATE OR REPLACE FUNCTION pgq.seq_getval(i_seq_name text)
RETURNS bigint
LANGUAGE plpgsql STRICT
SET search_path = pg_catalog, pg_temp
AS $$
declare
    v bigint;
begin
    v := pg_sequence_last_value(pgq.quote_fqname(i_seq_name)::regclass);
    if v is null then
        execute 'select last_value from ' || pgq.quote_fqname(i_seq_name) into v;
    end if;
    return v;
end;
$$;

-- setval() that never moves a sequence back; the sequence's last value afterwards.
CREATE OR REPLACE FUNCTION pgq.seq_setval(i_seq_name text, i_new_value bigint)
RETURNS bigint
LANGUAGE plpgsql STRICT
SET search_path = pg_catalog, pg_temp
AS $$
declare
    cur bigint := pgq.seq_getval(i_seq_name);
begin
    if i_new_value > cur then
        perform setval(pgq.quote_fqname(i_seq_name), i_new_value);
        return i_new_value;
    end if;
    return cur;
end;
$$;

-- Give dst_schema.dst_table the grants src_schema.src_table has (owner's own rights excepted).
CREATE OR REPLACE FUNCTION pgq._grant_perms_from(src_schema text, src_table text,
                                                 dst_schema text, dst_table text)
RETURNS integer
LANGUAGE plpgsql STRICT
SET search_path = pg_catalog, pg_temp
AS $$
declare
    g record;
    dst text := quote_ident(dst_schema) || '.' || quote_ident(dst_table);
begin
    for g in
        select a.grantee, a.privilege_type
          from pg_class c
          join pg_namespace n on n.oid = c.relnamespace
         cross join lateral aclexplode(c.relacl) a
         where n.nspname = src_schema and c.relname = src_table
           and a.grantee <> c.relowner
    loop
        execute format('grant %s on %s to %s', g.privilege_type, dst,
                       case when g.grantee = 0 then 'public'
                            else quote_ident(pg_get_userbyid(g.grantee)) end);
    end loop;
    return 1;
end;
$$;

-- The event tables of a queue get the grants of pgq.event_template; its sequences are readable
-- by everyone and pgq_admin may draw event ids.
CREATE OR REPLACE FUNCTION pgq.grant_perms(x_queue_name text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q record;
    i int4;
    pfx_table text;
begin
    select queue_ntables, queue_data_pfx, queue_event_seq, queue_tick_seq
      into q
      from pgq.queue
     where queue_name = x_queue_name;
    if not found then
        raise exception 'Queue not found';
    end if;
    pfx_table := substr(q.queue_data_pfx, strpos(q.queue_data_pfx, '.') + 1);
    perform pgq._grant_perms_from('pgq', 'event_template', 'pgq', pfx_table);
    for i in 0 .. q.queue_ntables - 1 loop
        perform pgq._grant_perms_from('pgq', 'event_template', 'pgq', pfx_table || '_' || i);
    end loop;
    execute 'grant select on ' || pgq.quote_fqname(q.queue_event_seq) || ', '
            || pgq.quote_fqname(q.queue_tick_seq) || ' to public';
    execute 'grant usage on ' || pgq.quote_fqname(q.queue_event_seq) || ' to pgq_admin';
    return 1;
end;
$$;

-- Storage settings of a queue's event tables: they are only inserted into and truncated.
CREATE OR REPLACE FUNCTION pgq.tune_storage(i_queue_name text)
RETURNS integer
LANGUAGE plpgsql STRICT
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q record;
    i int4;
begin
    select queue_ntables, queue_data_pfx into q from pgq.queue where queue_name = i_queue_name;
    if not found then
        return 0;
    end if;
    for i in 0 .. q.queue_ntables - 1 loop
        execute 'alter table ' || pgq.quote_fqname(q.queue_data_pfx || '_' || i)
                || ' set (fillfactor = 100, autovacuum_enabled = off,'
                || ' toast.autovacuum_enabled = off)';
    end loop;
    return 1;
end;
$$;

-- A new queue: its row, its event tables (pgq.event_<id> and the rotating pgq.event_<id>_<n>),
-- its sequences, and its first tick. 0 when the queue exists already.
CREATE OR REPLACE FUNCTION pgq.create_queue(i_queue_name text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    id      int4;
    pfx     text;
    parent  text;
    child   text;
    n       int4;
    i       int4;
begin
    if i_queue_name is null then
        raise exception 'Invalid NULL value';
    end if;
    perform 1 from pgq.queue where queue_name = i_queue_name;
    if found then
        return 0;
    end if;

    id := nextval('pgq.queue_queue_id_seq');
    pfx := 'pgq.event_' || id;
    insert into pgq.queue (queue_id, queue_name, queue_data_pfx, queue_event_seq, queue_tick_seq)
    values (id, i_queue_name, pfx, pfx || '_id_seq', pfx || '_tick_seq')
    returning queue_ntables into n;

    execute 'create sequence ' || pgq.quote_fqname(pfx || '_id_seq');
    execute 'create sequence ' || pgq.quote_fqname(pfx || '_tick_seq');
    parent := pgq.quote_fqname(pfx);
    execute 'create table ' || parent || ' () inherits (pgq.event_template)';
    for i in 0 .. n - 1 loop
        child := pgq.quote_fqname(pfx || '_' || i);
        execute 'create table ' || child || ' () inherits (' || parent || ')';
        execute 'alter table ' || child || ' alter column ev_id set default nextval('
                || quote_literal(pfx || '_id_seq') || ')';
        execute 'create index ' || quote_ident('event_' || id || '_' || i || '_txid_idx')
                || ' on ' || child || ' (ev_txid)';
    end loop;

    perform pgq.grant_perms(i_queue_name);
    perform pgq.ticker(i_queue_name);
    perform pgq.tune_storage(i_queue_name);
    perform pgq_rs.sql_backend_build_inserter();
    return 1;
end;
$$;

-- Drop a queue with its tables, sequences and ticks; with x_force its consumers are
-- unregistered first, else a queue with consumers is refused.
CREATE OR REPLACE FUNCTION pgq.drop_queue(x_queue_name text, x_force boolean)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
declare
    q       record;
    c       record;
    i       int4;
begin
    select queue_id, queue_ntables, queue_data_pfx, queue_event_seq, queue_tick_seq
      into q
      from pgq.queue
     where queue_name = x_queue_name
       for update;
    if not found then
        raise exception 'No such event queue';
    end if;

    if x_force then
        for c in
            select co.co_name
              from pgq.subscription s
              join pgq.consumer co on co.co_id = s.sub_consumer
             where s.sub_queue = q.queue_id
             order by s.sub_last_tick is null, co.co_name
        loop
            perform pgq.unregister_consumer(x_queue_name, c.co_name);
        end loop;
    else
        perform 1 from pgq.subscription where sub_queue = q.queue_id;
        if found then
            raise exception 'cannot drop queue, consumers still attached';
        end if;
    end if;

    delete from pgq.retry_queue where ev_queue = q.queue_id;
    delete from pgq.tick where tick_queue = q.queue_id;
    delete from pgq.queue where queue_id = q.queue_id;
    for i in 0 .. q.queue_ntables - 1 loop
        execute 'drop table ' || pgq.quote_fqname(q.queue_data_pfx || '_' || i);
    end loop;
    execute 'drop table ' || pgq.quote_fqname(q.queue_data_pfx);
    execute 'drop sequence ' || pgq.quote_fqname(q.queue_event_seq);
    execute 'drop sequence ' || pgq.quote_fqname(q.queue_tick_seq);
    perform pgq_rs.sql_backend_build_inserter();
    return 1;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.drop_queue(x_queue_name text)
RETURNS integer
LANGUAGE sql STRICT
SET search_path = pg_catalog, pg_temp
AS $$ select pgq.drop_queue(x_queue_name, false) $$;

-- Set one of a queue's ticker or rotation settings (names without the "queue_" prefix).
CREATE OR REPLACE FUNCTION pgq.set_queue_config(x_queue_name text, x_param_name text,
                                                x_param_value text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
begin
    if x_queue_name is null or x_param_name is null then
        raise exception 'Invalid NULL value';
    end if;
    perform 1 from pgq.queue where queue_name = x_queue_name;
    if not found then
        raise exception 'No such event queue';
    end if;
    if x_param_name not in ('ticker_max_count', 'ticker_max_lag', 'ticker_idle_period',
                            'ticker_paused', 'rotation_period', 'external_ticker') then
        -- pgq 3.5 words this message with an "s" after the name; clients may match on it.
        raise exception 'cannot change parameter "%s"', x_param_name;
    end if;
    if x_param_value is null then
        raise exception 'query string argument of EXECUTE is null'
            using errcode = 'null_value_not_allowed';
    end if;
    execute 'update pgq.queue set ' || quote_ident('queue_' || x_param_name) || ' = '
            || quote_literal(x_param_value) || ' where queue_name = '
            || quote_literal(x_queue_name);
    return 1;
end;
$$;
