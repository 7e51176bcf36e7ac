//! pgq's change-capture triggers on application tables: creating, dropping and listing them.
//!
//! pgq ships three trigger functions that turn row changes into events: `pgq.logutriga` (row as
//! urlencoded `col=value&...`), `pgq.jsontriga` (row as JSON) and `pgq.sqltriga` (partial SQL). Each
//! takes the queue name as its first argument and options after it (`ignore=`, `pkey=`, `backup`,
//! `when=`, `SKIP`, `deny`, `ev_*=` overrides). Row changes need a `FOR EACH ROW` trigger, TRUNCATE a
//! `FOR EACH STATEMENT` one, so capturing a table usually takes two triggers.
//!
//! This module only builds and runs the DDL (identifiers quoted with [`quote_ident`] /
//! [`quote_fqname`], arguments with [`quote_literal`]); which arguments make sense together is the
//! producer crate's business.
//!
//! Tables are named `schema.table` or `table` (then found through `search_path`); the first `.`
//! separates the schema. DDL text assumes `standard_conforming_strings = on` (the default since
//! PostgreSQL 9.1).
//!
//! Roles: creating or dropping a trigger needs ownership of the table (PostgreSQL's rule) and
//! `pgq_writer` (EXECUTE on the trigger functions); every role that then writes to the table needs
//! `pgq_writer` too, since the trigger calls `pgq.insert_event` as that role. Listing needs none.

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgExecutor};

use crate::error::{Op, Result, ResultExt};
use crate::ident::{quote_fqname, quote_ident, quote_literal};
use crate::produce::check_text;

const CREATE: Op = Op::writer("create_pgq_triggers");
const DROP: Op = Op::writer("drop_pgq_triggers");
const LIST: Op = Op::public("pgq_triggers");
const PKEY: Op = Op::public("table_primary_key");

/// One of pgq's trigger functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TriggerFunction {
    /// `pgq.logutriga`: `ev_type` = `I|U|D:pkey_cols`, `ev_data` = urlencoded row, `ev_extra1` = table.
    Logutriga,
    /// `pgq.jsontriga`: `ev_type` = `I|U|D:pkey_cols`, `ev_data` = the row as JSON, `ev_extra1` = table.
    Jsontriga,
    /// `pgq.sqltriga`: `ev_type` = `I|U|D`, `ev_data` = partial SQL, `ev_extra1` = table.
    Sqltriga,
}

impl TriggerFunction {
    /// The function's schema-qualified name, e.g. `pgq.logutriga`.
    pub fn qualified_name(self) -> &'static str {
        match self {
            TriggerFunction::Logutriga => "pgq.logutriga",
            TriggerFunction::Jsontriga => "pgq.jsontriga",
            TriggerFunction::Sqltriga => "pgq.sqltriga",
        }
    }

    /// The function's name without the schema, e.g. `logutriga`.
    pub fn name(self) -> &'static str {
        &self.qualified_name()[4..]
    }

    fn from_name(name: &str) -> Option<TriggerFunction> {
        [
            TriggerFunction::Logutriga,
            TriggerFunction::Jsontriga,
            TriggerFunction::Sqltriga,
        ]
        .into_iter()
        .find(|f| f.name() == name)
    }
}

/// When a trigger fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerTiming {
    /// Before the change (needed for pgq's `SKIP`, which drops the row change itself).
    Before,
    /// After the change (the usual capture trigger).
    After,
}

/// What a trigger fires on. pgq needs row changes `FOR EACH ROW` and TRUNCATE `FOR EACH
/// STATEMENT`, so one trigger is either the one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerEvents {
    /// A `FOR EACH ROW` trigger on the chosen row operations.
    Rows {
        /// `INSERT`.
        insert: bool,
        /// `UPDATE`.
        update: bool,
        /// `DELETE`.
        delete: bool,
    },
    /// A `FOR EACH STATEMENT` trigger on `TRUNCATE`.
    Truncate,
}

/// A pgq trigger to create: everything [`create_pgq_triggers`] turns into `CREATE TRIGGER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerDef {
    /// Trigger name (at most 63 bytes).
    pub name: String,
    /// The table, `schema.table` or `table`.
    pub table: String,
    /// pgq's trigger function.
    pub function: TriggerFunction,
    /// Before or after the change.
    pub timing: TriggerTiming,
    /// Row operations, or TRUNCATE.
    pub events: TriggerEvents,
    /// The function's arguments: the queue name first, then pgq's options as pgq spells them.
    pub args: Vec<String>,
}

/// A pgq trigger found on a table by [`pgq_triggers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgqTrigger {
    /// Trigger name.
    pub name: String,
    /// pgq's trigger function.
    pub function: TriggerFunction,
    /// Before or after the change.
    pub timing: TriggerTiming,
    /// Row operations, or TRUNCATE.
    pub events: TriggerEvents,
    /// The function's arguments (the queue name first).
    pub args: Vec<String>,
    /// False when the trigger is disabled (`ALTER TABLE ... DISABLE TRIGGER`).
    pub enabled: bool,
}

impl PgqTrigger {
    /// The queue the trigger writes to (its first argument).
    pub fn queue(&self) -> Option<&str> {
        self.args.first().map(String::as_str)
    }
}

/// PostgreSQL's identifier limit in bytes.
const MAX_IDENT: usize = 63;

/// The `CREATE TRIGGER` statement for `def` (quoted; no statement terminator).
///
/// Fails with [`crate::ErrorKind::InvalidInput`] for a name over 63 bytes, a row trigger without
/// operations, no arguments (the queue name is required), or text PostgreSQL cannot hold.
///
/// ```
/// use pgq_core::{TriggerDef, TriggerEvents, TriggerFunction, TriggerTiming};
/// let def = TriggerDef {
///     name: "pgq_cdc_orders".into(),
///     table: "shop.orders".into(),
///     function: TriggerFunction::Logutriga,
///     timing: TriggerTiming::After,
///     events: TriggerEvents::Rows { insert: true, update: true, delete: false },
///     args: vec!["orders".into(), "ignore=note".into()],
/// };
/// assert_eq!(
///     pgq_core::trigger_ddl(&def).unwrap(),
///     "CREATE TRIGGER \"pgq_cdc_orders\" AFTER INSERT OR UPDATE ON \"shop\".\"orders\" \
///      FOR EACH ROW EXECUTE FUNCTION pgq.logutriga('orders', 'ignore=note')"
/// );
/// ```
pub fn trigger_ddl(def: &TriggerDef) -> Result<String> {
    check_text(CREATE.name, "trigger name", &def.name)?;
    check_text(CREATE.name, "table", &def.table)?;
    for a in &def.args {
        check_text(CREATE.name, "trigger argument", a)?;
    }
    if def.name.is_empty() || def.name.len() > MAX_IDENT {
        return Err(crate::Error::invalid_input(
            CREATE,
            format!(
                "trigger name {:?} must be 1 to {MAX_IDENT} bytes long",
                def.name
            ),
        ));
    }
    if def.args.is_empty() {
        return Err(crate::Error::invalid_input(
            CREATE,
            "a pgq trigger needs the queue name as its first argument",
        ));
    }
    let (ops, level) = match def.events {
        TriggerEvents::Rows {
            insert,
            update,
            delete,
        } => {
            let ops: Vec<&str> = [(insert, "INSERT"), (update, "UPDATE"), (delete, "DELETE")]
                .into_iter()
                .filter_map(|(on, op)| on.then_some(op))
                .collect();
            if ops.is_empty() {
                return Err(crate::Error::invalid_input(
                    CREATE,
                    "a row trigger needs at least one of INSERT, UPDATE, DELETE",
                ));
            }
            (ops.join(" OR "), "ROW")
        }
        TriggerEvents::Truncate => ("TRUNCATE".to_owned(), "STATEMENT"),
    };
    let timing = match def.timing {
        TriggerTiming::Before => "BEFORE",
        TriggerTiming::After => "AFTER",
    };
    let args: Vec<String> = def.args.iter().map(|a| quote_literal(a)).collect();
    Ok(format!(
        "CREATE TRIGGER {} {timing} {ops} ON {} FOR EACH {level} EXECUTE FUNCTION {}({})",
        quote_ident(&def.name),
        quote_fqname(&def.table),
        def.function.qualified_name(),
        args.join(", ")
    ))
}

/// Create pgq triggers, all or none (in one transaction, or a savepoint of the caller's).
///
/// A pgq trigger that already has one of the names on its table is replaced, so attaching twice
/// is harmless; a trigger of the same name that is not a pgq trigger is left alone and the create
/// fails. Needs ownership of the tables and `pgq_writer` (see the module docs).
pub async fn create_pgq_triggers(conn: &mut PgConnection, defs: &[TriggerDef]) -> Result<()> {
    let ddl = defs.iter().map(trigger_ddl).collect::<Result<Vec<_>>>()?;
    let mut tx = conn.begin().await.op(CREATE)?;
    for (def, create) in defs.iter().zip(ddl) {
        let existing = pgq_triggers(&mut *tx, &def.table).await?;
        if existing.iter().any(|t| t.name == def.name) {
            let drop = drop_ddl(&def.table, &def.name);
            sqlx::query(AssertSqlSafe(drop))
                .execute(&mut *tx)
                .await
                .op(CREATE)?;
        }
        sqlx::query(AssertSqlSafe(create))
            .execute(&mut *tx)
            .await
            .op(CREATE)?;
    }
    tx.commit().await.op(CREATE)?;
    Ok(())
}

fn drop_ddl(table: &str, name: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS {} ON {}",
        quote_ident(name),
        quote_fqname(table)
    )
}

/// Drop the pgq triggers on `table` that `select` picks, all or none (one transaction, or a
/// savepoint of the caller's). Triggers that are not pgq triggers are never dropped. Returns the
/// dropped triggers. Needs ownership of the table.
pub async fn drop_pgq_triggers(
    conn: &mut PgConnection,
    table: &str,
    select: impl Fn(&PgqTrigger) -> bool,
) -> Result<Vec<PgqTrigger>> {
    check_text(DROP.name, "table", table)?;
    let mut tx = conn.begin().await.op(DROP)?;
    let chosen: Vec<PgqTrigger> = pgq_triggers(&mut *tx, table)
        .await?
        .into_iter()
        .filter(|t| select(t))
        .collect();
    for t in &chosen {
        sqlx::query(AssertSqlSafe(drop_ddl(table, &t.name)))
            .execute(&mut *tx)
            .await
            .op(DROP)?;
    }
    tx.commit().await.op(DROP)?;
    Ok(chosen)
}

// pg_trigger.tgtype bits (PostgreSQL's catalog/pg_trigger.h).
const TG_ROW: i16 = 1 << 0;
const TG_BEFORE: i16 = 1 << 1;
const TG_INSERT: i16 = 1 << 2;
const TG_DELETE: i16 = 1 << 3;
const TG_UPDATE: i16 = 1 << 4;
const TG_TRUNCATE: i16 = 1 << 5;

/// The pgq triggers (`pgq.logutriga`, `pgq.jsontriga`, `pgq.sqltriga`) on `table`, by name. A table
/// that does not exist has none. Needs no pgq role.
pub async fn pgq_triggers<'e>(ex: impl PgExecutor<'e>, table: &str) -> Result<Vec<PgqTrigger>> {
    check_text(LIST.name, "table", table)?;
    let rows = sqlx::query!(
        r#"select t.tgname::text as "name!", p.proname::text as "func!", t.tgtype as "tgtype!",
                  t.tgargs as "args!", t.tgenabled <> 'D' as "enabled!"
           from pg_catalog.pg_trigger t
           join pg_catalog.pg_proc p on p.oid = t.tgfoid
           join pg_catalog.pg_namespace n on n.oid = p.pronamespace
           where t.tgrelid = to_regclass($1) and not t.tgisinternal
             and n.nspname = 'pgq' and p.proname in ('logutriga', 'jsontriga', 'sqltriga')
           order by t.tgname"#,
        quote_fqname(table)
    )
    .fetch_all(ex)
    .await
    .op(LIST)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let function = TriggerFunction::from_name(&r.func)?;
            let t = r.tgtype;
            let events = if t & TG_TRUNCATE != 0 && t & TG_ROW == 0 {
                TriggerEvents::Truncate
            } else {
                TriggerEvents::Rows {
                    insert: t & TG_INSERT != 0,
                    update: t & TG_UPDATE != 0,
                    delete: t & TG_DELETE != 0,
                }
            };
            // tgargs: each argument followed by a NUL byte.
            let mut args: Vec<String> = r
                .args
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.pop();
            Some(PgqTrigger {
                name: r.name,
                function,
                timing: if t & TG_BEFORE != 0 {
                    TriggerTiming::Before
                } else {
                    TriggerTiming::After
                },
                events,
                args,
                enabled: r.enabled,
            })
        })
        .collect())
}

/// The primary key columns of `table`, in key order: `None` when there is no such table, an empty
/// list when it has no primary key. pgq's triggers need a key (or a `pkey=` option) to capture
/// updates and deletes. Needs no pgq role.
pub async fn table_primary_key<'e>(
    ex: impl PgExecutor<'e>,
    table: &str,
) -> Result<Option<Vec<String>>> {
    check_text(PKEY.name, "table", table)?;
    let row = sqlx::query!(
        r#"select to_regclass($1) is not null as "exists!",
                  coalesce((select array_agg(a.attname::text order by k.ord)
                            from pg_catalog.pg_index i
                            cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, ord)
                            join pg_catalog.pg_attribute a
                              on a.attrelid = i.indrelid and a.attnum = k.attnum
                            where i.indrelid = to_regclass($1) and i.indisprimary),
                           '{}') as "pkey!""#,
        quote_fqname(table)
    )
    .fetch_one(ex)
    .await
    .op(PKEY)?;
    Ok(row.exists.then_some(row.pkey))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> TriggerDef {
        TriggerDef {
            name: "t\"x".into(),
            table: "my table".into(),
            function: TriggerFunction::Jsontriga,
            timing: TriggerTiming::Before,
            events: TriggerEvents::Truncate,
            args: vec!["q'1".into(), "SKIP".into()],
        }
    }

    #[test]
    fn ddl_quotes_everything() {
        assert_eq!(
            trigger_ddl(&def()).unwrap(),
            "CREATE TRIGGER \"t\"\"x\" BEFORE TRUNCATE ON \"my table\" FOR EACH STATEMENT \
             EXECUTE FUNCTION pgq.jsontriga('q''1', 'SKIP')"
        );
    }

    #[test]
    fn ddl_refuses_bad_definitions() {
        let mut d = def();
        d.name = "n".repeat(64);
        assert!(trigger_ddl(&d).is_err());
        let mut d = def();
        d.args.clear();
        assert!(trigger_ddl(&d).is_err());
        let mut d = def();
        d.events = TriggerEvents::Rows {
            insert: false,
            update: false,
            delete: false,
        };
        assert!(trigger_ddl(&d).is_err());
        let mut d = def();
        d.args.push("when=a\0".into());
        assert!(trigger_ddl(&d).is_err());
    }

    #[test]
    fn function_names() {
        assert_eq!(TriggerFunction::Sqltriga.name(), "sqltriga");
        assert_eq!(
            TriggerFunction::from_name("logutriga"),
            Some(TriggerFunction::Logutriga)
        );
    }
}
