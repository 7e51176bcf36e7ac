-- pgq_rs SQL backend, part 9: the change-capture triggers logutriga, jsontriga and sqltriga.
--
-- Written from pgq's documented behaviour and black-box tests against the extension (tests in
-- tests/backend/diff.rs and pgq-producer's cdc tests pin the output). Arguments: the queue name,
-- then any of SKIP, deny, backup, ignore=cols, pkey=cols, when=expr, ev_type= / ev_data= /
-- ev_extra1..4=expr. Columns named _pgq_ev_type, _pgq_ev_data, _pgq_ev_extra1..4 set that
-- field and are not part of the row data.
--
-- The trigger functions run with their caller's rights and without a pinned search_path: the
-- when= and field expressions are the trigger owner's SQL, evaluated over the row.

-- urlencode as the triggers do: [A-Za-z0-9._-] kept, space as '+', every other byte %xx.
CREATE OR REPLACE FUNCTION pgq_rs.triga_urlencode(s text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
declare
    b bytea;
    c int;
    r text := '';
begin
    if s collate "C" ~ '^[A-Za-z0-9._-]*$' then
        return s;
    end if;
    b := pg_catalog.convert_to(s, pg_catalog.getdatabaseencoding());
    for i in 0 .. pg_catalog.length(b) - 1 loop
        c := pg_catalog.get_byte(b, i);
        if (c between 48 and 57) or (c between 65 and 90) or (c between 97 and 122)
           or c in (45, 46, 95) then
            r := r || pg_catalog.chr(c);
        elsif c = 32 then
            r := r || '+';
        else
            r := r || '%' || pg_catalog.lpad(pg_catalog.to_hex(c), 2, '0');
        end if;
    end loop;
    return r;
end;
$$;

-- name=value&... of the given columns (NULL: the bare name).
CREATE OR REPLACE FUNCTION pgq_rs.triga_urlencode_row(names text[], vals text[])
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    select coalesce(string_agg(pgq_rs.triga_urlencode(n)
                               || coalesce('=' || pgq_rs.triga_urlencode(v), ''), '&' order by o), '')
      from unnest(names, vals) with ordinality as u(n, v, o)
$$;

-- {"name":value,...} of the given columns (values already JSON).
CREATE OR REPLACE FUNCTION pgq_rs.triga_json_row(names text[], vals text[])
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    select '{' || coalesce(string_agg(to_json(n)::text || ':' || coalesce(v, 'null'), ','
                                      order by o), '') || '}'
      from unnest(names, vals) with ordinality as u(n, v, o)
$$;

-- Raise as pgq's C triggers do (SQLSTATE XX000).
CREATE OR REPLACE FUNCTION pgq_rs.triga_fail(msg text)
RETURNS void
LANGUAGE plpgsql
AS $$
begin
    raise exception '%', msg using errcode = 'internal_error';
end;
$$;

-- The statement-level part: TRUNCATE events (any other statement trigger is refused).
CREATE OR REPLACE FUNCTION pgq_rs.triga_statement(
    kind text, op text, tg_when text, relid oid, sch text, tbl text, argv text[])
RETURNS void
LANGUAGE plpgsql
AS $$
declare
    a text;
    n int := 0;
    queue text;
    deny boolean := false;
    skip boolean := false;
    custom_expr boolean := false;
    pk text[];
    ev_type text;
    ev_data text;
begin
    if op <> 'TRUNCATE' then
        perform pgq_rs.triga_fail('pgq Ins/Upd/Del trigger must be fired FOR EACH ROW');
    end if;
    if argv is null or cardinality(argv) < 1 then
        perform pgq_rs.triga_fail('pgq trigger must have destination queue as argument');
    end if;
    foreach a in array argv loop
        n := n + 1;
        if n = 1 then
            queue := a;
        elsif a = 'SKIP' then
            skip := true;
        elsif a = 'deny' then
            deny := true;
        elsif a = 'backup' then
            perform pgq_rs.triga_fail('Backup does not make sense for truncate trigger');
        elsif a like 'ignore=%' then
            perform pgq_rs.triga_fail('Column ignore does not make sense for truncate trigger');
        elsif a like 'pkey=%' then
            perform pgq_rs.triga_fail('Custom pkey_list does not make sense for truncate trigger');
        elsif a ~ '^(when|ev_type|ev_data|ev_extra[1-4])=' then
            custom_expr := true;
        else
            perform pgq_rs.triga_fail('bad param to pgq trigger');
        end if;
    end loop;
    if skip and tg_when = 'AFTER' then
        perform pgq_rs.triga_fail('SKIP does not work in AFTER trigger.');
    end if;
    if deny then
        perform pgq_rs.triga_fail(format('Table ''%s.%s'' to queue ''%s'': change not allowed (%s)',
                                         sch, tbl, queue, op));
    end if;
    if custom_expr then
        perform pgq_rs.triga_fail('Custom expressions do not make sense for truncater trigger');
    end if;
    if kind = 'jsontriga' then
        select coalesce(array_agg(a2.attname::text order by k.o), '{}')
          into pk
          from pg_catalog.pg_index i
               cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, o)
               join pg_catalog.pg_attribute a2
                 on a2.attrelid = i.indrelid and a2.attnum = k.attnum
         where i.indrelid = relid and i.indisprimary;
        ev_type := '{"op":"TRUNCATE","table":[' || to_json(sch)::text || ',' || to_json(tbl)::text
                   || '],"pkey":[' || coalesce((select string_agg(to_json(p)::text, ',')
                                                  from unnest(pk) p), '') || ']}';
        ev_data := '{}';
    else
        ev_type := 'R';
        ev_data := '';
    end if;
    perform pgq.insert_event(queue, ev_type, ev_data, sch || '.' || tbl, null, null, null);
end;
$$;

-- The row-level part, for all three kinds; returns true when the row change is to be skipped.
CREATE OR REPLACE FUNCTION pgq_rs.triga_row(
    kind text, op text, tg_when text, relid oid, sch text, tbl text, argv text[],
    old_row anyelement, new_row anyelement)
RETURNS boolean
LANGUAGE plpgsql
AS $$
declare
    a text;
    n int := 0;
    queue text;
    skip boolean := false;
    deny boolean := false;
    backup boolean := false;
    ignore text[] := '{}';
    pkey_raw text;
    pk text[];
    when_expr text;
    ov_names text[] := '{}';
    ov_exprs text[] := '{}';
    names text[];
    types oid[];
    dnames text[] := '{}';   -- data columns (not ignored, not magic)
    didx int[] := '{}';
    magic_names text[] := '{}';
    magic_idx int[] := '{}';
    sel text;
    vals text[];
    ovals text[];
    jvals text[];
    ojvals text[];
    changed boolean[];
    any_data_changed boolean := false;
    any_ignored_changed boolean := false;
    i int;
    fields text[];   -- ev_type, ev_data, ev_extra1..4
    typ oid;
    res text;
    parts text[];
    wh text[];
    fld text;
begin
    if argv is null or cardinality(argv) < 1 then
        perform pgq_rs.triga_fail('pgq trigger must have destination queue as argument');
    end if;
    foreach a in array argv loop
        n := n + 1;
        if n = 1 then
            queue := a;
        elsif a = 'SKIP' then
            skip := true;
        elsif a = 'deny' then
            deny := true;
        elsif a = 'backup' then
            backup := true;
        elsif a like 'ignore=%' then
            select array_agg(btrim(x)) into ignore
              from unnest(string_to_array(substr(a, 8), ',')) x;
            ignore := coalesce(ignore, '{}');
        elsif a like 'pkey=%' then
            pkey_raw := substr(a, 6);
            select array_agg(btrim(x)) into pk from unnest(string_to_array(pkey_raw, ',')) x;
            pk := coalesce(pk, '{""}');
        elsif a like 'when=%' then
            when_expr := substr(a, 6);
        elsif a ~ '^(ev_type|ev_data|ev_extra[1-4])=' then
            -- Of two for one field, the first counts; an empty one sets nothing.
            if not (split_part(a, '=', 1) = any (ov_names)) then
                ov_names := ov_names || split_part(a, '=', 1);
                ov_exprs := ov_exprs || substr(a, strpos(a, '=') + 1);
            end if;
        else
            perform pgq_rs.triga_fail('bad param to pgq trigger');
        end if;
    end loop;
    if skip and tg_when = 'AFTER' then
        perform pgq_rs.triga_fail('SKIP does not work in AFTER trigger.');
    end if;
    if deny then
        perform pgq_rs.triga_fail(format('Table ''%s.%s'' to queue ''%s'': change not allowed (%s)',
                                         sch, tbl, queue, op));
    end if;
    if pkey_raw is null then
        select array_agg(a2.attname::text order by k.o)
          into pk
          from pg_catalog.pg_index i
               cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, o)
               join pg_catalog.pg_attribute a2
                 on a2.attrelid = i.indrelid and a2.attnum = k.attnum
         where i.indrelid = relid and i.indisprimary;
        pk := coalesce(pk, '{}');
    end if;
    if op in ('UPDATE', 'DELETE') and cardinality(pk) = 0 then
        perform pgq_rs.triga_fail('Update/Delete on table without pkey');
    end if;

    select array_agg(attname::text order by attnum), array_agg(atttypid order by attnum)
      into names, types
      from pg_catalog.pg_attribute
     where attrelid = relid and attnum > 0 and not attisdropped;
    for i in 1 .. cardinality(names) loop
        if names[i] in ('_pgq_ev_type', '_pgq_ev_data', '_pgq_ev_extra1', '_pgq_ev_extra2',
                        '_pgq_ev_extra3', '_pgq_ev_extra4') then
            magic_names := magic_names || names[i];
            magic_idx := magic_idx || i;
        elsif not (names[i] = any (ignore)) then
            dnames := dnames || names[i];
            didx := didx || i;
        end if;
    end loop;

    -- Every column's text (output function), and its JSON for jsontriga; for an update also
    -- the old row's, and which columns changed.
    select 'select array[' || string_agg(format(
               'case when num_nulls(($%2$s).%1$I) = 1 then null else format(''%%s'', ($%2$s).%1$I) end',
               nm, '1'), ',') || ']::text[], array['
           || string_agg(format(
               'case when num_nulls(($%2$s).%1$I) = 1 then null else format(''%%s'', ($%2$s).%1$I) end',
               nm, '2'), ',') || ']::text[], array['
           || string_agg(format(
               'to_jsonb(($1).%1$I) is distinct from to_jsonb(($2).%1$I)', nm), ',')
           || ']::boolean[]'
           || case when kind = 'jsontriga' then
                  ', array[' || string_agg(format(case
                      when t in (20, 21, 23) then '(($%2$s).%1$I)::text'
                      when t = 16 then 'case when ($%2$s).%1$I then ''true'' else ''false'' end'
                      when t in (1082, 1114, 1184) then 'to_json(($%2$s).%1$I)::text'
                      else 'to_json(format(''%%s'', ($%2$s).%1$I))::text' end
                      , nm, '1'), ',') || ']::text[], array['
                  || string_agg(format(case
                      when t in (20, 21, 23) then '(($%2$s).%1$I)::text'
                      when t = 16 then 'case when ($%2$s).%1$I then ''true'' else ''false'' end'
                      when t in (1082, 1114, 1184) then 'to_json(($%2$s).%1$I)::text'
                      else 'to_json(format(''%%s'', ($%2$s).%1$I))::text' end,
                      nm, '2'), ',') || ']::text[]'
              else ', null::text[], null::text[]' end
      into sel
      from unnest(names, types) as u(nm, t);
    execute sel into ovals, vals, changed, ojvals, jvals
      using old_row, new_row;
    if op = 'DELETE' then
        vals := ovals;
        jvals := ojvals;
    end if;
    if kind = 'jsontriga' then
        -- NULL columns are JSON null.
        for i in 1 .. cardinality(names) loop
            if vals[i] is null then
                jvals[i] := null;
            end if;
            if ovals[i] is null then
                ojvals[i] := null;
            end if;
        end loop;
    end if;

    if op = 'UPDATE' then
        for i in 1 .. cardinality(names) loop
            if changed[i] and names[i] = any (pk) then
                perform pgq_rs.triga_fail('primary key update not allowed');
            end if;
        end loop;
    end if;

    -- when=: over the new row (the old one for a delete).
    if when_expr = '' then
        perform pgq_rs.triga_fail('when= query result must be boolean, got=0');
    end if;
    if when_expr is not null then
        execute format('select pg_typeof(_w.x)::oid, _w.x::text from (select (%s) as x from '
                       '(select ($1).*) _t) _w', when_expr)
          into typ, res
          using case when op = 'DELETE' then old_row else new_row end;
        if typ <> 16 then
            perform pgq_rs.triga_fail(format('when= query result must be boolean, got=%s', typ));
        end if;
        if res is null then
            perform pgq_rs.triga_fail('when= should not be NULL');
        end if;
        if res = 'false' then
            return skip;
        end if;
    end if;

    if op = 'UPDATE' then
        for i in 1 .. cardinality(names) loop
            if changed[i] then
                if names[i] = any (dnames) then
                    any_data_changed := true;
                elsif names[i] = any (ignore) then
                    any_ignored_changed := true;
                end if;
            end if;
        end loop;
        if any_ignored_changed and not any_data_changed then
            return skip;
        end if;
    end if;

    fields := array[null, null, sch || '.' || tbl, null, null, null];
    if kind = 'logutriga' then
        fields[1] := left(op, 1) || ':' || coalesce(pkey_raw, array_to_string(pk, ','));
        fields[2] := pgq_rs.triga_urlencode_row(dnames,
                                                (select array_agg(vals[j] order by o)
                                                   from unnest(didx) with ordinality d(j, o)));
    elsif kind = 'jsontriga' then
        fields[1] := '{"op":"' || op || '","table":[' || to_json(sch)::text || ','
                     || to_json(tbl)::text || '],"pkey":['
                     || coalesce((select string_agg(to_json(p)::text, ',' order by o)
                                    from unnest(coalesce(string_to_array(pkey_raw, ','), pk))
                                         with ordinality x(p, o)), '') || ']}';
        fields[2] := pgq_rs.triga_json_row(dnames,
                                           (select array_agg(jvals[j] order by o)
                                              from unnest(didx) with ordinality d(j, o)));
    else
        fields[1] := left(op, 1);
        if op = 'INSERT' then
            fields[2] := '(' || coalesce((select string_agg(quote_ident(names[j]), ',' order by o)
                                            from unnest(didx) with ordinality d(j, o)), '')
                         || ') values ('
                         || coalesce((select string_agg(coalesce(quote_literal(vals[j]), 'null'),
                                                        ',' order by o)
                                        from unnest(didx) with ordinality d(j, o)), '')
                         || ')';
        else
            select array_agg(quote_ident(names[j]) || '=' || coalesce(quote_literal(ovals[j]), 'NULL')
                             order by j)
              into wh
              from generate_subscripts(names, 1) j
             where names[j] = any (pk);
            wh := coalesce(wh, '{}');
            if op = 'UPDATE' then
                select array_agg(quote_ident(names[j]) || '='
                                 || coalesce(quote_literal(vals[j]), 'NULL') order by o)
                  into parts
                  from unnest(didx) with ordinality d(j, o)
                 where changed[j];
                if parts is null then
                    -- A key column that is NULL, or no key column at all, is refused.
                if not exists (select from unnest(pk) k where k = any (names))
                   or exists (select from unnest(pk) k
                               where k = any (names) and ovals[array_position(names, k)] is null) then
                    perform pgq_rs.triga_fail('logtriga: Unexpected NULL key value');
                end if;
                    select array_agg(quote_ident(names[j]) || '='
                                     || coalesce(quote_literal(vals[j]), 'NULL') order by j)
                      into parts
                      from generate_subscripts(names, 1) j
                     where names[j] = any (pk);
                end if;
                fields[2] := array_to_string(parts, ',') || ' where '
                             || array_to_string(wh, ' and ');
            else
                fields[2] := array_to_string(wh, ' and ');
            end if;
        end if;
    end if;
    if backup and op = 'UPDATE' then
        if kind = 'jsontriga' then
            fields[4] := pgq_rs.triga_json_row(dnames,
                                               (select array_agg(ojvals[j] order by o)
                                                  from unnest(didx) with ordinality d(j, o)));
        else
            fields[4] := pgq_rs.triga_urlencode_row(dnames,
                                                    (select array_agg(ovals[j] order by o)
                                                       from unnest(didx) with ordinality d(j, o)));
        end if;
    end if;

    -- Field columns, then field expressions.
    for i in 1 .. cardinality(magic_names) loop
        fld := substr(magic_names[i], 6);
        fields[array_position(array['ev_type', 'ev_data', 'ev_extra1', 'ev_extra2', 'ev_extra3',
                                    'ev_extra4'], fld)] := vals[magic_idx[i]];
    end loop;
    for i in 1 .. cardinality(ov_names) loop
        continue when ov_exprs[i] = '';
        execute format('select case when num_nulls(_w.x) = 1 then null else format(''%%s'', _w.x) end '
                       'from (select (%s) as x from (select ($1).*) _t) _w', ov_exprs[i])
          into res
          using case when op = 'DELETE' then old_row else new_row end;
        fields[array_position(array['ev_type', 'ev_data', 'ev_extra1', 'ev_extra2', 'ev_extra3',
                                    'ev_extra4'], ov_names[i])] := res;
    end loop;

    perform pgq.insert_event(queue, fields[1], fields[2], fields[3], fields[4], fields[5],
                             fields[6]);
    return skip;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.logutriga()
RETURNS trigger
LANGUAGE plpgsql
AS $$
begin
    if TG_LEVEL = 'STATEMENT' then
        perform pgq_rs.triga_statement('logutriga', TG_OP, TG_WHEN, TG_RELID, TG_TABLE_SCHEMA,
                                       TG_TABLE_NAME, TG_ARGV);
        return null;
    end if;
    if pgq_rs.triga_row('logutriga', TG_OP, TG_WHEN, TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                        TG_ARGV, OLD, NEW) then
        return null;
    end if;
    if TG_OP = 'DELETE' then
        return OLD;
    end if;
    return NEW;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.jsontriga()
RETURNS trigger
LANGUAGE plpgsql
AS $$
begin
    if TG_LEVEL = 'STATEMENT' then
        perform pgq_rs.triga_statement('jsontriga', TG_OP, TG_WHEN, TG_RELID, TG_TABLE_SCHEMA,
                                       TG_TABLE_NAME, TG_ARGV);
        return null;
    end if;
    if pgq_rs.triga_row('jsontriga', TG_OP, TG_WHEN, TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                        TG_ARGV, OLD, NEW) then
        return null;
    end if;
    if TG_OP = 'DELETE' then
        return OLD;
    end if;
    return NEW;
end;
$$;

CREATE OR REPLACE FUNCTION pgq.sqltriga()
RETURNS trigger
LANGUAGE plpgsql
AS $$
begin
    if TG_LEVEL = 'STATEMENT' then
        perform pgq_rs.triga_statement('sqltriga', TG_OP, TG_WHEN, TG_RELID, TG_TABLE_SCHEMA,
                                       TG_TABLE_NAME, TG_ARGV);
        return null;
    end if;
    if pgq_rs.triga_row('sqltriga', TG_OP, TG_WHEN, TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME,
                        TG_ARGV, OLD, NEW) then
        return null;
    end if;
    if TG_OP = 'DELETE' then
        return OLD;
    end if;
    return NEW;
end;
$$;

REVOKE ALL ON FUNCTION pgq.logutriga(), pgq.jsontriga(), pgq.sqltriga() FROM public;
GRANT EXECUTE ON FUNCTION pgq.logutriga(), pgq.jsontriga(), pgq.sqltriga() TO pgq_writer;
REVOKE ALL ON FUNCTION
    pgq_rs.triga_urlencode(text),
    pgq_rs.triga_urlencode_row(text[], text[]),
    pgq_rs.triga_json_row(text[], text[]),
    pgq_rs.triga_fail(text),
    pgq_rs.triga_statement(text, text, text, oid, text, text, text[]),
    pgq_rs.triga_row(text, text, text, oid, text, text, text[], anyelement, anyelement)
  FROM public;
GRANT EXECUTE ON FUNCTION
    pgq_rs.triga_urlencode(text),
    pgq_rs.triga_urlencode_row(text[], text[]),
    pgq_rs.triga_json_row(text[], text[]),
    pgq_rs.triga_fail(text),
    pgq_rs.triga_statement(text, text, text, oid, text, text, text[]),
    pgq_rs.triga_row(text, text, text, oid, text, text, text[], anyelement, anyelement)
  TO pgq_writer;
