//! Change capture: pgq's triggers on an application table turn its row changes into events.

use pgq_core::sqlx::{Connection, PgConnection, PgExecutor};
use pgq_core::{
    PgqRole, PgqTrigger, QueueName, TriggerDef, TriggerEvents, TriggerFunction, TriggerTiming,
};

use crate::error::{Error, Result};

const ATTACH: &str =
    "attaching change capture (also needs ownership of the table, or its TRIGGER privilege)";
const DETACH: &str = "detaching change capture (also needs ownership of the table)";

/// An event field a trigger option can override with an SQL expression (`ev_type=...` etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventField {
    /// `ev_type`.
    Type,
    /// `ev_data`.
    Data,
    /// `ev_extra1` (by default the table name).
    Extra1,
    /// `ev_extra2` (by default the old row, with [`ChangeCapture::backup`]).
    Extra2,
    /// `ev_extra3`.
    Extra3,
    /// `ev_extra4`.
    Extra4,
}

impl EventField {
    fn arg_name(self) -> &'static str {
        match self {
            EventField::Type => "ev_type",
            EventField::Data => "ev_data",
            EventField::Extra1 => "ev_extra1",
            EventField::Extra2 => "ev_extra2",
            EventField::Extra3 => "ev_extra3",
            EventField::Extra4 => "ev_extra4",
        }
    }
}

/// Change capture of one table into one queue with one of pgq's trigger functions: a typed
/// builder of the triggers and their options.
///
/// What the events look like (`ev_extra1` is always `schema.table`):
///
/// | function | `ev_type` | `ev_data` |
/// |---|---|---|
/// | [`logutriga`](Self::logutriga) | `I:id`, `U:id`, `D:id` (operation `:` key columns); `R` for TRUNCATE | the row urlencoded: `id=1&name=a+b%26c&note` (a NULL column is the bare name); empty for TRUNCATE |
/// | [`jsontriga`](Self::jsontriga) | `{"op":"INSERT","table":["shop","orders"],"pkey":["id"]}` (`UPDATE`, `DELETE`, `TRUNCATE`) | the row as JSON: `{"id":1,"name":"a b&c","note":null}`; `{}` for TRUNCATE |
/// | [`sqltriga`](Self::sqltriga) | `I`, `U`, `D`; `R` for TRUNCATE | partial SQL: `(id,name) values ('1','x')`, `name='y' where id='1'`, `id='1'`; empty for TRUNCATE |
///
/// On an update the row is the new row; on a delete the old one. With [`backup`](Self::backup)
/// the old row of an update also goes to `ev_extra2`.
///
/// ```no_run
/// use pgq_producer::ChangeCapture;
/// # async fn f(conn: &mut pgq_core::sqlx::PgConnection) -> Result<(), pgq_producer::Error> {
/// let queue = pgq_core::QueueName::new("orders_cdc").unwrap();
/// ChangeCapture::logutriga(queue, "shop.orders")
///     .ignore(["updated_at"])          // changes to this column alone produce no event
///     .backup()                        // the old row of an update in ev_extra2
///     .when("status <> 'draft'")       // only rows for which this is true
///     .attach(conn)
///     .await?;
/// # Ok(()) }
/// ```
///
/// Roles: attaching and detaching need ownership of the table and `pgq_writer`; every role that
/// writes to the table then needs `pgq_writer` too (the trigger inserts the events as that role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCapture {
    queue: QueueName,
    table: String,
    function: TriggerFunction,
    name: Option<String>,
    insert: bool,
    update: bool,
    delete: bool,
    truncate: bool,
    ignore: Vec<String>,
    pkey: Vec<String>,
    backup: bool,
    when: Option<String>,
    skip: bool,
    deny: bool,
    overrides: Vec<(EventField, String)>,
}

impl ChangeCapture {
    /// Capture `table` (`schema.table`, or `table` through `search_path`) into `queue` with
    /// `function`, on insert, update, delete and truncate.
    pub fn new(function: TriggerFunction, queue: QueueName, table: impl Into<String>) -> Self {
        ChangeCapture {
            queue,
            table: table.into(),
            function,
            name: None,
            insert: true,
            update: true,
            delete: true,
            truncate: true,
            ignore: Vec::new(),
            pkey: Vec::new(),
            backup: false,
            when: None,
            skip: false,
            deny: false,
            overrides: Vec::new(),
        }
    }

    /// Rows as urlencoded `col=value&...` (`pgq.logutriga`).
    pub fn logutriga(queue: QueueName, table: impl Into<String>) -> Self {
        Self::new(TriggerFunction::Logutriga, queue, table)
    }

    /// Rows as JSON (`pgq.jsontriga`).
    pub fn jsontriga(queue: QueueName, table: impl Into<String>) -> Self {
        Self::new(TriggerFunction::Jsontriga, queue, table)
    }

    /// Changes as partial SQL (`pgq.sqltriga`).
    pub fn sqltriga(queue: QueueName, table: impl Into<String>) -> Self {
        Self::new(TriggerFunction::Sqltriga, queue, table)
    }

    /// Name the triggers: `name` for rows and `name_truncate` for TRUNCATE (default:
    /// `pgq_cdc_<queue>`). One capture per table and name; attaching again replaces it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Which operations produce events (all four by default).
    pub fn operations(mut self, insert: bool, update: bool, delete: bool, truncate: bool) -> Self {
        (self.insert, self.update, self.delete, self.truncate) = (insert, update, delete, truncate);
        self
    }

    /// `ignore=`: leave these columns out of the events; an update that changes only them
    /// produces no event.
    pub fn ignore<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ignore.extend(columns.into_iter().map(Into::into));
        self
    }

    /// `pkey=`: the key columns, instead of the table's primary key (needed for updates and
    /// deletes of a table without one). Updating a key column is refused by the trigger.
    pub fn pkey<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pkey.extend(columns.into_iter().map(Into::into));
        self
    }

    /// `backup`: put the old row of an update (urlencoded; JSON for `jsontriga`) in `ev_extra2`.
    pub fn backup(mut self) -> Self {
        self.backup = true;
        self
    }

    /// `when=`: produce an event only for rows where this SQL boolean expression (over the
    /// table's columns, new row on update) is true.
    pub fn when(mut self, expr: impl Into<String>) -> Self {
        self.when = Some(expr.into());
        self
    }

    /// `SKIP`: produce the event but skip the row change itself (the trigger becomes a BEFORE
    /// trigger): the table works as an insert-only front for the queue. TRUNCATE still truncates.
    pub fn skip(mut self) -> Self {
        self.skip = true;
        self
    }

    /// `deny`: refuse every change to the table with an error (a BEFORE trigger), e.g. on a
    /// replica that must only be written by replication.
    pub fn deny(mut self) -> Self {
        self.deny = true;
        self
    }

    /// `ev_type=`, `ev_data=`, `ev_extra1=` .. `ev_extra4=`: compute an event field with an SQL
    /// expression over the row instead (a NULL result leaves the field NULL).
    pub fn set(mut self, field: EventField, expr: impl Into<String>) -> Self {
        self.overrides.retain(|(f, _)| *f != field);
        self.overrides.push((field, expr.into()));
        self
    }

    /// The row trigger's name.
    pub fn trigger_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("pgq_cdc_{}", self.queue))
    }

    /// The TRUNCATE trigger's name.
    pub fn truncate_trigger_name(&self) -> String {
        format!("{}_truncate", self.trigger_name())
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidCapture {
            table: self.table.clone(),
            reason: reason.into(),
        }
    }

    fn column_list(&self, option: &str, cols: &[String]) -> Result<String> {
        if let Some(bad) = cols.iter().find(|c| c.is_empty() || c.contains(',')) {
            return Err(self.invalid(format!(
                "{option}= column {bad:?} cannot be listed (pgq separates columns with commas)"
            )));
        }
        Ok(format!("{option}={}", cols.join(",")))
    }

    /// The triggers this capture creates, with pgq's arguments, checked for combinations pgq
    /// refuses. (What [`attach`](Self::attach) runs.)
    pub fn trigger_defs(&self) -> Result<Vec<TriggerDef>> {
        if !(self.insert || self.update || self.delete || self.truncate) {
            return Err(self.invalid("no operation to capture"));
        }
        if let Some(expr) = self.when.as_deref().filter(|e| e.trim().is_empty()) {
            return Err(self.invalid(format!("when= expression {expr:?} is empty")));
        }
        if let Some((f, _)) = self.overrides.iter().find(|(_, e)| e.trim().is_empty()) {
            return Err(self.invalid(format!("{}= expression is empty", f.arg_name())));
        }
        let queue = self.queue.to_string();
        let mut row_args = vec![queue.clone()];
        if self.skip {
            row_args.push("SKIP".into());
        }
        if self.deny {
            row_args.push("deny".into());
        }
        if !self.ignore.is_empty() {
            row_args.push(self.column_list("ignore", &self.ignore)?);
        }
        if !self.pkey.is_empty() {
            row_args.push(self.column_list("pkey", &self.pkey)?);
        }
        if self.backup {
            row_args.push("backup".into());
        }
        if let Some(expr) = &self.when {
            row_args.push(format!("when={expr}"));
        }
        for (field, expr) in &self.overrides {
            row_args.push(format!("{}={expr}", field.arg_name()));
        }
        let before = self.skip || self.deny;
        let timing = |before: bool| {
            if before {
                TriggerTiming::Before
            } else {
                TriggerTiming::After
            }
        };
        let mut defs = Vec::new();
        if self.insert || self.update || self.delete {
            defs.push(TriggerDef {
                name: self.trigger_name(),
                table: self.table.clone(),
                function: self.function,
                timing: timing(before),
                events: TriggerEvents::Rows {
                    insert: self.insert,
                    update: self.update,
                    delete: self.delete,
                },
                args: row_args,
            });
        }
        if self.truncate {
            // pgq refuses column, backup and expression options on a TRUNCATE trigger, and a
            // statement trigger cannot skip the TRUNCATE itself; deny still applies.
            let mut args = vec![queue];
            if self.deny {
                args.push("deny".into());
            }
            defs.push(TriggerDef {
                name: self.truncate_trigger_name(),
                table: self.table.clone(),
                function: self.function,
                timing: timing(self.deny),
                events: TriggerEvents::Truncate,
                args,
            });
        }
        for d in &defs {
            pgq_core::trigger_ddl(d).map_err(|e| self.invalid(e.to_string()))?;
        }
        Ok(defs)
    }

    fn fail(&self, what: &'static str, e: pgq_core::Error) -> Error {
        match e.kind() {
            pgq_core::ErrorKind::PermissionDenied => Error::PermissionDenied {
                what,
                role: PgqRole::Writer,
                source: Box::new(e),
            },
            _ => Error::from_core(&self.table, what, e),
        }
    }

    /// Create the triggers (replacing this capture's triggers if attached before), all or none.
    ///
    /// Checked first: the queue exists (otherwise every write to the table would fail), the table
    /// exists, and updates or deletes can be keyed (a primary key, or [`pkey`](Self::pkey)).
    /// A capture without TRUNCATE drops a TRUNCATE trigger of the same name left from before.
    pub async fn attach(&self, conn: &mut PgConnection) -> Result<Vec<TriggerDef>> {
        let defs = self.trigger_defs()?;
        let transaction_fail = |e| self.fail(ATTACH, pgq_core::Error::transaction(e));
        let mut tx = conn.begin().await.map_err(transaction_fail)?;
        pgq_core::require_queue(&mut *tx, &self.queue)
            .await
            .map_err(|e| match e.kind() {
                // Named by the queue (the capture's other errors are named by its table).
                pgq_core::ErrorKind::QueueNotFound => {
                    Error::from_core(self.queue.as_str(), ATTACH, e)
                }
                _ => self.fail(ATTACH, e),
            })?;
        let key = pgq_core::table_primary_key(&mut *tx, &self.table)
            .await
            .map_err(|e| self.fail(ATTACH, e))?
            .ok_or_else(|| self.invalid("no such table"))?;
        if (self.update || self.delete) && !self.deny && self.pkey.is_empty() && key.is_empty() {
            return Err(self.invalid(
                "the table has no primary key, so updates and deletes cannot be captured: add \
                 one, name the key columns with .pkey([...]), or capture inserts only",
            ));
        }
        if !self.truncate {
            // A TRUNCATE trigger left from an earlier attach of this capture goes.
            let name = self.truncate_trigger_name();
            pgq_core::drop_pgq_triggers(&mut tx, &self.table, |t| t.name == name)
                .await
                .map_err(|e| self.fail(ATTACH, e))?;
        }
        pgq_core::create_pgq_triggers(&mut tx, &defs)
            .await
            .map_err(|e| self.fail(ATTACH, e))?;
        tx.commit().await.map_err(transaction_fail)?;
        Ok(defs)
    }

    /// Drop this capture's triggers (by name; only pgq triggers are ever dropped). Returns how
    /// many were dropped.
    pub async fn detach(&self, conn: &mut PgConnection) -> Result<usize> {
        let names = [self.trigger_name(), self.truncate_trigger_name()];
        let dropped = pgq_core::drop_pgq_triggers(conn, &self.table, |t| names.contains(&t.name))
            .await
            .map_err(|e| self.fail(DETACH, e))?;
        Ok(dropped.len())
    }
}

/// The pgq triggers on `table` (whatever attached them: this crate, londiste, SQL by hand).
pub async fn captures<'e>(ex: impl PgExecutor<'e>, table: &str) -> Result<Vec<PgqTrigger>> {
    pgq_core::pgq_triggers(ex, table)
        .await
        .map_err(|e| Error::from_core(table, "listing pgq triggers", e))
}

/// Drop every pgq trigger on `table` that writes to `queue` (`None`: all of them), whatever
/// attached it. Returns the dropped triggers. Needs ownership of the table.
pub async fn detach_queue(
    conn: &mut PgConnection,
    table: &str,
    queue: Option<&QueueName>,
) -> Result<Vec<PgqTrigger>> {
    pgq_core::drop_pgq_triggers(conn, table, |t| {
        queue.is_none_or(|q| t.queue() == Some(q.as_str()))
    })
    .await
    .map_err(|e| match e.kind() {
        pgq_core::ErrorKind::PermissionDenied => Error::PermissionDenied {
            what: DETACH,
            role: PgqRole::Writer,
            source: Box::new(e),
        },
        _ => Error::from_core(table, DETACH, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> QueueName {
        QueueName::new("q").unwrap()
    }

    #[test]
    fn options_become_pgq_arguments() {
        let defs = ChangeCapture::jsontriga(q(), "s.t")
            .ignore(["a", "b"])
            .pkey(["id"])
            .backup()
            .when("x > 1")
            .set(EventField::Extra3, "'k'")
            .set(EventField::Type, "'t'")
            .trigger_defs()
            .unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(
            defs[0].args,
            [
                "q",
                "ignore=a,b",
                "pkey=id",
                "backup",
                "when=x > 1",
                "ev_extra3='k'",
                "ev_type='t'"
            ]
        );
        assert_eq!(defs[0].timing, TriggerTiming::After);
        assert_eq!(defs[0].name, "pgq_cdc_q");
        assert_eq!(defs[1].args, ["q"]);
        assert_eq!(defs[1].events, TriggerEvents::Truncate);
        assert_eq!(defs[1].name, "pgq_cdc_q_truncate");
    }

    #[test]
    fn skip_and_deny_are_before_triggers() {
        let defs = ChangeCapture::logutriga(q(), "t")
            .skip()
            .operations(true, false, false, false)
            .trigger_defs()
            .unwrap();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].timing, TriggerTiming::Before);
        assert_eq!(defs[0].args, ["q", "SKIP"]);
        let defs = ChangeCapture::logutriga(q(), "t")
            .deny()
            .trigger_defs()
            .unwrap();
        assert!(defs.iter().all(|d| d.timing == TriggerTiming::Before));
        assert_eq!(defs[1].args, ["q", "deny"]);
    }

    #[test]
    fn refuses_what_pgq_cannot_do() {
        let bad = [
            ChangeCapture::logutriga(q(), "t").operations(false, false, false, false),
            ChangeCapture::logutriga(q(), "t").ignore(["a,b"]),
            ChangeCapture::logutriga(q(), "t").pkey([""]),
            ChangeCapture::logutriga(q(), "t").when(" "),
            ChangeCapture::logutriga(q(), "t").set(EventField::Data, ""),
            ChangeCapture::logutriga(q(), "t").name("n".repeat(60)),
        ];
        for c in bad {
            let e = c.trigger_defs().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidCapture, "{c:?}: {e}");
        }
    }
}
