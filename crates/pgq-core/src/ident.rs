//! Quoting identifiers and literals for the few statements that must be built as text
//! (COPY into an event table, VACUUM, maintenance calls by name, trigger DDL).

/// Quote an SQL identifier: wrap it in double quotes and double any embedded double quote.
///
/// ```
/// assert_eq!(pgq_core::quote_ident("orders"), "\"orders\"");
/// assert_eq!(pgq_core::quote_ident("a\"b"), "\"a\"\"b\"");
/// ```
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        if c == '"' {
            s.push('"');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Quote a possibly schema-qualified name (`schema.table` or `table`), quoting each part.
/// The first `.` separates the schema, as in pgq's own table names (`pgq.event_1_0`).
///
/// ```
/// assert_eq!(pgq_core::quote_fqname("pgq.event_1_0"), "\"pgq\".\"event_1_0\"");
/// ```
pub fn quote_fqname(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, rest)) => format!("{}.{}", quote_ident(schema), quote_ident(rest)),
        None => quote_ident(name),
    }
}

/// Quote an SQL string literal (standard-conforming strings): single quotes doubled.
///
/// ```
/// assert_eq!(pgq_core::quote_literal("it's"), "'it''s'");
/// ```
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
