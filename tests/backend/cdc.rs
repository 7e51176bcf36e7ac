//! The change-capture triggers (`pgq.logutriga`, `pgq.jsontriga`, `pgq.sqltriga`) on both
//! backends: the same changes, with every option, must make the same events (and errors).

use pgq_core::sqlx::{self, AssertSqlSafe};

use crate::harness::Pair;

/// Run `sql` on both databases; both must succeed, or fail with the same code and message.
async fn change(p: &Pair, sql: &str) {
    let mut got = Vec::new();
    for db in [&p.ext, &p.sql] {
        got.push(
            match sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(db.pool())
                .await
            {
                Ok(_) => "ok".to_owned(),
                Err(e) => match e.as_database_error() {
                    Some(d) => format!("ERROR {}: {}", d.code().unwrap_or_default(), d.message()),
                    None => panic!("{sql}: {e}"),
                },
            },
        );
    }
    assert_eq!(
        got[0], got[1],
        "\nthe extension (left) and the SQL backend (right) differ for: {sql}"
    );
}

const EVENTS: &str = "select ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
                        from pgq.event_template order by ev_id";

const TYPES: &str = r#"create table cdc.ty (id int primary key, "Name" text, "a b" text,
    "select" text, "by" text, n numeric, ts timestamptz, tsl timestamp, d date, arr int[], j json,
    jb jsonb, by_ bytea, f float8, f4 float4, i2 int2, i8 int8, bo bool, tarr text[],
    iv interval, c char(3), ip inet, u text)"#;

const ROWS: &str = r#"insert into cdc.ty values
    (1, 'it''s "x" & y=z +%', null, 'sel', 'by', 1.50, '2024-01-02 03:04:05.678+02',
     '2024-05-06 07:08:09.123456', '2024-01-02', '{1,2,NULL}', '{"a": [1, 2]}',
     '{"b": 1, "a": "x"}', '\x00ff27', 1.5e300, 1.25, -3, 9007199254740993, true,
     '{"a b","c,d",NULL,"e\"f"}', '1 day 2 hours', 'ab', '10.0.0.1/32',
     E'ünï€ 😀 tab\tnl\nx \x01\x7f \\ '' ~!*()'),
    (2, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
     null, null, null, null, null, null, null, null);
    update cdc.ty set "a b" = 'q', n = 1.500, bo = false where id = 1;
    update cdc.ty set n = n where id = 2;
    delete from cdc.ty where id = 2"#;

#[tokio::test]
async fn cdc_triggers_make_the_same_events() {
    let p = Pair::new().await;
    p.same("select pgq.create_queue('q') a").await;
    p.exec(&format!("create schema cdc; {TYPES}")).await;
    for f in ["logutriga", "jsontriga", "sqltriga"] {
        change(
            &p,
            &format!(
                "create trigger t_{f} after insert or update or delete on cdc.ty for each row
                 execute procedure pgq.{f}('q');
                 create trigger t_{f}_r after truncate on cdc.ty for each statement
                 execute procedure pgq.{f}('q')"
            ),
        )
        .await;
    }
    change(&p, ROWS).await;
    change(&p, "update cdc.ty set id = 5").await;
    change(&p, "truncate cdc.ty").await;
    p.same(EVENTS).await;

    // Options, one table per trigger function and option set.
    let options = [
        "'ignore=n, c', 'backup'",
        "'pkey=\"Name\", id', 'backup'",
        "'pkey=zz'",
        "'when=n > 1'",
        "'when=bo'",
        "'when=1'",
        "'when='",
        "'ev_type=''T:'' || id', 'ev_data=null', 'ev_extra1=id * 2', 'ev_extra2=', \
         'ev_extra2=\"Name\"', 'ev_extra3=''x''', 'ev_extra4=ts'",
        "'ev_extra3=nosuchcol'",
        "'deny'",
        "'SKIP'",
        "'bogus'",
        "'tgflags=BI'",
        "",
    ];
    for f in ["logutriga", "jsontriga", "sqltriga"] {
        for (i, opts) in options.iter().enumerate() {
            let args = if opts.is_empty() {
                String::new()
            } else {
                format!("'q', {opts}")
            };
            let t = format!("cdc.o_{f}_{i}");
            p.exec(&format!(
                "{}; insert into {t} select * from cdc.ty",
                TYPES.replace("cdc.ty", &t)
            ))
            .await;
            let timing = if opts.contains("SKIP") {
                "before"
            } else {
                "after"
            };
            change(
                &p,
                &format!(
                    "create trigger tr {timing} insert or update or delete on {t} for each row
                     execute procedure pgq.{f}({args})"
                ),
            )
            .await;
            for stmt in ROWS.split(";\n") {
                change(&p, &stmt.replace("cdc.ty", &t)).await;
            }
            change(&p, &format!("update {t} set n = 9 where id = 1")).await;
            change(&p, &format!("update {t} set c = 'zz' where id = 1")).await;
            change(&p, &format!("delete from {t}")).await;
            p.same(&format!("select count(*) n from {t}")).await;
            change(
                &p,
                &format!(
                    "create trigger trt {timing} truncate on {t} for each statement
                     execute procedure pgq.{f}({args})"
                ),
            )
            .await;
            change(&p, &format!("truncate {t}")).await;
        }
    }
    // A table without a primary key; magic field columns; a statement-level row trigger.
    p.exec(
        "create table cdc.nk (a int, b text, _pgq_ev_type text, _pgq_ev_extra3 text);
         create table cdc.st (a int primary key)",
    )
    .await;
    for f in ["logutriga", "jsontriga", "sqltriga"] {
        change(
            &p,
            &format!(
                "create or replace trigger tr after insert or update or delete on cdc.nk
                 for each row execute procedure pgq.{f}('q');
                 create or replace trigger tr after insert on cdc.st for each statement
                 execute procedure pgq.{f}('q')"
            ),
        )
        .await;
        change(
            &p,
            "insert into cdc.nk values (1, 'x', 'TT', 'E3'), (2, 'y', null, null)",
        )
        .await;
        change(&p, "update cdc.nk set b = 'z'").await;
        change(&p, "delete from cdc.nk").await;
        change(&p, "insert into cdc.st values (1)").await;
        change(&p, "insert into pgq_nope values (1)").await;
    }
    p.same(EVENTS).await;
    p.same_tables("after change capture").await;
}
