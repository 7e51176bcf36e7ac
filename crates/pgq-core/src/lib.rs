//! placeholder while the core is written
use sqlx::{Acquire, Postgres};

/// Install or upgrade the schema.
pub async fn install<'a, A>(conn: A) -> Result<(), sqlx::Error>
where
    A: Acquire<'a, Database = Postgres>,
{
    let mut conn = conn.acquire().await?;
    let mut m = sqlx::migrate!("../../migrations");
    m.dangerous_set_table_name("pgq_rs._sqlx_migrations");
    m.create_schema("pgq_rs");
    m.run(&mut *conn).await?;
    Ok(())
}
