//! The PostgreSQL error codes (SQLSTATE) this project looks at, named once.
//!
//! Compare them with [`crate::Error::sqlstate`]:
//!
//! ```
//! # fn demo(e: &pgq_core::Error) {
//! if e.sqlstate().as_deref() == Some(pgq_core::sqlstate::QUERY_CANCELED) {
//!     // statement_timeout (or a cancel request) stopped the statement
//! }
//! # }
//! ```
//!
//! The names are PostgreSQL's own (Appendix A, "PostgreSQL Error Codes"), in upper case.

/// Class 08, connection exception: the connection failed or broke.
pub const CLASS_CONNECTION_EXCEPTION: &str = "08";

/// The codes in class 57 that start with `57P` (`admin_shutdown`, `crash_shutdown`,
/// `cannot_connect_now`, `database_dropped`, `idle_session_timeout`): the server ended the session
/// or does not take it now. (`57014`, [`QUERY_CANCELED`], is in the same class but is not one.)
pub const SESSION_ENDED_PREFIX: &str = "57P";

/// `57014` query_canceled: a statement stopped by `statement_timeout` or a cancel request.
pub const QUERY_CANCELED: &str = "57014";

/// `40001` serialization_failure: the transaction may succeed when run again.
pub const SERIALIZATION_FAILURE: &str = "40001";

/// `40P01` deadlock_detected: the transaction may succeed when run again.
pub const DEADLOCK_DETECTED: &str = "40P01";

/// `42501` insufficient_privilege: the role lacks a privilege.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// `3F000` invalid_schema_name: a schema (`pgq`, `pgq_rs`) does not exist.
pub const INVALID_SCHEMA_NAME: &str = "3F000";

/// `42883` undefined_function: a function (of pgq, or of our schema) does not exist.
pub const UNDEFINED_FUNCTION: &str = "42883";

/// `42P01` undefined_table: a table (of pgq, or of our schema) does not exist.
pub const UNDEFINED_TABLE: &str = "42P01";

/// `P0001` raise_exception: a PL/pgSQL `RAISE EXCEPTION`, how pgq reports its errors.
pub const RAISE_EXCEPTION: &str = "P0001";

/// `XX000` internal_error: how pgq's C functions report some of their errors.
pub const INTERNAL_ERROR: &str = "XX000";

/// `34000` invalid_cursor_name: the cursor does not exist (not opened, or its transaction ended).
pub const INVALID_CURSOR_NAME: &str = "34000";

/// `22023` invalid_parameter_value: a setting's value is refused.
pub const INVALID_PARAMETER_VALUE: &str = "22023";

/// Whether an error with SQLSTATE `code` may go away when the work is tried again (after a
/// reconnect): a broken connection, a session the server ended, a serialization failure or a
/// deadlock.
pub fn is_transient(code: &str) -> bool {
    code.starts_with(CLASS_CONNECTION_EXCEPTION)
        || code.starts_with(SESSION_ENDED_PREFIX)
        || code == SERIALIZATION_FAILURE
        || code == DEADLOCK_DETECTED
}

/// Whether SQLSTATE `code` says a schema, function or table does not exist.
pub fn is_undefined_object(code: &str) -> bool {
    code == INVALID_SCHEMA_NAME || code == UNDEFINED_FUNCTION || code == UNDEFINED_TABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        for code in ["08006", "08000", "57P01", "57P05", "40001", "40P01"] {
            assert!(is_transient(code), "{code}");
        }
        for code in [QUERY_CANCELED, "42501", "P0001", "23505", ""] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
