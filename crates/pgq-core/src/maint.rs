//! Maintenance: what a ticker (ours or pgqd) runs besides ticking — table rotation, vacuum,
//! moving due retry events back into their queues.
//!
//! Roles: everything here needs `pgq_admin`.

use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};

use crate::error::{Error, Op, Result, ResultExt};
use crate::ident::{quote_fqname, quote_literal};
use crate::name::QueueName;
use crate::types::MaintOperation;

const MAINT: Op = Op::admin("maint_operations");

/// The maintenance operations due now (`pgq.maint_operations()`).
///
/// Needs `pgq_admin`.
pub async fn maint_operations<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<MaintOperation>> {
    let rows =
        sqlx::query!(r#"select func_name as "func_name!", func_arg from pgq.maint_operations()"#)
            .fetch_all(ex)
            .await
            .op(MAINT)?;
    Ok(rows
        .into_iter()
        .map(|r| MaintOperation {
            func_name: r.func_name,
            func_arg: r.func_arg,
        })
        .collect())
}

/// Rotation step 1 for a queue (`pgq.maint_rotate_tables_step1`). Run step 2 in a separate,
/// later transaction. Returns 1 when the tables were rotated.
///
/// Needs `pgq_admin`.
pub async fn maint_rotate_tables_step1<'e>(
    ex: impl PgExecutor<'e>,
    queue: &QueueName,
) -> Result<i32> {
    sqlx::query_scalar!(
        r#"select pgq.maint_rotate_tables_step1($1) as "r!""#,
        queue.as_str()
    )
    .fetch_one(ex)
    .await
    .op(MAINT)
}

/// Rotation step 2 (`pgq.maint_rotate_tables_step2`): records the transaction that completes a
/// rotation. Must run in a transaction of its own, after step 1 committed.
///
/// Needs `pgq_admin`.
pub async fn maint_rotate_tables_step2<'e>(ex: impl PgExecutor<'e>) -> Result<i32> {
    sqlx::query_scalar!(r#"select pgq.maint_rotate_tables_step2() as "r!""#)
        .fetch_one(ex)
        .await
        .op(MAINT)
}

/// Move due events from the retry queue back into their queues (`pgq.maint_retry_events`). pgq
/// moves at most a few rows a call: call it until it returns 0 ([`maint_retry_events_all`]).
///
/// Needs `pgq_admin`.
pub async fn maint_retry_events<'e>(ex: impl PgExecutor<'e>) -> Result<i32> {
    sqlx::query_scalar!(r#"select pgq.maint_retry_events() as "r!""#)
        .fetch_one(ex)
        .await
        .op(MAINT)
}

/// Call [`maint_retry_events`] until it returns 0; returns the total moved. Each call is its own
/// statement on `conn` (autocommit unless `conn` is inside a transaction).
///
/// Needs `pgq_admin`.
pub async fn maint_retry_events_all(conn: &mut PgConnection) -> Result<i64> {
    let mut total = 0i64;
    loop {
        let n = maint_retry_events(&mut *conn).await?;
        if n <= 0 {
            return Ok(total);
        }
        total += i64::from(n);
    }
}

/// Tables pgq wants vacuumed often (`pgq.maint_tables_to_vacuum`).
///
/// Needs `pgq_admin`.
pub async fn maint_tables_to_vacuum<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<String>> {
    let rows = sqlx::query_scalar!(r#"select t as "t!" from pgq.maint_tables_to_vacuum() t"#)
        .fetch_all(ex)
        .await
        .op(MAINT)?;
    Ok(rows)
}

/// `VACUUM` one table (name as pgq gives it, possibly schema-qualified; it is quoted). Must not
/// run inside a transaction. Needs ownership of the table (or superuser).
pub async fn vacuum_table<'e>(ex: impl PgExecutor<'e>, table: &str) -> Result<()> {
    const OP: Op = Op::admin("vacuum");
    crate::produce::check_text(OP.name, "table", table)?;
    let sql = format!("VACUUM {}", quote_fqname(table));
    sqlx::query(AssertSqlSafe(sql)).execute(ex).await.op(OP)?;
    Ok(())
}

fn is_plain_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Run one maintenance operation once, as pgqd does: `vacuum` runs `VACUUM` on the table in
/// `func_arg`; any other name is called as a function (with `func_arg` when present) and its
/// integer result returned. A ticker repeats an operation while it returns non-zero, each call in
/// its own transaction (rotation step 1 and step 2 must never share one).
///
/// Needs `pgq_admin` (plus whatever the named function needs).
pub async fn run_maint_operation(conn: &mut PgConnection, op: &MaintOperation) -> Result<i64> {
    if op.func_name.eq_ignore_ascii_case("vacuum") {
        let table = op
            .func_arg
            .as_deref()
            .ok_or_else(|| Error::invalid_input(MAINT, "vacuum without a table"))?;
        vacuum_table(&mut *conn, table).await?;
        return Ok(0);
    }
    if !is_plain_function_name(&op.func_name) {
        return Err(Error::invalid_input(
            MAINT,
            format!("refusing maintenance function name {:?}", op.func_name),
        ));
    }
    let func = quote_fqname(&op.func_name);
    let sql = match &op.func_arg {
        Some(arg) => {
            crate::produce::check_text(MAINT.name, "func_arg", arg)?;
            format!("select ({func}({}))::int8", quote_literal(arg))
        }
        None => format!("select ({func}())::int8"),
    };
    let r: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .op(MAINT)?;
    Ok(r.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn maint_function_names() {
        assert!(super::is_plain_function_name(
            "pgq.maint_rotate_tables_step1"
        ));
        assert!(super::is_plain_function_name(
            "londiste.periodic_maintenance"
        ));
        assert!(!super::is_plain_function_name("pgq.x(); drop table y; --"));
        assert!(!super::is_plain_function_name("a.b.c"));
        assert!(!super::is_plain_function_name(""));
    }
}
