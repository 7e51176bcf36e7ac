//! Test databases on either pgq backend: the pgq extension, or this project's SQL backend
//! (`pgq_core::Backend::Sql`, what a managed PostgreSQL without the extension gets).
//!
//! `PGQ_TEST_BACKEND=sql` makes [`crate::TestDb::new`] (and `new_on`) give SQL-backend
//! databases, so a whole suite runs against that backend; `extension` (or unset) keeps the
//! extension. [`crate::TestDb::new_with_backend`] chooses explicitly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use pgq_core::Backend;

/// The variable that chooses the backend of [`crate::TestDb::new`]: `sql` or `extension`.
pub const BACKEND_ENV: &str = "PGQ_TEST_BACKEND";

/// The backend [`crate::TestDb::new`] installs: from `PGQ_TEST_BACKEND` (default: the extension).
///
/// # Panics
///
/// When `PGQ_TEST_BACKEND` holds something else than `sql` or `extension`.
pub fn test_backend() -> Backend {
    match std::env::var(BACKEND_ENV) {
        Ok(v) if !v.trim().is_empty() => match v.parse() {
            Ok(b) => b,
            Err(e) => panic!("pgq-testkit: {BACKEND_ENV}: {e}"),
        },
        _ => Backend::Extension,
    }
}

type TemplateCell = Arc<tokio::sync::OnceCell<Result<String, String>>>;

/// The template cell of the SQL backend for one cluster (keyed by its admin URL; the
/// extension's template lives in the cluster itself).
pub(crate) fn sql_template_cell(cluster_key: String) -> TemplateCell {
    static CELLS: OnceLock<Mutex<HashMap<String, TemplateCell>>> = OnceLock::new();
    let mut cells = CELLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cells.entry(cluster_key).or_default().clone()
}
