//! Two databases, one on each backend, driven in lockstep: every step runs on both and must give
//! the same outcome (rows, or error code and message), values that legitimately differ (times,
//! transaction ids, snapshots) left out by the queries themselves.

use std::future::Future;

use pgq_core::Backend;
use pgq_core::sqlx::{self, AssertSqlSafe, PgPool};
use pgq_testkit::{Cluster, TestDb};

pub(crate) struct Pair {
    pub(crate) ext: TestDb,
    pub(crate) sql: TestDb,
}

impl Pair {
    /// Both databases on a cluster of their own: tick snapshots then see no other test's
    /// transactions, so they are the same on both sides (a snapshot's xmin decides, for example,
    /// which ticks a rotation drops).
    pub(crate) async fn new() -> Pair {
        let cluster = Cluster::start_private().unwrap();
        let ext = TestDb::new_on_with_backend(&cluster, Backend::Extension).await;
        let sql = TestDb::new_on_with_backend(&cluster, Backend::Sql).await;
        assert_eq!(
            pgq_core::detect_backend(sql.pool()).await.unwrap(),
            Some(Backend::Sql)
        );
        assert_eq!(
            pgq_core::detect_backend(ext.pool()).await.unwrap(),
            Some(Backend::Extension)
        );
        Pair { ext, sql }
    }

    /// Run the query `sql` (a SELECT, or a data-modifying statement inside a WITH) on both
    /// databases, extension first; the outcomes must be equal. Returns the outcome.
    pub(crate) async fn same(&self, sql: &str) -> String {
        let a = outcome(self.ext.pool(), sql).await;
        let b = outcome(self.sql.pool(), sql).await;
        if a != b {
            panic!(
                "\nthe extension and the SQL backend differ for:\n  {sql}\n{}",
                row_diff(&a, &b)
            );
        }
        a
    }

    /// [`Pair::same`], and the outcome must be `expected`.
    pub(crate) async fn expect(&self, sql: &str, expected: &str) {
        let got = self.same(sql).await;
        assert_eq!(got, expected, "for: {sql}");
    }

    /// Run statements (no result) on both; both must succeed.
    pub(crate) async fn exec(&self, sql: &str) {
        for (name, db) in [("extension", &self.ext), ("sql", &self.sql)] {
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(db.pool())
                .await
            {
                panic!("{name}: {sql}: {e}");
            }
        }
    }

    /// Run `f` on the extension's pool, then on the SQL backend's; the results must be equal.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        T: PartialEq + std::fmt::Debug,
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = T>,
    {
        let a = f(self.ext.pool().clone()).await;
        let b = f(self.sql.pool().clone()).await;
        assert_eq!(
            a, b,
            "\nthe extension (left) and the SQL backend (right) differ: {what}\n"
        );
        a
    }

    /// The pgq tables of both databases, row by row, without the values that legitimately
    /// differ (times, transaction ids, snapshots); must be equal.
    pub(crate) async fn same_tables(&self, when: &str) {
        let a = outcome(self.ext.pool(), TABLES).await;
        let b = outcome(self.sql.pool(), TABLES).await;
        if a != b {
            panic!("\nthe pgq tables differ {when}:\n{}", row_diff(&a, &b));
        }
    }

    /// Move every tick of `queue` `secs` seconds into the past (the same on both databases), so
    /// that time-based decisions (ticker lag, batch intervals) do not depend on the test's speed.
    pub(crate) async fn age_ticks(&self, queue: &str, secs: u32) {
        self.exec(&format!(
            "update pgq.tick set tick_time = tick_time - interval '{secs} seconds' \
             where tick_queue = (select queue_id from pgq.queue where queue_name = '{queue}')"
        ))
        .await;
    }
}

/// Every pgq table, minus the columns whose values differ between two runs of the same steps.
const TABLES: &str = "
    select 'queue' as t, to_jsonb(q) - 'queue_switch_step1' - 'queue_switch_step2'
               - 'queue_switch_time' || jsonb_build_object('step2_null', q.queue_switch_step2 is null)
               as r
      from pgq.queue q
    union all
    select 'tick', jsonb_build_object('queue', tick_queue, 'id', tick_id, 'seq', tick_event_seq)
      from pgq.tick
    union all
    select 'subscription', to_jsonb(s) - 'sub_active' from pgq.subscription s
    union all
    select 'consumer', to_jsonb(c) from pgq.consumer c
    union all
    select 'retry', to_jsonb(r) - 'ev_retry_after' - 'ev_time' - 'ev_txid' from pgq.retry_queue r
    union all
    select 'event ' || e.tableoid::regclass::text, to_jsonb(e) - 'ev_time' - 'ev_txid'
      from pgq.event_template e
    order by 1, 2";

/// The rows only one side has (outcomes are JSON arrays of rows, or an error line).
fn row_diff(a: &str, b: &str) -> String {
    let rows = |s: &str| -> Vec<String> {
        match serde_json::from_str::<Vec<serde_json::Value>>(s) {
            Ok(v) => v.iter().map(|r| r.to_string()).collect(),
            Err(_) => vec![s.to_owned()],
        }
    };
    let (ra, rb) = (rows(a), rows(b));
    let only_ext: Vec<_> = ra.iter().filter(|r| !rb.contains(r)).collect();
    let only_sql: Vec<_> = rb.iter().filter(|r| !ra.contains(r)).collect();
    if only_ext.is_empty() && only_sql.is_empty() {
        return format!("  the same rows in another order:\n  extension: {a}\n  sql: {b}");
    }
    format!("  only on the extension: {only_ext:#?}\n  only on the SQL backend: {only_sql:#?}")
}

/// The rows of `sql` as JSON, or `ERROR <sqlstate>: <message>`.
pub(crate) async fn outcome(pool: &PgPool, sql: &str) -> String {
    let wrapped = format!(
        "select coalesce(jsonb_agg(to_jsonb(pgq_rs_row)), '[]'::jsonb)::text from ({sql}) pgq_rs_row"
    );
    match sqlx::query_scalar::<_, String>(AssertSqlSafe(wrapped))
        .fetch_one(pool)
        .await
    {
        Ok(rows) => rows,
        Err(e) => match e.as_database_error() {
            Some(d) => format!("ERROR {}: {}", d.code().unwrap_or_default(), d.message()),
            None => panic!("{sql}: {e}"),
        },
    }
}
