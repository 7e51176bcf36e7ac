use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::Cluster;

/// A fresh database for one test, on the shared cluster (or on a given cluster), with the project
/// schema (`pgq_core::install`) already installed.
///
/// Databases are cloned from a template database that gets the schema once per cluster, so making
/// one takes tens of milliseconds. When a `TestDb` on the shared cluster (or on an external server)
/// is dropped, its database is dropped in the background.
pub struct TestDb {
    name: String,
    pool: PgPool,
    cluster: Cluster,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl TestDb {
    /// A fresh database with the schema installed, on [`Cluster::shared`].
    ///
    /// # Panics
    ///
    /// With a message saying why, if the cluster, the schema or the database cannot be set up.
    pub async fn new() -> TestDb {
        TestDb::new_on(Cluster::shared()).await
    }

    /// A fresh database with the schema installed, on `cluster`. The `TestDb` keeps the cluster alive.
    ///
    /// # Panics
    ///
    /// With a message saying why, if the schema or the database cannot be set up.
    pub async fn new_on(cluster: &Cluster) -> TestDb {
        TestDb::new_on_with_backend(cluster, crate::test_backend()).await
    }

    /// A fresh database with the schema installed on `backend` (the pgq extension, or this
    /// project's SQL backend), on [`Cluster::shared`]. [`TestDb::new`] uses the backend
    /// `PGQ_TEST_BACKEND` names (default: the extension).
    ///
    /// # Panics
    ///
    /// With a message saying why, if the cluster, the schema or the database cannot be set up.
    pub async fn new_with_backend(backend: crate::Backend) -> TestDb {
        TestDb::new_on_with_backend(Cluster::shared(), backend).await
    }

    /// [`TestDb::new_with_backend`] on `cluster`. The `TestDb` keeps the cluster alive.
    ///
    /// # Panics
    ///
    /// With a message saying why, if the schema or the database cannot be set up.
    pub async fn new_on_with_backend(cluster: &Cluster, backend: crate::Backend) -> TestDb {
        match backend {
            crate::Backend::Sql => {
                let template = sql_template_of(cluster).await;
                TestDb::create(cluster, Some(&template)).await
            }
            _ => {
                let template = template_of(cluster).await;
                TestDb::create(cluster, Some(template)).await
            }
        }
    }

    /// A fresh, empty database on [`Cluster::shared`], with nothing installed (to test installing).
    ///
    /// What installing creates cluster-wide already exists when this returns: `CREATE EXTENSION
    /// pgq` creates the roles `pgq_reader`, `pgq_writer` and `pgq_admin` check-then-create, so
    /// two first installs at once (two tests, or a test and the template) could both try to
    /// create them and one would fail. The template database is installed first, which creates
    /// them once.
    ///
    /// # Panics
    ///
    /// With a message saying why, if the cluster or the database cannot be set up.
    pub async fn new_without_schema() -> TestDb {
        let cluster = Cluster::shared();
        match crate::test_backend() {
            crate::Backend::Sql => drop(sql_template_of(cluster).await),
            _ => drop(template_of(cluster).await),
        }
        TestDb::create(cluster, None).await
    }

    async fn create(cluster: &Cluster, template: Option<&str>) -> TestDb {
        let name = next_name();
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(template.unwrap_or("template0"))
        );
        if let Err(e) = admin_execute(cluster, &sql).await {
            panic!("pgq-testkit: could not create test database {name} on {cluster:?}: {e}");
        }
        let url = cluster.url(&name);
        let pool = match PgPoolOptions::new().max_connections(5).connect(&url).await {
            Ok(pool) => pool,
            Err(e) => panic!("pgq-testkit: could not connect to test database {url}: {e}"),
        };
        TestDb {
            name,
            pool,
            cluster: cluster.handle(),
        }
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database as the superuser.
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// The URL of this database as another role (for least-privilege tests); see [`Cluster::url_as`].
    pub fn url_as(&self, role: &str, password: Option<&str>) -> String {
        self.cluster.url_as(role, password, &self.name)
    }

    /// A small pool (at most 5 connections) to this database, as the superuser.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The cluster this database is on.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Create a login role named `<database>_<suffix>` (roles are cluster-wide: the database's
    /// name keeps tests running in parallel apart), member of `granted` (a comma-separated list
    /// of roles, e.g. `"pgq_reader, pgq_writer"`; empty for none), with `password` if given; its
    /// name. A role of that name left by an earlier run is replaced.
    ///
    /// # Panics
    ///
    /// When the role cannot be created.
    pub async fn create_role(&self, suffix: &str, granted: &str, password: Option<&str>) -> String {
        let name = format!("{}_{suffix}", self.name);
        let role = quote_ident(&name);
        let mut sql = format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN");
        if let Some(p) = password {
            sql.push_str(&format!(" PASSWORD {}", pgq_core::quote_literal(p)));
        }
        if !granted.trim().is_empty() {
            sql.push_str(&format!("; GRANT {granted} TO {role}"));
        }
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
        {
            panic!("pgq-testkit: could not create role {name}: {e}");
        }
        name
    }

    /// A pool connected to this database as `role` (made by [`TestDb::create_role`], without a
    /// password).
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn pool_as(&self, role: &str) -> PgPool {
        let url = self.url_as(role, None);
        match PgPoolOptions::new().max_connections(5).connect(&url).await {
            Ok(pool) => pool,
            Err(e) => panic!("pgq-testkit: could not connect as {role} to {url}: {e}"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A private cluster is removed as a whole; the shared one and external servers would fill up.
        if self.cluster.drops_databases() {
            self.cluster
                .drop_database_later(std::mem::take(&mut self.name));
        }
    }
}

/// The template database of `cluster` (made on first use).
///
/// # Panics
///
/// When the schema cannot be installed in it.
async fn template_of(cluster: &Cluster) -> &str {
    let template = cluster
        .inner()
        .template
        .get_or_init(|| make_template(cluster, crate::Backend::Extension))
        .await;
    match template {
        Ok(template) => template,
        Err(e) => panic!("pgq-testkit: could not install the schema in a template database: {e}"),
    }
}

/// The template database of `cluster` on the SQL backend (made on first use).
///
/// # Panics
///
/// When the schema cannot be installed in it.
async fn sql_template_of(cluster: &Cluster) -> String {
    // The extension's template first, when the server has the extension: CREATE EXTENSION creates
    // the pgq roles check-then-create and must not race with the SQL backend creating them.
    let _ = cluster
        .inner()
        .template
        .get_or_init(|| make_template(cluster, crate::Backend::Extension))
        .await;
    let cell = crate::backend::sql_template_cell(cluster.url("postgres"));
    let template = cell
        .get_or_init(|| make_template(cluster, crate::Backend::Sql))
        .await;
    match template {
        Ok(template) => template.clone(),
        Err(e) => panic!("pgq-testkit: could not install the SQL backend in a template: {e}"),
    }
}

/// Creates the template database of `cluster` and installs the schema in it, on `backend`.
async fn make_template(cluster: &Cluster, backend: crate::Backend) -> Result<String, String> {
    // A private cluster belongs to this process; on an external server, other processes (and runs
    // with other schema versions) may have templates of their own.
    let suffix = match backend {
        crate::Backend::Sql => "_sql",
        _ => "",
    };
    let name = if cluster.is_external() {
        format!("pgq_template{suffix}_{}", run_tag())
    } else {
        format!("pgq_template{suffix}")
    };
    let quoted = quote_ident(&name);
    admin_execute(
        cluster,
        &format!("CREATE DATABASE {quoted} TEMPLATE template0"),
    )
    .await
    .map_err(|e| format!("could not create database {name} on {cluster:?}: {e}"))?;
    let installed = async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&cluster.url(&name))
            .await
            .map_err(|e| format!("could not connect to {}: {e}", cluster.url(&name)))?;
        let options = pgq_core::InstallOptions::new().backend(Some(backend));
        let result = pgq_core::install_with(&pool, &options)
            .await
            .map(drop)
            .map_err(|e| format!("pgq_core::install failed: {e}\n{e:?}"));
        // CREATE DATABASE ... TEMPLATE needs the template to have no connections.
        pool.close().await;
        result
    }
    .await;
    if let Err(e) = installed {
        let _ = admin_execute(cluster, &format!("DROP DATABASE IF EXISTS {quoted}")).await;
        return Err(e);
    }
    admin_execute(
        cluster,
        &format!("ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
    )
    .await
    .map_err(|e| format!("could not mark {name} as a template: {e}"))?;
    tracing::debug!("pgq-testkit: template database {name} ready");
    Ok(name)
}

/// Runs one statement in the `postgres` database as the superuser, on a connection of its own.
async fn admin_execute(cluster: &Cluster, sql: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(&cluster.url("postgres")).await?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result.map(drop)
}

/// `<pid>_<time>`: tells this process's databases from those of other processes on a shared server.
fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{}_{:x}", std::process::id(), nanos % 0x10000)
    })
}

fn next_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!(
        "t_{}_{}",
        run_tag(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
